"""keilib.echonet: the LAN device classes (026B, 027D, 0279) and the node profile's discovery EPCs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keilib import echonet as el
from keilib.echonet import OVERFLOW, UNDERFLOW, Code
from keilib.errors import FrameError

HEATER, BATTERY, SOLAR = el.WATER_HEATER, el.STORAGE_BATTERY, el.SOLAR


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize("eoj, epc, edt, value", [
    # super class
    (HEATER, 0x80, "30", True),
    (BATTERY, 0x80, "31", False),
    (HEATER, 0x84, "04B0", 1200),                       # W
    (HEATER, 0x85, "0012D687", 1234.567),               # 0.001 kWh -> kWh
    # electric water heater 026B
    (HEATER, 0xB0, "41", Code(0x41, "automatic")),
    (HEATER, 0xB2, "41", True),                         # heating
    (HEATER, 0xB2, "42", False),                        # not heating
    (HEATER, 0xC1, "37", 55),                           # degC
    (HEATER, 0xC3, "42", False),
    (HEATER, 0xD1, "2A", 42),
    (HEATER, 0xE1, "00FA", 250),                        # L
    (HEATER, 0xE2, "0172", 370),
    # storage battery 027D
    (BATTERY, 0xD3, "000005DC", 1500),                  # charging
    (BATTERY, 0xD3, "FFFFFC18", -1000),                 # discharging
    (BATTERY, 0xE2, "00001324", 4900),                  # Wh
    (BATTERY, 0xE4, "32", 50),                          # %
    (BATTERY, 0xD6, "00200D74", 2100.596),
    (BATTERY, 0xD8, "0023CACE", 2345.678),
    (BATTERY, 0xDA, "46", Code(0x46, "automatic")),
    (BATTERY, 0xCF, "42", Code(0x42, "charging")),
    (BATTERY, 0xD0, "00002648", 9800),
    # home solar power generation 0279
    (SOLAR, 0xE0, "0F3C", 3900),                        # W
    (SOLAR, 0xE1, "0085BFF8", 8765.432),
    (SOLAR, 0xE3, "0052E2E4", 5432.036),
])
def test_device_properties_decode_to_their_units_and_encode_back(eoj, epc, edt, value):
    assert el.decode_device_property(eoj, epc, hx(edt)) == value
    assert el.decode_property(eoj, epc, hx(edt)) == value        # dispatch by class
    assert el.encode_device_property(eoj, epc, value) == hx(edt)


@pytest.mark.parametrize("eoj, epc, edt, sentinel", [
    (HEATER, 0xE1, "FFFF", OVERFLOW), (HEATER, 0xE1, "FFFE", UNDERFLOW),
    (HEATER, 0xC1, "FF", OVERFLOW), (HEATER, 0xC1, "FE", UNDERFLOW),
    (HEATER, 0x85, "FFFFFFFF", OVERFLOW), (HEATER, 0x85, "FFFFFFFE", UNDERFLOW),
    (BATTERY, 0xD3, "7FFFFFFF", OVERFLOW), (BATTERY, 0xD3, "80000000", UNDERFLOW),
    (BATTERY, 0xE4, "FE", UNDERFLOW), (SOLAR, 0xE0, "FFFE", UNDERFLOW),
])
def test_overflow_and_underflow_codes_are_not_numbers(eoj, epc, edt, sentinel):
    value = el.decode_device_property(eoj, epc, hx(edt))
    assert value == sentinel and not el.is_value(value)
    assert el.record_value(value) is None
    assert el.encode_device_property(eoj, epc, sentinel) == hx(edt)


@pytest.mark.parametrize("eoj, epc, edt, reason", [
    (BATTERY, 0xE4, "65", "outside"),            # 101 %
    (HEATER, 0xC1, "65", "outside"),             # 101 degC
    (SOLAR, 0xE0, "FFFD00", "EDT is 3 bytes"),
    (HEATER, 0xE1, "00", "EDT is 1 bytes"),
    (SOLAR, 0xE1, "3B9ACA00", "outside"),        # one past 999,999.999 kWh
    (BATTERY, 0xD3, "C4653600", "outside"),      # one below -999,999,999 W
    (HEATER, 0xB2, "43", "unknown code"),
    (BATTERY, 0xDA, "47", "unknown code"),
    (HEATER, 0x80, "32", "unknown code"),
])
def test_impossible_values_are_frame_errors(eoj, epc, edt, reason):
    with pytest.raises(FrameError, match=reason):
        el.decode_device_property(eoj, epc, hx(edt))


def test_record_values_and_unknown_properties():
    assert el.record_value(True) == 1 and el.record_value(False) == 0
    assert el.record_value(Code(0x43, "discharging")) == 0x43
    assert el.record_value(1234.567) == 1234.567
    assert el.record_value(b"\x01") is None and el.record_value((0x80,)) is None
    assert el.decode_device_property(SOLAR, 0xB0, hx("0102")) == hx("0102")     # unknown EPC: bytes
    assert el.decode_device_property(BATTERY, 0x9F, hx("0380D3E4")) == (0x80, 0xD3, 0xE4)
    assert el.device_property_spec(SOLAR, 0xE0).unit == "W"
    assert el.device_property_spec(BATTERY, 0xE4).unit == "%"
    assert el.device_property_spec(HEATER, 0x85).unit == "kWh"
    assert el.device_property_spec(HEATER, 0xE0) is None


def test_default_epcs_list_every_known_property_of_each_class():
    assert el.DEFAULT_EPCS[0x026B] == (0x80, 0x84, 0x85, 0xB0, 0xB2, 0xC1, 0xC3, 0xD1, 0xE1, 0xE2)
    assert el.DEFAULT_EPCS[0x027D] == (0x80, 0x84, 0x85, 0xCF, 0xD0, 0xD3, 0xD6, 0xD8, 0xDA, 0xE2, 0xE4)
    assert el.DEFAULT_EPCS[0x0279] == (0x80, 0x84, 0x85, 0xE0, 0xE1, 0xE3)


def test_encoder_refuses_what_the_wire_cannot_carry():
    with pytest.raises(ValueError):
        el.encode_device_property(BATTERY, 0xE4, 101)
    with pytest.raises(ValueError):
        el.encode_device_property(HEATER, 0x85, 1.0001)          # finer than 0.001 kWh
    with pytest.raises(ValueError):
        el.encode_device_property(BATTERY, 0xDA, 0x47)
    with pytest.raises(ValueError):
        el.encode_device_property(SOLAR, 0xB0, 5)


@given(st.integers(min_value=-0x3B9AC9FF, max_value=0x3B9AC9FF))
def test_battery_power_round_trips_over_its_whole_range(watts):
    assert el.decode_device_property(BATTERY, 0xD3, el.encode_device_property(BATTERY, 0xD3, watts)) == watts


@given(st.integers(min_value=0, max_value=0x3B9AC9FF))
def test_cumulative_energy_in_kwh_is_exact_to_the_watt_hour(raw):
    kwh = el.decode_device_property(SOLAR, 0xE1, raw.to_bytes(4, "big"))
    assert el.encode_device_property(SOLAR, 0xE1, kwh) == raw.to_bytes(4, "big")


def test_node_profile_discovery_properties():
    node = el.NODE_PROFILE
    assert el.decode_property(node, 0x82, hx("010D0100")) == el.NodeVersion(1, 13)
    ident = hx("FE FFFFFF") + bytes(range(13))
    assert el.decode_property(node, 0x83, ident) == ident
    assert el.decode_property(node, 0x8C, b"KEI-SIM\x00\x00\x00\x00\x00") == "KEI-SIM"
    assert el.decode_property(node, 0xD7, hx("02 026B 027D")) == (0x026B, 0x027D)
    assert el.decode_property(node, 0xD6, hx("02 026B01 027901")) == (HEATER, SOLAR)
    for epc, value in [(0x80, True), (0x82, el.NodeVersion(1, 13)), (0x8A, 0xFFFFFF), (0x8C, "KEI-SIM"),
                       (0x9F, (0x80, 0xD6)), (0xD3, 3), (0xD4, 4), (0xD5, (HEATER,)),
                       (0xD6, (HEATER, BATTERY, SOLAR)), (0xD7, (0x026B, 0x027D, 0x0279))]:
        assert el.decode_node_property(epc, el.encode_node_property(epc, value)) == value
    with pytest.raises(FrameError):
        el.decode_property(node, 0xD7, hx("02 026B"))             # count 2, one class
    with pytest.raises(FrameError):
        el.decode_property(node, 0x83, hx("FE0000"))
