"""Transcript test of seed 001: a user's ROHM BP35C0 scripts (join, receiver) against our simulator.

The seed (shared/seeds/001_*.txt) is a blog post with three Python 2 scripts
for a BP35C0, i.e. our dual-stack kind ``bp35c2``.  These tests replay its
command sequence over ``sim://wisun?kind=bp35c2&latency=zero&...`` and check
that every line it reads has the shape its parsing relies on.  The facts the
scripts depend on, restated (the seed's code is not copied):

Join script
* ``SKVER`` is sent again after every line read until a line starts with
  ``OK``; with echo on (SFE=1 at power-on) that takes three SKVERs, and the
  answers to the two extra ones are swallowed by the next waits.
* ``SKSETPWD C <pwd>`` and ``SKSETRBID <id>``, each followed by "read until a
  line starts with OK".
* ``SKSCAN 2 FFFFFFFF 6 0`` (active scan with IE, all channels, duration 6,
  side 0); lines are read until one starts with ``EVENT 22``; every line that
  starts with a blank is stripped and split on ``:`` into key and value; the
  keys ``Channel``, ``Pan ID`` and ``Addr`` are used.
* ``SKSREG S2 <Channel>``, ``SKSREG S3 <Pan ID>`` (values as printed, hex).
* ``SKLL64 <Addr>``: the first line that does not start with ``SKLL64`` (the
  echo) is taken, stripped, as the meter's IPv6 address.
* ``SKJOIN <address>``: read until a line starts with ``EVENT 24`` or ``EVENT 25``.

Receiver script
* Only lines starting with ``ERXUDP`` count; they are split on single blanks
  and **column 9** is the payload as hex text.  On a dual-stack module with
  SA2=0 that is the 10th field (``<side>`` sits before ``<len>``, skstack.md).
  The payload is hex only with ``WOPT 01``; the BP35C0 leaves the factory with
  binary output (WOPT 00), and the seed never sends WOPT: it relies on a
  setting saved in flash once.  The tests send ``WOPT 01`` once beforehand.
* Hex offsets into the payload: EHD 0..4, TID 4..8, then EDATA from 8: SEOJ
  EDATA[0:6] must be ``028801``, ESV EDATA[12:14] ``72`` (Get_Res) or ``73``
  (INF), OPC EDATA[14:16]; properties from EDATA[16].
* Per EPC it reads PDC (2 hex characters) and a fixed-size EDT, then moves on
  by a fixed step: E7 4 bytes (step 10), E1 1 byte (step 4), EA/EB 11 bytes
  (step 24).  Any other EPC is not understood; as the first property it ends
  the frame.
* E7: hex -> int, minus 2**32 when above 0x80000000 (signed watts).
* EA/EB: YYYY MM DD hh mm ss and the raw count; kWh = raw x 0.1, always:
  the script's E1 branch assigns a local ``k``, so the module-level 0.1 is
  what it multiplies by.  That is right for this meter model (E1 = 0x01,
  D3 = 1), which the tests check.
* ``bp35c0_e7.py`` sends a Get of E7 through a helper module the post does
  not show; the tests send the standard Get with a dual-stack ``SKSENDTO``.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Dict, List, Optional, Tuple

import pytest
import serial

import keilib.sim
from keilib import echonet as el
from keilib.sim import protocol_sim
from keilib.sim.meter import SmartMeter
from keilib.sim.wisun import link_local

from test_sim_wisun import MCAST, Host, make_module, sendto

RBID = "00000000000000000000000000C0FFEE"
PWD = "SEED001PASSW"
MAC = "001D12910004FFFF"            # the BP35C0 itself
METER_MAC = "001C6400036E8CF5"
CHANNEL, PAN = "39", "8CF5"
OWN = link_local(MAC)
METER = link_local(METER_MAC)
PAYLOAD_COLUMN = 9                  # the receiver's cols[9]
STEPS = {"E7": 10, "E1": 4, "EA": 24, "EB": 24}   # PDC + EDT, in hex characters


def url(name: str, **extra: str) -> str:
    options = dict(kind="bp35c2", latency="zero", id=RBID, password=PWD, seed="5", reverse="1",
                   mac=MAC, meter_mac=METER_MAC, channel=CHANNEL, pan=PAN, lqi="B2", scan_min="6")
    options.update(extra)
    return "sim://wisun?" + "&".join("%s=%s" % item for item in options.items()) + "&name=" + name


@pytest.fixture
def open_url():
    """open_url(url) -> Host on a sim:// port; the named device is forgotten afterwards."""
    keilib.sim.register_url_handler()
    opened: List[Tuple[serial.SerialBase, str]] = []

    def _open(address: str) -> Host:
        port = serial.serial_for_url(address, timeout=0.05)
        opened.append((port, address.rsplit("name=", 1)[1]))
        return Host(port)

    yield _open
    for port, name in reversed(opened):
        port.close()
        protocol_sim.forget(name)


