"""The SKSTACK-IP line parser: every event kind, fed whole, split and byte by byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from keilib.skstack import (Address, ErxUdp, Event, Fail, Info, Ok, PanDesc, SkParser, Text, Unknown,
                            WiSunRL7023, ll64)

METER = "FE80:0000:0000:0000:021D:1290:1234:5678"
SELF = "FE80:0000:0000:0000:021D:1291:0004:FFFF"
E7_FRAME = bytes.fromhex("1081000102880105FF017201E704000001F4")

# (dual, wire bytes, expected items) -- lines as skstack.md and the seeds show them
CASES = [
    (False, b"OK\r\n", [Ok()]),
    (True, b"OK 01\r", [Ok("01")]),                                  # ROPT: CR only
    (False, b"FAIL ER04\r\n", [Fail(4)]),
    (False, b"EVER 1.2.8\r\n", [Info("EVER", ("1.2.8",))]),
    (False, b"ESREG 21\r\n", [Info("ESREG", ("21",))]),
    (False, b"EINFO FE80:0000:0000:0000:021D:1290:1234:5678 001D129012345678 21 8888 FFFE\r\n",
     [Info("EINFO", ("FE80:0000:0000:0000:021D:1290:1234:5678", "001D129012345678", "21", "8888", "FFFE"))]),
    (False, b"EVENT 21 FE80:0000:0000:0000:8EDF:9DFF:FEC1:323B 00\r\n",
     [Event(0x21, "FE80:0000:0000:0000:8EDF:9DFF:FEC1:323B", None, 0)]),
    (False, b"EVENT 25 FE80:0000:0000:0000:8EDF:9DFF:FEC1:323B\r\n",
     [Event(0x25, "FE80:0000:0000:0000:8EDF:9DFF:FEC1:323B")]),
    (True, b"EVENT 21 FE80:0000:0000:0000:021C:6400:036E:8CF5 0 00\r\n",
     [Event(0x21, "FE80:0000:0000:0000:021C:6400:036E:8CF5", 0, 0)]),
    (True, b"EVENT 22 FE80:0000:0000:0000:021D:1291:0002:0608 0\r\n",
     [Event(0x22, "FE80:0000:0000:0000:021D:1291:0002:0608", 0)]),
    (False, b"FE80:0000:0000:0000:021D:1290:1234:5678\r\n", [Address(METER)]),
    (False, b"SKSREG S2 21\r\n", [Text("SKSREG S2 21")]),                 # an echo
    # SKPING's answer, SKTABLE 1 / 2 / E bodies (skstack.md 3.14, 3.15)
    (False, b"EPONG FE80:0000:0000:0000:021D:1290:1234:5678\r\n",
     [Info("EPONG", ("FE80:0000:0000:0000:021D:1290:1234:5678",))]),
    (False, b"EADDR\r\nFE80:0000:0000:0000:021D:1290:1234:5678\r\nOK\r\n",
     [Info("EADDR", ()), Address(METER), Ok()]),
    (False, b"ENEIGHBOR\r\nFE80:0000:0000:0000:021D:1290:1234:5678 001D129012345678 FFFF\r\nOK\r\n",
     [Info("ENEIGHBOR", ()), Text("FE80:0000:0000:0000:021D:1290:1234:5678 001D129012345678 FFFF"), Ok()]),
    (False, b"EPORT\r\n3610\r\n716\r\n0\r\n0\r\n0\r\n0\r\n\r\n3610\r\n0\r\n0\r\n0\r\nOK\r\n",
     [Info("EPORT", ())] + [Text(t) for t in ("3610", "716", "0", "0", "0", "0", "3610", "0", "0", "0")]
     + [Ok()]),
    # seed 002's scan output (single stack, RL7023 IPS)
    (False, b"EVENT 20 FE80:0000:0000:0000:1234:5678:9ABC:DEF0\r\nEPANDESC\r\n  Channel:33\r\n"
            b"  Channel Page:09\r\n  Pan ID:24EF\r\n  Addr:00FFEEDDCCBBAA99\r\n  LQI:32\r\n"
            b"  PairID:12345678\r\nEVENT 22 FE80:0000:0000:0000:1234:5678:9ABC:DEF0\r\n",
     [Event(0x20, "FE80:0000:0000:0000:1234:5678:9ABC:DEF0"),
      PanDesc(0x33, 9, 0x24EF, "00FFEEDDCCBBAA99", 0x32, "12345678"),
      Event(0x22, "FE80:0000:0000:0000:1234:5678:9ABC:DEF0")]),
    # dual stack EPANDESC with Side:
    (True, b"EPANDESC\r\n  Channel:39\r\n  Channel Page:09\r\n  Pan ID:8CF5\r\n  Addr:001C6400036E8CF5\r\n"
           b"  LQI:B2\r\n  Side:0\r\n  PairID:0112CE67\r\nOK\r\n",
     [PanDesc(0x39, 9, 0x8CF5, "001C6400036E8CF5", 0xB2, "0112CE67", 0), Ok()]),
    # 9-token hex ERXUDP (RL7023 / single stack)
    (False, b"ERXUDP FE80:0000:0000:0000:021D:1290:1234:5678 FE80:0000:0000:0000:021D:1290:ABCD:EF01 "
            b"0E1A 0E1A 001D129012345678 1 0012 1081000102880105FF017201E704000001F4\r\n",
     [ErxUdp(METER, "FE80:0000:0000:0000:021D:1290:ABCD:EF01", 0x0E1A, 0x0E1A, "001D129012345678", True,
             E7_FRAME)]),
    # 10-token binary ERXUDP (real BP35C2 capture, skstack.md 5.3) -- payload holds CR LF bytes
    (True, b"ERXUDP FE80:0000:0000:0000:021C:6400:030C:12A4 FE80:0000:0000:0000:021D:1291:0000:0574 0E1A 0E1A "
           b"001C6400030C12A4 1 0 0012 \x10\x81\x00\x01\x02\x88\x01\x05\xff\x01r\x01\xe7\x04\x00\x00\x0d\x0a\r\n",
     [ErxUdp("FE80:0000:0000:0000:021C:6400:030C:12A4", "FE80:0000:0000:0000:021D:1291:0000:0574", 0x0E1A,
             0x0E1A, "001C6400030C12A4", True, bytes.fromhex("1081000102880105FF017201E70400000D0A"), side=0)]),
    # 11-token ERXUDP with RSSI (SA2=1)
    (True, b"ERXUDP " + METER.encode() + b" " + SELF.encode() + b" 0E1A 0E1A 001D129012345678 E1 1 0 0012 "
           + E7_FRAME.hex().upper().encode() + b"\r\n",
     [ErxUdp(METER, SELF, 0x0E1A, 0x0E1A, "001D129012345678", True, E7_FRAME, side=0, rssi=0xE1)]),
]


def feed_all(parser, chunks):
    items = []
    for chunk in chunks:
        items += parser.feed(chunk)
    return items + parser.flush()


@pytest.mark.parametrize("dual,wire,expected", CASES)
def test_parse_whole_halves_and_bytes(dual, wire, expected):
    assert feed_all(SkParser(dual), [wire]) == expected
    half = len(wire) // 2
    assert feed_all(SkParser(dual), [wire[:half], wire[half:]]) == expected
    assert feed_all(SkParser(dual), [wire[i:i + 1] for i in range(len(wire))]) == expected


@pytest.mark.parametrize("dual,wire,expected", CASES)
def test_garbage_in_front_costs_one_unknown_item(dual, wire, expected):
    items = feed_all(SkParser(dual), [b"\x00\xff\xfe\x80garbage\r\n", wire])
    assert isinstance(items[0], Unknown) and items[1:] == expected


@pytest.mark.parametrize("wire", [
    b"EVENT 2G FE80:0000:0000:0000:021D:1290:1234:5678\r\n",          # bad hex
    b"EVENT 21\r\n",                                                    # no sender
    b"EVENT 21 FE80::1 00\r\n",                                         # short address form
    b"ERXUDP FE80:0000:0000:0000:021D:1290:1234:5678 FE80:0000:0000:0000:021D:1290:ABCD:EF01 0E1A\r\n",
    b"ERXUDP " + METER.encode() + b" " + SELF.encode() + b" 0E1A 0E1A 001D129012345678 1 0012 1081ZZ\r\n",
    b"ERXUDP " + METER.encode() + b" " + SELF.encode() + b" 0E1A 0E1A 001D129012345678 1 0012 10810001\r\n",
    b"ERXUDP " + METER.encode() + b" " + SELF.encode() + b" 0E1A 0E1A XYZ 1 0012 " + b"00" * 18 + b"\r\n",
])
def test_malformed_lines_become_unknown_and_parsing_goes_on(wire):
    items = feed_all(SkParser(False), [wire, b"OK\r\n"])
    assert isinstance(items[0], Unknown) and items[-1] == Ok(), items


def test_overlong_line_is_dropped():
    items = SkParser(False).feed(b"A" * 5000)
    assert len(items) == 1 and isinstance(items[0], Unknown)


REAL_LINES = [wire for _, wire, _ in CASES]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(REAL_LINES), st.binary(max_size=80)), max_size=8),
       st.integers(0, 400), st.binary(max_size=4), st.booleans())
def test_fuzz_random_and_mutated_lines_never_raise(chunks, position, junk, dual):
    data = b"".join(chunks)
    data = data[:position] + junk + data[position + len(junk):]
    parser = SkParser(dual)
    for i in range(0, len(data), 7):
        for item in parser.feed(data[i:i + 7]):
            assert isinstance(item, (Ok, Fail, Event, ErxUdp, PanDesc, Info, Address, Text, Unknown))
    parser.flush()


def test_ll64_matches_the_module():
    assert ll64("001D129012345678") == "FE80:0000:0000:0000:021D:1290:1234:5678"
    assert ll64("001C640003DD6393") == "FE80:0000:0000:0000:021C:6400:03DD:6393"
    assert ll64("00FFEEDDCCBBAA99") == "FE80:0000:0000:0000:02FF:EEDD:CCBB:AA99"


def test_rl7023_constructor_as_keilog_configs_build_it():
    dev = WiSunRL7023(port="/dev/serial/by-id/xxxxx", baud=115200, type=WiSunRL7023.IPS)
    assert dev.KIND.dual is False and dev.port == "/dev/serial/by-id/xxxxx" and not dev.is_open
    assert WiSunRL7023("/dev/ttyUSB0", 115200, type=WiSunRL7023.DSS).KIND.dual is True
    with pytest.raises(ValueError):
        WiSunRL7023("/dev/ttyUSB0", 115200, type="XYZ")
