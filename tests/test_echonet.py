"""keilib.echonet: frames, worked examples and captures of shared/docs/echonet.md, properties, sentinels."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keilib import echonet as el
from keilib.echonet import (CONTROLLER, ESV, METER, NO_DATA, NODE_PROFILE, OVERFLOW, UNDERFLOW, Frame,
                            NoValue, Property)
from keilib.errors import FrameError, ProtocolError


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


# ---------------------------------------------------------------- constants


def test_esv_codes_match_the_spec_table():
    expected = {"SETI": 0x60, "SETC": 0x61, "GET": 0x62, "INF_REQ": 0x63, "SETGET": 0x6E,
                "SET_RES": 0x71, "GET_RES": 0x72, "INF": 0x73, "INFC": 0x74, "INFC_RES": 0x7A,
                "SETGET_RES": 0x7E, "SETI_SNA": 0x50, "SETC_SNA": 0x51, "GET_SNA": 0x52,
                "INF_SNA": 0x53, "SETGET_SNA": 0x5E}
    assert {esv.name: esv.value for esv in ESV} == expected


def test_objects_and_epcs():
    assert (CONTROLLER, METER, NODE_PROFILE) == (0x05FF01, 0x028801, 0x0EF001)
    assert el.eoj_class(METER) == 0x0288
    for code in [0x80, 0x81, 0x82, 0x88, 0x8A, 0x8D, 0x97, 0x98, 0x9D, 0x9E, 0x9F, 0xC0, 0xD0,
                 0xD3, 0xD5, 0xD6, 0xD7] + list(range(0xE0, 0xF0)):
        assert el.EPC(code) == code


# ---------------------------------------------------------------- worked examples (section 5)


WORKED = [
    # (a) Get E7 + E8
    ("10 81 | 00 01 | 05 FF 01 | 02 88 01 | 62 | 02 | E7 00 | E8 00",
     Frame(1, CONTROLLER, METER, ESV.GET, (Property(0xE7), Property(0xE8)))),
    # (b) Get_Res E7 = 1852 W, then E7 + E8 with T "no data"
    ("10 81 | 00 01 | 02 88 01 | 05 FF 01 | 72 | 01 | E7 04 | 00 00 07 3C",
     Frame(1, METER, CONTROLLER, ESV.GET_RES, (Property(0xE7, el.encode_power(1852)),))),
    ("10 81 00 01 02 88 01 05 FF 01 72 02 E7 04 00 00 07 3C E8 04 00 B9 7F FE",
     Frame(1, METER, CONTROLLER, ESV.GET_RES, (Property(0xE7, el.encode_power(1852)),
                                               Property(0xE8, el.encode_currents(18.5, NO_DATA))))),
    # (c) Get_Res EA
    ("10 81 | 00 02 | 02 88 01 | 05 FF 01 | 72 | 01 | EA 0B | 07 E2 07 1D 17 00 00 | 00 00 33 54",
     Frame(2, METER, CONTROLLER, ESV.GET_RES,
           (Property(0xEA, el.encode_fixed_time(datetime.datetime(2018, 7, 29, 23), 0x3354)),))),
    # (d) SetC E5 = 0, Set_Res, Get E2
    ("10 81 00 03 05 FF 01 02 88 01 61 01 E5 01 00", el.set_request(3, [(0xE5, b"\x00")])),
    ("10 81 00 03 02 88 01 05 FF 01 71 01 E5 00", Frame(3, METER, CONTROLLER, ESV.SET_RES, (Property(0xE5),))),
    ("10 81 00 04 05 FF 01 02 88 01 62 01 E2 00", el.get_request(4, [0xE2])),
    # (e) INF EA + EB
    ("10 81 00 01 02 88 01 05 FF 01 73 02 EA 0B 07 E2 07 1D 17 00 00 00 00 33 54"
     " EB 0B 07 E2 07 1D 17 00 00 00 00 00 15",
     Frame(1, METER, CONTROLLER, ESV.INF,
           (Property(0xEA, el.encode_fixed_time(datetime.datetime(2018, 7, 29, 23), 13140)),
            Property(0xEB, el.encode_fixed_time(datetime.datetime(2018, 7, 29, 23), 21))))),
    # (f) Get_SNA
    ("10 81 00 06 05 FF 01 02 88 01 62 01 83 00", el.get_request(6, [0x83])),
    ("10 81 00 06 02 88 01 05 FF 01 52 01 83 00", Frame(6, METER, CONTROLLER, ESV.GET_SNA, (Property(0x83),))),
    ("10 81 00 07 02 88 01 05 FF 01 52 02 E7 04 00 00 07 3C 83 00",
     Frame(7, METER, CONTROLLER, ESV.GET_SNA, (Property(0xE7, hx("0000073C")), Property(0x83)))),
    # (g) instance list
    ("10 81 00 00 0E F0 01 0E F0 01 73 01 D5 04 01 02 88 01",
     Frame(0, NODE_PROFILE, NODE_PROFILE, ESV.INF, (Property(0xD5, el.encode_instance_list([METER])),))),
    ("10 81 00 08 05 FF 01 0E F0 01 62 01 D6 00", el.get_request(8, [0xD6], deoj=NODE_PROFILE)),
    ("10 81 00 08 0E F0 01 05 FF 01 72 01 D6 04 01 02 88 01",
     Frame(8, NODE_PROFILE, CONTROLLER, ESV.GET_RES, (Property(0xD6, hx("01028801")),))),
    ("10 81 00 0B 05 FF 01 0E F0 01 63 01 D5 00", el.inf_request(0x0B, [0xD5])),
    # (h) SetC ED, Get_Res EC
    ("10 81 00 09 05 FF 01 02 88 01 61 01 ED 07 07 E2 07 1D 17 00 03",
     el.set_request(9, [(0xED, el.encode_history_request(datetime.datetime(2018, 7, 29, 23), 3))])),
    ("10 81 00 0A 02 88 01 05 FF 01 72 01 EC 1F 07 E2 07 1D 17 00 03"
     " 00 00 33 54 00 00 00 15 00 00 33 53 00 00 00 15 00 00 33 52 00 00 00 15",
     Frame(10, METER, CONTROLLER, ESV.GET_RES,
           (Property(0xEC, el.encode_energy_history(datetime.datetime(2018, 7, 29, 23),
                                                    [(13140, 21), (13139, 21), (13138, 21)])),))),
]


@pytest.mark.parametrize("wire,frame", WORKED)
def test_worked_examples_byte_for_byte(wire, frame):
    data = hx(wire)
    assert frame.encode() == data
    assert Frame.decode(data) == frame


def test_worked_example_values():
    b = Frame.decode(hx("10 81 00 01 02 88 01 05 FF 01 72 02 E7 04 00 00 07 3C E8 04 00 B9 7F FE"))
    assert b.value(0xE7) == 1852
    assert b.value(0xE8) == el.Currents(18.5, NO_DATA)
    assert el.decode_power(hx("FFFFFA2F")) == -1489
    c = Frame.decode(hx("1081000202880105FF017201EA0B07E2071D17000000003354"))
    stamp, raw = c.value(0xEA)
    assert stamp == datetime.datetime(2018, 7, 29, 23, 0, 0) and raw == 13140
    assert el.energy_kwh(raw, 1, 0x01) == 1314.0
    ec = Frame.decode(WORKED[-1][1].encode()).value(0xEC)
    assert ec.points() == [(datetime.datetime(2018, 7, 29, 23), 13140, 21),
                           (datetime.datetime(2018, 7, 29, 22, 30), 13139, 21),
                           (datetime.datetime(2018, 7, 29, 22), 13138, 21)]


def test_worked_example_e2_history():
    values = [0x3326 + slot for slot in range(47)] + [NO_DATA]
    edt = el.encode_daily_history(0, values)
    frame = Frame(4, METER, CONTROLLER, ESV.GET_RES, (Property(0xE2, edt),)).encode()
    assert len(frame) == 208
    assert frame[12:16] == hx("E2 C2 00 00")
    assert frame[16 + 4 * 46:20 + 4 * 46] == hx("00003354")
    assert frame[204:208] == hx("FFFFFFFE")
    history = Frame.decode(frame).value(0xE2)
    assert history.day == 0 and history.values[46] == 0x3354 and history.values[47] is NO_DATA
    times = history.slot_times(datetime.date(2018, 7, 29))
    assert times[0] == datetime.datetime(2018, 7, 29) and times[47] == datetime.datetime(2018, 7, 29, 23, 30)


def test_infc_response_example():
    infc = Frame.decode(hx("10 81 00 05 02 88 01 05 FF 01 74 01 EA 0B 07 E2 07 1D 17 00 00 00 00 33 54"))
    assert infc.is_notification
    assert el.infc_response(infc).encode() == hx("10 81 00 05 05 FF 01 02 88 01 7A 01 EA 00")
    two = Frame(0xA001, METER, CONTROLLER, ESV.INFC, (Property(0xEA, b"\x01"), Property(0xEB, b"\x02\x03")))
    assert el.infc_response(two) == Frame(0xA001, CONTROLLER, METER, ESV.INFC_RES,
                                          (Property(0xEA), Property(0xEB)))
    with pytest.raises(ValueError):
        el.infc_response(Frame.decode(hx("10 81 00 06 02 88 01 05 FF 01 52 01 83 00")))


# ---------------------------------------------------------------- real captures (section 6)


def test_real_captures():
    assert Frame.decode(hx("1081000102880105FF017201E704000003A0")).value(0xE7) == 928
    frame = Frame.decode(hx("1081525302880105FF017201E704000000E4"))
    assert frame.tid == 0x5253 and frame.value(0xE7) == 228
    inf = Frame.decode(hx("108100000EF0010EF0017301D50401028801"))
    assert inf.value(0xD5) == (METER,)
    two = Frame.decode(hx("1081000102880105FF017302EA0B07E70C13001E000000458EEB0B07E70C13001E0000000015"))
    assert two.value(0xEA) == (datetime.datetime(2023, 12, 19, 0, 30), 17806)
    assert two.value(0xEB) == (datetime.datetime(2023, 12, 19, 0, 30), 21)
    a001 = Frame.decode(hx("1081A00102880105FF017302EA0B07E606150F1E0000016CA7EB0B07E606150F1E0000000005"))
    assert a001.tid == 0xA001 and a001.value(0xEA) == (datetime.datetime(2022, 6, 21, 15, 30), 93351)
    assert a001.value(0xEB).raw == 5
    sna = Frame.decode(hx("1081000102880105FF0152018300"))
    assert sna.esv == ESV.GET_SNA and sna.is_failure and sna.properties == (Property(0x83),)
    assert el.decode_meter_property(0xE8, hx("001E0032")) == el.Currents(3.0, 5.0)
    assert el.decode_meter_property(0xD7, hx("06")) == 6
    assert el.decode_meter_property(0xD3, hx("00000001")) == 1
    assert el.decode_meter_property(0x82, hx("00004600")) == el.StandardVersion("F", 0)
    assert el.decode_meter_property(0x8D, hx("463234473336363530350000")) == "F24G366505"
    assert el.decode_meter_property(0x81, hx("61")) == 0x61
    assert el.decode_meter_property(0x97, hx("0E1A")) == datetime.time(14, 26)
    assert el.decode_meter_property(0x98, hx("07EA0514")) == datetime.date(2026, 5, 20)
    assert el.decode_meter_property(0x80, hx("30")) is True
    assert el.decode_meter_property(0x88, hx("42")) is False
    assert el.decode_meter_property(0x8A, hx("000016")) == 0x16
    real_9f = hx("19 41 41 41 60 40 40 00 62 43 00 41 40 40 43 02 02")
    epcs = el.decode_meter_property(0x9F, real_9f)
    assert epcs == (0x80, 0x81, 0x82, 0x88, 0x8A, 0x8D, 0x97, 0x98, 0x9D, 0x9E, 0x9F, 0xD3, 0xD7,
                    0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE7, 0xE8, 0xEA, 0xEB, 0xEC, 0xED)
    assert el.encode_property_map(epcs) == real_9f
    assert el.decode_meter_property(0x9D, hx("03808188")) == (0x80, 0x81, 0x88)
    assert el.encode_property_map([0xED, 0x81, 0xE5]) == hx("0381E5ED")


def test_e2_capture_header():
    edt = hx("000B") + hx("0000F766") * 48
    history = el.decode_meter_property(0xE2, edt)
    assert history.day == 11 and history.values == (0xF766,) * 48


# ---------------------------------------------------------------- properties and sentinels


def test_power_sentinels_and_limits():
    assert el.decode_power(hx("7FFFFFFE")) is NO_DATA
    assert el.decode_power(hx("7FFFFFFF")) is OVERFLOW
    assert el.decode_power(hx("80000000")) is UNDERFLOW
    assert el.decode_power(hx("7FFFFFFD")) == 2_147_483_645
    assert el.decode_power(hx("80000001")) == -2_147_483_647
    for sentinel, wire in [(NO_DATA, "7FFFFFFE"), (OVERFLOW, "7FFFFFFF"), (UNDERFLOW, "80000000")]:
        assert el.encode_power(sentinel) == hx(wire)
    for bad in (2_147_483_646, -2_147_483_648):
        with pytest.raises(ValueError):
            el.encode_power(bad)


def test_current_sentinels():
    assert el.decode_currents(hx("7FFE7FFE")) == el.Currents(NO_DATA, NO_DATA)
    assert el.decode_currents(hx("7FFF8000")) == el.Currents(OVERFLOW, UNDERFLOW)
    assert el.decode_currents(hx("FFBAFFB0")) == el.Currents(-7.0, -8.0)
    assert el.decode_currents(hx("7FFD8001")) == el.Currents(3276.5, -3276.7)
    assert el.encode_currents(OVERFLOW, UNDERFLOW) == hx("7FFF8000")
    assert el.encode_currents(-7.0, -8.0) == hx("FFBAFFB0")
    assert el.encode_currents(18.5) == hx("00B97FFE")
    with pytest.raises(ValueError):
        el.encode_currents(3276.6, 0)


@pytest.mark.parametrize("epc", [0xE0, 0xE3])
def test_energy_no_data(epc):
    assert el.decode_meter_property(epc, hx("FFFFFFFE")) is NO_DATA
    assert el.decode_meter_property(epc, hx("05F5E0FF")) == 99_999_999
    assert el.encode_meter_property(epc, NO_DATA) == hx("FFFFFFFE")
    with pytest.raises(ValueError):
        el.encode_energy(100_000_000)
    with pytest.raises(ValueError):
        el.encode_energy(OVERFLOW)


def test_no_data_in_every_cumulative_slot():
    stamp = datetime.datetime(2024, 1, 2, 3, 30)
    for epc in (0xEA, 0xEB):
        assert el.decode_meter_property(epc, el.encode_fixed_time(stamp, NO_DATA)) == (stamp, NO_DATA)
    for epc in (0xE2, 0xE4):
        assert el.decode_meter_property(epc, el.encode_daily_history(5, [NO_DATA] * 48)).values == (NO_DATA,) * 48
    hist = el.decode_meter_property(0xEC, el.encode_energy_history(stamp, [(NO_DATA, 7), (8, NO_DATA)]))
    assert hist.pairs == ((NO_DATA, 7), (8, NO_DATA))
    d0 = el.decode_meter_property(0xD0, hx("07E80102031E00") + hx("FFFFFFFE") + hx("00000009"))
    assert d0 == el.FixedTimeEnergyPair(stamp, NO_DATA, 9)
    # The spec's EC default value: no timestamp, one pair of "no data".
    default = el.decode_meter_property(0xEC, hx("FFFFFFFFFFFF01 FFFFFFFE FFFFFFFE"))
    assert default == el.EnergyHistory(None, 30, ((NO_DATA, NO_DATA),)) and default.points() == []
    assert el.decode_meter_property(0xED, hx("FFFFFFFFFFFF01")) == el.HistoryRequest(None, 1)


# ---------------------------------------------------------------- history days and history 2 limits


def test_history_day_defaults_decode_to_no_data():
    """E5 0xFF and the E2/E4 day 0x00FF are "default value" (never set), not 255 days (section 2.2)."""
    assert el.decode_meter_property(0xE5, hx("FF")) is NO_DATA
    assert el.decode_meter_property(0xE5, hx("63")) == 99 and el.decode_meter_property(0xE5, hx("00")) == 0
    assert el.encode_meter_property(0xE5, NO_DATA) == hx("FF")
    for epc in (0xE2, 0xE4):
        history = el.decode_meter_property(epc, hx("00FF") + hx("FFFFFFFE") * 48)   # the simulator's answer
        assert history.day is NO_DATA and not el.is_value(history.day)
        assert history.values == (NO_DATA,) * 48
        assert history.slot_times(datetime.date(2018, 7, 29)) == []
    # The wire code 0xFF is still accepted by the encoders, and means the same.
    assert el.encode_daily_history(0xFF, [NO_DATA] * 48) == el.encode_daily_history(NO_DATA, [NO_DATA] * 48)
    assert el.encode_meter_property(0xE5, 0xFF) == hx("FF")
    assert el.encode_meter_property(0xE2, el.DailyHistory(NO_DATA, (NO_DATA,) * 48))[:2] == hx("00FF")


@pytest.mark.parametrize("value", [100, 0xFE, -1, 256, OVERFLOW, UNDERFLOW])
def test_history_day_encoders_refuse_other_days(value):
    with pytest.raises(ValueError):
        el.encode_meter_property(0xE5, value)
    with pytest.raises(ValueError):
        el.encode_daily_history(value, [NO_DATA] * 48)


@settings(max_examples=256, deadline=None)
@given(st.integers(0, 255))
def test_every_e5_byte(code):
    if code <= 99:
        assert el.decode_meter_property(0xE5, bytes([code])) == code
    elif code == 0xFF:
        assert el.decode_meter_property(0xE5, bytes([code])) is NO_DATA
    else:
        with pytest.raises(FrameError, match="E5: day %d outside 0..99" % code):
            el.decode_meter_property(0xE5, bytes([code]))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0xE2, 0xE4]), st.one_of(st.integers(0, 0x1FF), st.integers(0, 0xFFFF)),
       st.dates(min_value=datetime.date(2000, 1, 1), max_value=datetime.date(2099, 12, 31)))
def test_every_e2_day_word_and_its_slot_times(epc, word, today):
    edt = word.to_bytes(2, "big") + hx("00000001") * 48
    if word > 99 and word != 0xFF:
        with pytest.raises(FrameError, match="%02X: day" % epc):
            el.decode_meter_property(epc, edt)
        return
    history = el.decode_meter_property(epc, edt)
    times = history.slot_times(today)
    if word == 0xFF:
        assert history.day is NO_DATA and times == []
        return
    assert history.day == word and len(times) == 48
    first = datetime.datetime.combine(today, datetime.time()) - datetime.timedelta(days=word)
    assert times[0] == first and times[-1] == first + datetime.timedelta(hours=23, minutes=30)
    assert times[0] >= datetime.datetime.combine(today, datetime.time()) - datetime.timedelta(days=99)


def _ec(stamp: str, count: int, pairs: int) -> bytes:
    return hx(stamp) + bytes([count]) + hx("0000000100000002") * pairs


def test_ec_ee_pair_limits():
    """EC holds 1..12 pairs (7 + 8 n <= 103 bytes), EE 1..10 (<= 87 bytes), section 2.2."""
    assert len(el.decode_meter_property(0xEC, _ec("07E2071D1700", 12, 12)).pairs) == 12
    assert len(el.decode_meter_property(0xEE, _ec("07E2071D1701", 10, 10)).pairs) == 10
    with pytest.raises(FrameError, match="EC: EDT holds 13 pairs, at most 12"):
        el.decode_meter_property(0xEC, _ec("07E2071D1700", 13, 13))
    with pytest.raises(FrameError, match="EE: EDT holds 11 pairs, at most 10"):
        el.decode_meter_property(0xEE, _ec("07E2071D1701", 11, 11))
    with pytest.raises(FrameError, match="EC: count 0 outside 1..12"):
        el.decode_meter_property(0xEC, _ec("07E2071D1700", 0, 1))
    with pytest.raises(FrameError, match="header says 2 pairs but EDT holds 1"):
        el.decode_meter_property(0xEC, _ec("07E2071D1700", 2, 1))
    with pytest.raises(ValueError):
        el.encode_energy_history(None, [(1, 2)] * 13)
    with pytest.raises(ValueError):
        el.encode_energy_history(None, [(1, 2)] * 11, 0xEE)
    with pytest.raises(ValueError):
        el.encode_energy_history(None, [])


def test_ec_ed_minute_must_be_00_or_30():
    """ED: mm = 0x00 or 0x1E; EC's header is ED's.  EE/EF step by the minute."""
    for minute in (0x00, 0x1E):
        stamp = "07E2071D17%02X" % minute
        assert el.decode_meter_property(0xED, hx(stamp + "03")).timestamp.minute == minute
        assert el.decode_meter_property(0xEC, _ec(stamp, 1, 1)).timestamp.minute == minute
    for minute in (0x01, 0x0F, 0x1D, 0x1F, 0x3B):
        stamp = "07E2071D17%02X" % minute
        with pytest.raises(FrameError, match="ED: minute %d .* expected 00 or 30" % minute):
            el.decode_meter_property(0xED, hx(stamp + "03"))
        with pytest.raises(FrameError, match="EC: minute %d" % minute):
            el.decode_meter_property(0xEC, _ec(stamp, 1, 1))
        assert el.decode_meter_property(0xEF, hx(stamp + "03")).timestamp.minute == minute
        assert el.decode_meter_property(0xEE, _ec(stamp, 1, 1)).timestamp.minute == minute
    quarter = datetime.datetime(2018, 7, 29, 23, 15)
    with pytest.raises(ValueError):
        el.encode_history_request(quarter, 3)
    with pytest.raises(ValueError):
        el.encode_energy_history(quarter, [(1, 2)])
    assert el.encode_history_request(quarter, 3, 0xEF) == hx("07E2071D170F03")


def test_ed_ef_count_limits():
    """ED: n = 0x01..0x0C; EF: 1..10.  The default value FF..FF 01 decodes."""
    assert el.decode_meter_property(0xED, hx("07E2071D17000C")).count == 12
    assert el.decode_meter_property(0xEF, hx("07E2071D17000A")).count == 10
    assert el.decode_meter_property(0xEF, hx("FFFFFFFFFFFF01")) == el.HistoryRequest(None, 1)
    for epc, edt, limit in [(0xED, "07E2071D170000", 12), (0xED, "07E2071D17000D", 12),
                            (0xED, "07E2071D1700FF", 12), (0xED, "FFFFFFFFFFFF00", 12),
                            (0xEF, "07E2071D17000B", 10), (0xEF, "07E2071D170100", 10)]:
        with pytest.raises(FrameError, match="%02X: count %d outside 1..%d" % (epc, hx(edt)[6], limit)):
            el.decode_meter_property(epc, hx(edt))
    stamp = datetime.datetime(2018, 7, 29, 23)
    for count in (0, 13, 255):
        with pytest.raises(ValueError):
            el.encode_history_request(stamp, count)
    with pytest.raises(ValueError):
        el.encode_history_request(stamp, 11, 0xEF)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0xED, 0xEF]), st.integers(0, 59), st.integers(0, 255))
def test_history_request_accepted_exactly_within_the_doc_limits(epc, minute, count):
    edt = hx("07E2071D17") + bytes([minute, count])
    limit = 12 if epc == 0xED else 10
    ok = 1 <= count <= limit and (epc == 0xEF or minute in (0, 30))
    try:
        request = el.decode_meter_property(epc, edt)
    except FrameError as exc:
        assert not ok and ("minute" in str(exc) or "count" in str(exc))
    else:
        assert ok and request == (datetime.datetime(2018, 7, 29, 23, minute), count)


def test_no_value_type():
    assert not el.is_value(NO_DATA) and el.is_value(0) and el.is_value(-1.5)
    assert NO_DATA != OVERFLOW and NO_DATA == NoValue("no data") and repr(UNDERFLOW) == "NoValue('underflow')"
    with pytest.raises(TypeError):
        NO_DATA > 0   # noqa: B015 - must not order against numbers


@pytest.mark.parametrize("code,kwh", [(0x00, "1"), (0x01, "0.1"), (0x02, "0.01"), (0x03, "0.001"),
                                      (0x04, "0.0001"), (0x0A, "10"), (0x0B, "100"), (0x0C, "1000"),
                                      (0x0D, "10000")])
def test_unit_table(code, kwh):
    assert el.decode_meter_property(0xE1, bytes([code])) == el.EnergyUnit(code, Decimal(kwh))
    assert el.encode_meter_property(0xE1, code) == bytes([code])
    assert el.energy_kwh(12345, 3, code) == float(Decimal(12345) * 3 * Decimal(kwh))


def test_energy_kwh_is_exact_and_strict():
    assert el.energy_kwh(13140, 1, 0x01) == 1314.0
    assert el.energy_kwh(3, 1, 0x01) == 0.3          # 3 * 0.1 in binary floats is 0.30000000000000004
    assert el.energy_kwh(123456789, 1, 0x04) == 12345.6789
    for bad in (0x05, 0x09, 0x0E, 0xFF):
        with pytest.raises(FrameError):
            el.energy_kwh(1, 1, bad)
        with pytest.raises(FrameError):
            el.decode_meter_property(0xE1, bytes([bad]))
    with pytest.raises(ValueError):
        el.energy_kwh(NO_DATA, 1, 1)


def test_energy_delta_wraps_at_d7():
    assert el.energy_delta(999_990, 15, 6) == 25
    assert el.energy_kwh(el.energy_delta(999_990, 15, 6), 1, 0x01) == 2.5
    assert el.energy_delta(100, 130, 6) == 30
    assert el.energy_delta(5, 5, 8) == 0
    with pytest.raises(ValueError):
        el.energy_delta(1, 2, 9)


def test_node_profile_properties_are_decoded_by_object():
    assert el.decode_property(NODE_PROFILE, 0xD3, hx("000001")) == 1
    assert el.decode_property(METER, 0xD3, hx("0000000A")) == 10
    assert el.decode_property(NODE_PROFILE, 0xD6, hx("02028801028802")) == (0x028801, 0x028802)
    assert el.decode_property(0x013001, 0x80, hx("30")) == hx("30")   # unknown class: raw bytes
    assert el.decode_meter_property(0xC0, hx("00") * 16) == hx("00") * 16


def test_property_map_formats():
    fifteen = list(range(0x80, 0x8F))
    assert el.encode_property_map(fifteen) == bytes([15] + fifteen)
    sixteen = list(range(0x80, 0x90))
    edt = el.encode_property_map(sixteen)
    assert len(edt) == 17 and edt[0] == 16 and all(byte == 0x01 for byte in edt[1:])
    assert el.decode_property_map(edt) == tuple(sixteen)
    assert el.decode_property_map(hx("00")) == ()
    with pytest.raises(FrameError):
        el.decode_property_map(hx("0280"))                   # count 2, one code
    with pytest.raises(FrameError):
        el.decode_property_map(hx("10") + hx("01") * 15)     # bitmap too short
    with pytest.raises(FrameError):
        el.decode_property_map(hx("11") + hx("01") * 16)     # count 17, 16 bits set


WRONG_LENGTHS = [(0x80, 2), (0x82, 3), (0x88, 0), (0x8A, 2), (0x8D, 11), (0x97, 1), (0x98, 3),
                 (0xD3, 3), (0xD7, 2), (0xE0, 3), (0xE1, 0), (0xE2, 193), (0xE3, 5), (0xE4, 195),
                 (0xE5, 2), (0xE7, 3), (0xE8, 2), (0xEA, 10), (0xEB, 12), (0xEC, 14), (0xEC, 16),
                 (0xED, 6), (0xD0, 14), (0x81, 2), (0x9F, 0)]


@pytest.mark.parametrize("epc,length", WRONG_LENGTHS)
def test_wrong_edt_length_raises_frame_error(epc, length):
    with pytest.raises(FrameError, match="%02X" % epc):
        el.decode_meter_property(epc, bytes(length))


@pytest.mark.parametrize("epc,edt", [
    (0x80, "32"), (0x88, "40"), (0xD7, "00"), (0xD7, "09"), (0xE5, "64"), (0xD3, "000F4240"),
    (0xEA, "07E20D1D17000000003354"), (0xEA, "07E2071D18000000003354"), (0x97, "1800"),
    (0x98, "07EA0230"), (0x82, "00000000"), (0xEC, "07E2071D170002 0000000000000000"),
    (0xE5, "FE"), (0xE5, "80"), (0xE2, "0064" + "00000000" * 48), (0xE4, "01FF" + "00000000" * 48),
    (0xED, "07E2071D170F03"), (0xED, "07E2071D17000D"), (0xEC, "07E2071D170F01 0000000000000000"),
])
def test_impossible_values_raise_frame_error(epc, edt):
    with pytest.raises(FrameError):
        el.decode_meter_property(epc, hx(edt))


def test_unknown_epc_decodes_to_bytes():
    assert el.decode_meter_property(0x83, hx("FE000016")) == hx("FE000016")


TYPED_SAMPLES = {
    0x80: True, 0x81: 0x61, 0x82: el.StandardVersion("F", 0), 0x88: False, 0x8A: 0x16,
    0x8D: "F24G366505", 0x97: datetime.time(14, 26), 0x98: datetime.date(2026, 5, 20),
    0x9F: (0x80, 0xE0, 0xE7), 0xD3: 10, 0xD7: 6, 0xE0: 13140, 0xE1: el.EnergyUnit(1, Decimal("0.1")),
    0xE2: el.DailyHistory(3, tuple(range(47)) + (NO_DATA,)), 0xE5: 99, 0xE7: -1489,
    0xE8: el.Currents(-7.0, 11.0), 0xEA: el.FixedTimeEnergy(datetime.datetime(2018, 7, 29, 23), 13140),
    0xEC: el.EnergyHistory(datetime.datetime(2018, 7, 29, 23), 30, ((1, 2), (NO_DATA, 3))),
    0xED: el.HistoryRequest(datetime.datetime(2018, 7, 29, 22, 30), 12),
    0xE4: el.DailyHistory(NO_DATA, (NO_DATA,) * 48),
    0xEE: el.EnergyHistory(datetime.datetime(2025, 1, 1, 0, 7), 1, ((5, 6),) * 10),
    0xEF: el.HistoryRequest(datetime.datetime(2025, 1, 1, 0, 7), 10),
    0xD0: el.FixedTimeEnergyPair(datetime.datetime(2025, 1, 1, 0, 1), 5, 6),
}


@pytest.mark.parametrize("epc", sorted(TYPED_SAMPLES))
def test_typed_round_trip(epc):
    value = TYPED_SAMPLES[epc]
    assert el.decode_meter_property(epc, el.encode_meter_property(epc, value)) == value


@pytest.mark.parametrize("epc,value,wire", [
    (0xE5, NO_DATA, "FF"), (0xE5, 0, "00"),
    (0xE2, el.DailyHistory(NO_DATA, (NO_DATA,) * 48), "00FF" + "FFFFFFFE" * 48),
    (0xEC, el.EnergyHistory(None, 30, ((NO_DATA, NO_DATA),)), "FFFFFFFFFFFF01FFFFFFFEFFFFFFFE"),
    (0xED, el.HistoryRequest(None, 1), "FFFFFFFFFFFF01"),
])
def test_typed_round_trip_of_default_values(epc, value, wire):
    """The "default value" codes of section 2.2 encode and decode both ways."""
    assert el.encode_meter_property(epc, value) == hx(wire)
    assert el.decode_meter_property(epc, hx(wire)) == value


# ---------------------------------------------------------------- malformed frames


GOOD = hx("10 81 00 0A 02 88 01 05 FF 01 72 02 E7 04 00 00 07 3C E8 04 00 B9 7F FE")


@pytest.mark.parametrize("length", range(len(GOOD)))
def test_truncated_at_every_length(length):
    with pytest.raises(FrameError):
        Frame.decode(GOOD[:length])


@pytest.mark.parametrize("data,reason", [
    (GOOD + b"\x00", "trailing"),
    (GOOD + GOOD, "trailing"),
    (hx("10 82") + GOOD[2:], "EHD"),
    (hx("00 81") + GOOD[2:], "EHD"),
    (hx("10 81 00 01 05 FF 01 02 88 01 62 00 E7 00"), "OPC is 0"),
    (hx("10 81 00 01 05 FF 01 02 88 01 62 01 E7 05 00 00 00"), "PDC"),
    (hx("10 81 00 01 05 FF 01 02 88 01 62 03 E7 00 E8 00"), "missing"),
    (hx("10 81 00 01 05 FF 01 02 88 01 6E 01 E7 00 00"), "SetGet"),
])
def test_malformed_frames(data, reason):
    with pytest.raises(FrameError, match=reason):
        Frame.decode(data)


def test_unknown_esv_is_kept_not_refused():
    frame = Frame.decode(hx("10 81 00 01 05 FF 01 02 88 01 65 01 E7 00"))
    assert frame.esv == 0x65 and not isinstance(frame.esv, ESV)


def test_encode_refuses_impossible_frames():
    with pytest.raises(ValueError):
        Frame(0x10000, CONTROLLER, METER, ESV.GET, (Property(0xE7),)).encode()
    with pytest.raises(ValueError):
        Frame(1, CONTROLLER, METER, ESV.GET, ()).encode()
    with pytest.raises(ValueError):
        Frame(1, CONTROLLER, METER, ESV.GET, (Property(0xE7, bytes(256)),)).encode()
    with pytest.raises(ValueError):
        Frame(1, 1 << 24, METER, ESV.GET, (Property(0xE7),)).encode()


def test_frame_error_is_a_protocol_error():
    assert issubclass(FrameError, ProtocolError)


# ---------------------------------------------------------------- property-based


properties_st = st.lists(st.builds(Property, st.integers(0, 255), st.binary(max_size=255)),
                         min_size=1, max_size=8).map(tuple)
esv_st = st.integers(0, 255).filter(lambda code: code not in (0x6E, 0x7E, 0x5E))
frames_st = st.builds(Frame, st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFF), st.integers(0, 0xFFFFFF),
                      esv_st, properties_st)


@settings(max_examples=150, deadline=None)
@given(frames_st)
def test_frame_round_trip(frame):
    data = frame.encode()
    assert Frame.decode(data) == frame
    assert Frame.decode(data).encode() == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_frame_error(data):
    try:
        frame = Frame.decode(data)
    except FrameError:
        return
    assert frame.encode() == data


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=40))
def test_random_frames_with_good_header_raise_only_frame_error(body):
    try:
        Frame.decode(b"\x10\x81" + body)
    except FrameError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(set(range(0x80, 0x100)))), st.binary(max_size=200))
def test_random_edt_raises_only_frame_error(epc, edt):
    for decode in (el.decode_meter_property, el.decode_node_property):
        try:
            decode(epc, edt)
        except FrameError:
            pass


stamps_st = st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31),
                         ).map(lambda d: d.replace(microsecond=0))
raw_st = st.one_of(st.integers(0, el.ENERGY_MAX), st.just(NO_DATA))


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.integers(-0x7FFFFFFF, 0x7FFFFFFD), st.sampled_from([NO_DATA, OVERFLOW, UNDERFLOW])))
def test_power_round_trip(watts):
    assert el.decode_power(el.encode_power(watts)) == watts


amps_st = st.one_of(st.integers(-0x7FFF, 0x7FFD).map(lambda tenths: tenths / 10),
                    st.sampled_from([NO_DATA, OVERFLOW, UNDERFLOW]))


@settings(max_examples=150, deadline=None)
@given(amps_st, amps_st)
def test_currents_round_trip(r, t):
    assert el.decode_currents(el.encode_currents(r, t)) == el.Currents(r, t)


@settings(max_examples=100, deadline=None)
@given(stamps_st, raw_st)
def test_fixed_time_round_trip(stamp, raw):
    assert el.decode_fixed_time(el.encode_fixed_time(stamp, raw)) == (stamp, raw)


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.integers(0, 99), st.just(NO_DATA)), st.lists(raw_st, min_size=48, max_size=48))
def test_daily_history_round_trip(day, values):
    assert el.decode_daily_history(el.encode_daily_history(day, values)) == (day, tuple(values))


half_hours_st = stamps_st.map(lambda d: d.replace(minute=d.minute // 30 * 30, second=0))


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), half_hours_st), st.lists(st.tuples(raw_st, raw_st), min_size=1, max_size=12))
def test_energy_history_round_trip(stamp, pairs):
    decoded = el.decode_energy_history(el.encode_energy_history(stamp, pairs))
    assert decoded == el.EnergyHistory(stamp, 30, tuple(pairs))


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), stamps_st.map(lambda d: d.replace(second=0))),
       st.lists(st.tuples(raw_st, raw_st), min_size=1, max_size=10))
def test_one_minute_history_round_trip(stamp, pairs):
    """EE (Release R): any minute, 1..10 pairs."""
    decoded = el.decode_energy_history(el.encode_energy_history(stamp, pairs, 0xEE), 0xEE)
    assert decoded == el.EnergyHistory(stamp, 1, tuple(pairs))


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), half_hours_st), st.integers(1, 12))
def test_history_request_round_trip(stamp, count):
    assert el.decode_history_request(el.encode_history_request(stamp, count)) == (stamp, count)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0x80, 0xFF), max_size=128))
def test_property_map_round_trip(epcs):
    edt = el.encode_property_map(epcs)
    assert len(edt) == (1 + len(epcs) if len(epcs) < 16 else 17)
    assert el.decode_property_map(edt) == tuple(sorted(epcs))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 0xFFFFFF), max_size=84))
def test_instance_list_round_trip(eojs):
    assert el.decode_instance_list(el.encode_instance_list(eojs)) == tuple(eojs)