# ---------------------------------------------------------------- the join script, restated


def read_until_ok(host: Host) -> List[str]:
    """The join script's wait: lines up to the first that starts with OK."""
    return host.until("OK")


def join_script(host: Host) -> Dict[str, object]:
    """Replay bp35c0_join2.py's exchange; return what it read, for the checks."""
    seen: Dict[str, object] = {}
    skver_sent = 0
    while True:                                  # SKVER until a line starts with OK
        host.send(b"SKVER\r\n")
        skver_sent += 1
        if host.line().startswith("OK"):
            break
    seen["skver_sent"] = skver_sent
    host.send(("SKSETPWD C %s\r\n" % PWD).encode())
    seen["after_pwd"] = read_until_ok(host)
    host.send(("SKSETRBID %s\r\n" % RBID).encode())
    seen["after_rbid"] = read_until_ok(host)

    host.send(b"SKSCAN 2 FFFFFFFF 6 0\r\n")
    scan_lines = host.until("EVENT 22")
    found: Dict[str, str] = {}
    for line in scan_lines:
        if line.startswith(" "):
            cols = line.strip().split(":")
            assert len(cols) == 2, line          # the script keeps cols[0] -> cols[1]
            found[cols[0]] = cols[1]
    seen["scan"], seen["found"] = scan_lines, found

    host.send(("SKSREG S2 %s\r\n" % found["Channel"]).encode())
    seen["after_s2"] = read_until_ok(host)
    host.send(("SKSREG S3 %s\r\n" % found["Pan ID"]).encode())
    seen["after_s3"] = read_until_ok(host)

    host.send(("SKLL64 %s\r\n" % found["Addr"]).encode())
    while True:
        line = host.line()
        if not line.startswith("SKLL64"):
            break
    seen["address"] = address = line.strip()

    host.send(("SKJOIN %s\r\n" % address).encode())
    seen["join"] = join_lines = []
    while True:
        join_lines.append(host.line(timeout=5))
        if join_lines[-1].startswith(("EVENT 24", "EVENT 25")):
            return seen


# ---------------------------------------------------------------- the receiver's parsing, restated


def receiver_parse(line: str) -> Optional[dict]:
    """What bp35c0_rcv2.py takes from one ERXUDP line; None for frames it ignores.

    Besides the values, the result records each EPC with its PDC and the hex
    offset where the script's fixed steps land, so a test can check them.
    """
    assert line.startswith("ERXUDP")
    cols = line.strip().split(" ")
    res = cols[PAYLOAD_COLUMN]
    edata = res[8:]
    parsed = {"cols": cols, "res": res, "seoj": edata[0:6], "esv": edata[12:14], "epcs": [],
              "values": {}}
    if parsed["seoj"] != "028801" or parsed["esv"] not in ("72", "73"):
        return parsed
    offset = 16
    for _ in range(int(edata[14:16], 16)):
        epc = edata[offset:offset + 2]
        offset += 2
        if epc not in STEPS:
            break
        body = edata[offset:]
        parsed["epcs"].append((epc, body[0:2]))
        if epc == "E7":
            watts = int(body[2:10], 16)
            if watts > 0x80000000:
                watts -= 0x100000000
            parsed["values"]["E7"] = watts
        elif epc in ("EA", "EB"):
            edt = body[2:]
            stamp = datetime.datetime(int(edt[0:4], 16), int(edt[4:6], 16), int(edt[6:8], 16),
                                      int(edt[8:10], 16), int(edt[10:12], 16), int(edt[12:14], 16))
            parsed["values"][epc] = (stamp, int(edt[14:22], 16), int(edt[14:22], 16) * 0.1)
        else:                                   # E1: the unit code, printed only
            parsed["values"]["E1"] = body[2:4]
        offset += STEPS[epc]
    parsed["end"] = offset
    parsed["edata_len"] = len(edata)
    return parsed


def assert_erxudp_shape(line: str, dual_fields: int = 10) -> List[str]:
    """The receiver's column split: 10 fields, payload hex of the announced length at cols[9]."""
    cols = line.split(" ")
    assert len(cols) == dual_fields, line
    assert cols[0] == "ERXUDP" and cols[3:5] == ["0E1A", "0E1A"]
    length = int(cols[8], 16)
    assert len(cols[PAYLOAD_COLUMN]) == 2 * length
    bytes.fromhex(cols[PAYLOAD_COLUMN])          # hex text, not raw bytes
    return cols


def served_at(meter: SmartMeter, epc: int) -> datetime.datetime:
    """When the meter model last served ``epc`` (its clock, whatever that is)."""
    return [entry for entry in meter.served if entry.epc == epc][-1].time


# ---------------------------------------------------------------- tests


def test_seed_001_join_script_reads_what_it_expects(open_url):
    name = "seed001-join-%s" % uuid.uuid4().hex
    host = open_url(url(name))
    module = protocol_sim.get_device(name)
    host.send(b"WOPT 01\r")                      # once, saved in flash; the seed assumes it
    assert host.read_exact(11) == b"WOPT 01\rOK\r"

    seen = join_script(host)

    # Echo is on: SKVER, EVER, OK per SKVER, so the loop sends three; the two
    # spare answers are what the next two waits read before their own OK.
    assert seen["skver_sent"] == 3
    assert seen["after_pwd"] == ["SKVER", "EVER 1.5.2", "OK"]
    assert seen["after_rbid"] == ["SKVER", "EVER 1.5.2", "OK"]
    # The scan loop then reads both late echoes and OKs, and the scan itself.
    scan = seen["scan"]
    assert scan[:6] == ["SKSETPWD C " + PWD, "OK", "SKSETRBID " + RBID, "OK",
                        "SKSCAN 2 FFFFFFFF 6 0", "OK"]
    assert scan[6:] == ["EVENT 20 %s 0" % OWN, "EPANDESC", "  Channel:" + CHANNEL, "  Channel Page:09",
                        "  Pan ID:" + PAN, "  Addr:" + METER_MAC, "  LQI:B2", "  Side:0",
                        "  PairID:00C0FFEE", "EVENT 22 %s 0" % OWN]
    assert seen["found"] == {"Channel": CHANNEL, "Channel Page": "09", "Pan ID": PAN,
                             "Addr": METER_MAC, "LQI": "B2", "Side": "0", "PairID": "00C0FFEE"}
    # SKSREG takes the printed values as they are (hex without 0x).
    assert seen["after_s2"] == ["SKSREG S2 " + CHANNEL, "OK"]
    assert seen["after_s3"] == ["SKSREG S3 " + PAN, "OK"]
    # SKLL64: echo, then the address alone (no OK: the join transcript starts with its echo).
    assert seen["address"] == METER == module.meter_address
    # SKJOIN ends in EVENT 25 (with the side on a dual-stack module).
    join = seen["join"]
    assert join[:2] == ["SKJOIN " + METER, "OK"]
    assert join[-1] == "EVENT 25 %s 0" % METER and module.session_up
    assert not any(line.startswith("EVENT 24") for line in join)

    # The receiver: the instance-list INF comes first; it is from 0EF001, so ignored.
    inf = host.line()
    cols = assert_erxudp_shape(inf)
    assert cols[1:3] == [METER, MCAST]
    parsed = receiver_parse(inf)
    assert parsed["seoj"] == "0EF001" and parsed["epcs"] == []


def _joined(open_url, name: str, **extra: str) -> Tuple[Host, object]:
    host = open_url(url(name, **extra))
    module = protocol_sim.get_device(name)
    host.send(b"WOPT 01\r")
    host.read_exact(11)
    assert join_script(host)["join"][-1] == "EVENT 25 %s 0" % METER
    assert receiver_parse(host.line())["seoj"] == "0EF001"
    return host, module


def _ask(host: Host, module, frame: bytes) -> str:
    """SKSENDTO; the receiver skips the non-ERXUDP lines (echo, EVENT 21, OK)."""
    host.send(sendto(module, frame))
    skipped = host.until("ERXUDP")
    assert skipped[:-1] == ["SKSENDTO 1 %s 0E1A 1 0 %04X " % (METER, len(frame)),
                            "EVENT 21 %s 0 00" % METER, "OK"]
    return skipped[-1]


def test_seed_001_receiver_parses_e7_e1_ea_eb_from_get_res(open_url):
    name = "seed001-get-%s" % uuid.uuid4().hex
    host, module = _joined(open_url, name)
    meter = module.meter

    # bp35c0_e7.py: a Get of E7 alone; the receiver's step 10 ends the frame.
    line = _ask(host, module, el.get_request(1, [0xE7]).encode())
    assert_erxudp_shape(line)
    parsed = receiver_parse(line)
    assert (parsed["seoj"], parsed["esv"]) == ("028801", "72")
    assert parsed["epcs"] == [("E7", "04")] and parsed["end"] == parsed["edata_len"]
    assert parsed["values"]["E7"] == meter.power_w(served_at(meter, 0xE7))

    # Everything the receiver knows in one Get_Res: its fixed steps must walk
    # the frame exactly (E7 PDC 04, E1 PDC 01, EA/EB PDC 0B).
    line = _ask(host, module, el.get_request(2, [0xE7, 0xE1, 0xEA, 0xEB]).encode())
    cols = assert_erxudp_shape(line)
    assert cols[8] == "%04X" % (12 + 6 + 3 + 13 + 13)
    parsed = receiver_parse(line)
    assert parsed["epcs"] == [("E7", "04"), ("E1", "01"), ("EA", "0B"), ("EB", "0B")]
    assert parsed["end"] == parsed["edata_len"]
    assert parsed["values"]["E7"] == meter.power_w(served_at(meter, 0xE7))
    assert parsed["values"]["E1"] == "01"        # 0.1 kWh: the script's fixed k is right here
    when = served_at(meter, 0xEA)
    boundary, forward, backward = meter.fixed_time(when)
    for epc, raw in (("EA", forward), ("EB", backward)):
        stamp, count, kwh = parsed["values"][epc]
        assert (stamp, count) == (boundary, raw)
        assert kwh == pytest.approx(el.energy_kwh(raw, meter.coefficient, meter.unit_code))
    # The codec agrees with the script's reading of the same hex.
    frame = el.Frame.decode(bytes.fromhex(parsed["res"]))
    assert frame.value(0xEA) == (boundary, forward) and frame.value(0xE7) == parsed["values"]["E7"]


def test_seed_001_e7_sign_conversion_matches_the_codec(open_url):
    """Export (negative E7) through the script's two's complement step."""
    name = "seed001-export-%s" % uuid.uuid4().hex
    host = open_url(url(name))
    module = protocol_sim.get_device(name)
    module.meter.overrides[0xE7] = bytes.fromhex("FFFFFA2F")     # -1489 W, echonet.md 5(b)
    host.send(b"WOPT 01\r")
    host.read_exact(11)
    join_script(host)
    host.line()
    parsed = receiver_parse(_ask(host, module, el.get_request(3, [0xE7]).encode()))
    assert parsed["values"]["E7"] == -1489 == el.decode_power(bytes.fromhex("FFFFFA2F"))


def test_seed_001_receiver_parses_the_half_hourly_inf(fake_clock, open_url):
    """INF 0x73 with EA and EB at :30; the receiver treats it like a Get_Res."""
    name = "seed001-inf-%s" % uuid.uuid4().hex
    meter = SmartMeter(seed=5, reverse=True)
    protocol_sim.register(name, make_module("bp35c2", clock=fake_clock, meter=meter, route_b_id=RBID,
                                            password=PWD, mac=MAC, meter_mac=METER_MAC, channel=0x39,
                                            pan_id=0x8CF5, lqi=0xB2, scan_min=6))
    host, module = _joined(open_url, name)
    fake_clock.advance(1800)                     # 14:00 -> 14:30
    line = host.until("ERXUDP")[-1]
    cols = assert_erxudp_shape(line)
    assert cols[1:3] == [METER, OWN] and cols[8] == "0026"
    parsed = receiver_parse(line)
    assert (parsed["seoj"], parsed["esv"]) == ("028801", "73")
    assert parsed["epcs"] == [("EA", "0B"), ("EB", "0B")] and parsed["end"] == parsed["edata_len"]
    boundary, forward, backward = meter.fixed_time(datetime.datetime(2026, 5, 20, 14, 30))
    assert boundary == datetime.datetime(2026, 5, 20, 14, 30)
    assert parsed["values"]["EA"][:2] == (boundary, forward)
    assert parsed["values"]["EB"][:2] == (boundary, backward)
    assert parsed["values"]["EA"][2] == pytest.approx(el.energy_kwh(forward, 1, 0x01))
    host.quiet(0.1)                              # INF needs no answer, and the module sends nothing more
