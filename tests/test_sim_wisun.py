"""Transcript tests of the SKSTACK-IP module emulator (keilib.sim.wisun).

Each test talks to a WisunModule through a real line: a pseudo-terminal opened
with pyserial (the kernel tty path), or the in-process ``sim://`` URL handler.
Expected lines come from shared/docs/skstack.md (sections 7.1, 7.2, ...) and
from the seeds' real session logs.
"""

from __future__ import annotations

import datetime
import time
from typing import List, Optional

import pytest
import serial

from keilib import echonet as el
import keilib.sim
from keilib.sim import protocol_sim
from keilib.sim.meter import SmartMeter
from keilib.sim.transport import PtyTransport
from keilib.sim.wisun import (CONTROL_GRAMMAR, FAULT_ARGS, FAULTS, MODULE_KINDS, WisunModule,
                              from_options, link_local, parse_hex)

from support import wait_for

RBID = "00112233445566778899AABBCCDDEEFF"     # skstack.md 7.1: Pairing ID CCDDEEFF
PWD = "0123456789AB"
OWN_MAC = "001D1290ABCDEF01"                  # -> FE80:...:021D:1290:ABCD:EF01 (7.1)
METER_MAC = "001D129012345678"                # -> FE80:...:021D:1290:1234:5678 (7.1)
OWN = "FE80:0000:0000:0000:021D:1290:ABCD:EF01"
METER = "FE80:0000:0000:0000:021D:1290:1234:5678"
MCAST = "FF02:0000:0000:0000:0000:0000:0000:0001"
GET_E7 = bytes.fromhex("1081000105FF010288016201E700")


class Host:
    """The host side of the serial line: write bytes, read CR LF lines."""

    def __init__(self, port: serial.SerialBase):
        self.port = port
        self.buf = bytearray()

    def send(self, data: bytes) -> None:
        self.port.write(data)

    def _fill(self, deadline: float) -> bool:
        chunk = self.port.read(self.port.in_waiting or 1)
        self.buf += chunk
        return bool(chunk) or time.monotonic() < deadline

    def read_exact(self, count: int, timeout: float = 3.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < count:
            if not self._fill(deadline):
                raise AssertionError("timed out; have %r" % bytes(self.buf))
        data = bytes(self.buf[:count])
        del self.buf[:count]
        return data

    def line(self, timeout: float = 3.0, end: bytes = b"\r\n") -> str:
        deadline = time.monotonic() + timeout
        while end not in self.buf:
            if not self._fill(deadline):
                raise AssertionError("no line within %.1f s; have %r" % (timeout, bytes(self.buf)))
        index = self.buf.index(end)
        text = bytes(self.buf[:index]).decode("latin-1")
        del self.buf[:index + len(end)]
        return text

    def lines(self, count: int, timeout: float = 3.0) -> List[str]:
        return [self.line(timeout) for _ in range(count)]

    def until(self, prefix: str, timeout: float = 3.0) -> List[str]:
        got = []
        while True:
            got.append(self.line(timeout))
            if got[-1].startswith(prefix):
                return got

    def command(self, text: str, answer_lines: int) -> List[str]:
        self.send(text.encode("ascii") + b"\r\n")
        return self.lines(answer_lines)

    def binary_erxudp(self, tokens: int) -> tuple:
        """An ERXUDP with a raw payload: (header tokens, payload bytes)."""
        head = bytearray()
        while head.count(b" ") < tokens:
            head += self.read_exact(1)
        fields = head.decode("ascii").split()
        payload = self.read_exact(int(fields[-1], 16))
        assert self.read_exact(2) == b"\r\n"
        return fields, payload

    def quiet(self, seconds: float = 0.15) -> None:
        """Assert nothing more arrives (absence can only be checked over some time)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.buf += self.port.read(self.port.in_waiting or 1)
        assert not self.buf, "unexpected output %r" % bytes(self.buf)


def make_module(kind: str = "bp35a1", clock=None, meter=None, **options) -> WisunModule:
    settings = dict(route_b_id=RBID, password=PWD, latency="zero", seed=5, mac=OWN_MAC,
                    meter_mac=METER_MAC, channel=0x21, pan_id=0x8888, lqi=0xE1, scan_min=4)
    settings.update(options)
    if meter is None:
        meter = SmartMeter(seed=5, start=datetime.datetime(2026, 5, 20, 14, 0, 0))
    return WisunModule(kind=kind, clock=clock, meter=meter, **settings)


@pytest.fixture(params=["pty", "sim"])
def connect(request):
    """connect(module) -> Host over a pty (kernel tty) or the sim:// URL handler."""
    keilib.sim.register_url_handler()
    cleanups = []

    def _connect(module: WisunModule) -> Host:
        if request.param == "pty":
            transport = PtyTransport(module)
            port = serial.Serial(transport.slave_path, 115200, timeout=0.05)
            cleanups.append(transport.close)
        else:
            name = "wisun-test-%d" % id(module)
            protocol_sim.register(name, module)
            port = serial.serial_for_url("sim://wisun?name=" + name, timeout=0.05)
            cleanups.append(lambda: protocol_sim.forget(name))
        cleanups.append(port.close)
        return Host(port)

    yield _connect
    for cleanup in reversed(cleanups):
        cleanup()


def setup_and_join(host: Host, module: WisunModule, sfe: int = 0) -> None:
    """Credentials, channel, PAN, SKJOIN; leaves the line after the instance-list INF."""
    if not sfe:
        assert host.command("SKSREG SFE 0", 2) == ["SKSREG SFE 0", "OK"]
    host.send(b"SKSETRBID %s\r\nSKSETPWD C %s\r\nSKSREG S2 21\r\nSKSREG S3 8888\r\n"
              % (RBID.encode(), PWD.encode()))
    assert host.lines(8 if sfe else 4)[1 if sfe else 0::2 if sfe else 1] == ["OK"] * 4
    host.send(b"SKJOIN %s\r\n" % module.meter_address.encode())
    host.until("EVENT 25")
    assert host.line().startswith("ERXUDP ")          # the instance-list INF
    assert module.session_up


def sendto(module: WisunModule, frame: bytes, sec: int = 1, handle: int = 1,
           dest: Optional[str] = None) -> bytes:
    side = " 0" if module.kind.dual else ""
    return b"SKSENDTO %d %s 0E1A %d%s %04X " % (handle, (dest or module.meter_address).encode(),
                                                sec, side.encode(), len(frame)) + frame


# ---------------------------------------------------------------------------
# Canonical sessions (skstack.md 7.1 / 7.2)
# ---------------------------------------------------------------------------
def test_single_stack_session_matches_section_7_1(connect):
    module = make_module("bp35a1")
    host = connect(module)
    host.send(b"WOPT 01\r")                            # hex ERXUDP, as in 7.1
    assert host.read_exact(11) == b"WOPT 01\rOK\r"
    assert host.command("SKVER", 3) == ["SKVER", "EVER 1.2.10", "OK"]
    assert host.command("SKSETPWD C 0123456789AB", 2) == ["SKSETPWD C 0123456789AB", "OK"]
    assert host.command("SKSETRBID " + RBID, 2) == ["SKSETRBID " + RBID, "OK"]
    assert host.command("SKSCAN 2 FFFFFFFF 6", 11) == [
        "SKSCAN 2 FFFFFFFF 6", "OK", "EVENT 20 " + OWN,
        "EPANDESC", "  Channel:21", "  Channel Page:09", "  Pan ID:8888",
        "  Addr:001D129012345678", "  LQI:E1", "  PairID:CCDDEEFF", "EVENT 22 " + OWN]
    host.send(b"SKLL64 001D129012345678\r\n")
    assert host.lines(2) == ["SKLL64 001D129012345678", METER]      # no OK
    assert host.command("SKSREG S2 21", 2) == ["SKSREG S2 21", "OK"]
    assert host.command("SKSREG S3 8888", 2) == ["SKSREG S3 8888", "OK"]
    host.send(("SKJOIN %s\r\n" % METER).encode())
    lines = host.until("EVENT 25")
    assert lines[:4] == ["SKJOIN " + METER, "OK", "EVENT 21 %s 02" % METER, "EVENT 02 " + METER]
    assert lines[4].startswith("ERXUDP ")
    pana = [line.split() for line in lines if line.startswith("ERXUDP")]
    assert [fields[7] for fields in pana] == ["0028", "0068", "0054", "0058"]
    for fields in pana:
        assert fields[1:7] == [METER, OWN, "02CC", "02CC", METER_MAC, "0"]
        assert len(fields) == 9 and len(fields[8]) == 2 * int(fields[7], 16)
    assert pana[0][8].startswith("00000028C0000002")        # PAR 'S'
    assert pana[3][8].startswith("00000058A0000002")        # PAR 'C'
    assert "0008000000040000" + "00015180" in pana[3][8]      # Session-Lifetime 86400 s
    assert lines.count("EVENT 21 %s 00" % METER) == 4
    assert lines[-1] == "EVENT 25 " + METER
    assert host.line() == ("ERXUDP %s %s 0E1A 0E1A %s 1 0012 108100000EF0010EF0017301D50401028801"
                           % (METER, MCAST, METER_MAC))
    host.send(sendto(module, GET_E7))
    assert host.lines(3) == ["SKSENDTO 1 %s 0E1A 1 000E " % METER,   # header echo, trailing space
                             "EVENT 21 %s 00" % METER, "OK"]
    fields = host.line().split()
    assert fields[:8] == ["ERXUDP", METER, OWN, "0E1A", "0E1A", METER_MAC, "1", "0012"]
    reply = el.Frame.decode(bytes.fromhex(fields[8]))
    assert (reply.tid, reply.seoj, reply.deoj, reply.esv) == (1, el.METER, el.CONTROLLER, el.ESV.GET_RES)
    assert reply.properties[0].epc == 0xE7
    host.quiet()


def test_dual_stack_session_matches_section_7_2(connect):
    module = make_module("bp35c2", mac="001D12910004FFFF", channel=0x39, pan_id=0x8CF5,
                         meter_mac="001C6400036E8CF5", lqi=0xB2, route_b_id="0" * 24 + "0112CE67")
    own, meter = "FE80:0000:0000:0000:021D:1291:0004:FFFF", "FE80:0000:0000:0000:021C:6400:036E:8CF5"
    host = connect(module)
    assert host.command("SKINFO", 3) == [
        "SKINFO", "EINFO %s 001D12910004FFFF 21 FFFF 0" % own, "OK"]
    host.command("SKSETRBID " + "0" * 24 + "0112CE67", 2)
    host.command("SKSETPWD C " + PWD, 2)
    host.send(b"SKSCAN 2 FFFFFFFF 5 0 \r\n")              # trailing blank, echoed as sent
    assert host.lines(12) == [
        "SKSCAN 2 FFFFFFFF 5 0 ", "OK", "EVENT 20 %s 0" % own,
        "EPANDESC", "  Channel:39", "  Channel Page:09", "  Pan ID:8CF5",
        "  Addr:001C6400036E8CF5", "  LQI:B2", "  Side:0", "  PairID:0112CE67", "EVENT 22 %s 0" % own]
    host.command("SKSREG S2 39", 2)
    host.command("SKSREG S3 8CF5", 2)
    host.send(("SKJOIN %s\r\n" % meter).encode())
    lines = host.until("EVENT 25")
    assert lines[2:4] == ["EVENT 21 %s 0 02" % meter, "EVENT 02 %s 0" % meter]
    assert lines.count("EVENT 21 %s 0 00" % meter) == 4
    assert lines[-1] == "EVENT 25 %s 0" % meter
    # Factory setting: binary ERXUDP, 10 tokens (SIDE after SECURED)
    fields, payload = host.binary_erxudp(9)
    assert fields == ["ERXUDP", meter, MCAST, "0E1A", "0E1A", "001C6400036E8CF5", "1", "0", "0012"]
    assert payload == bytes.fromhex("108100000EF0010EF0017301D50401028801")
    host.send(sendto(module, GET_E7))
    assert host.lines(3) == ["SKSENDTO 1 %s 0E1A 1 0 000E " % meter, "EVENT 21 %s 0 00" % meter, "OK"]
    fields, payload = host.binary_erxudp(9)
    assert fields[1:] == [meter, own, "0E1A", "0E1A", "001C6400036E8CF5", "1", "0", "0012"]
    assert el.Frame.decode(payload).esv == el.ESV.GET_RES
    # SA2=1: RSSI before SECURED, 11 tokens; WOPT 01: hex text
    host.command("SKSREG SA2 1", 2)
    host.send(b"WOPT 01\r")
    assert host.read_exact(11) == b"WOPT 01\rOK\r"
    host.send(sendto(module, GET_E7))
    host.lines(3)
    fields = host.line().split()
    assert len(fields) == 11 and fields[6:10] == ["B2", "1", "0", "0012"]
    assert el.Frame.decode(bytes.fromhex(fields[10])).esv == el.ESV.GET_RES


def test_binary_payload_with_crlf_and_spaces_is_delivered_whole(connect):
    """A raw ERXUDP payload may hold 0D 0A 20: a reader must count DATALEN bytes."""
    meter = SmartMeter(seed=5, overrides={0xE7: b"\x0d\x0a\x20\x0d"})
    module = make_module("bp35a1", meter=meter)
    host = connect(module)
    setup_and_join(host, module)
    host.send(sendto(module, GET_E7))
    assert host.lines(3) == ["", "EVENT 21 %s 00" % METER, "OK"]   # SFE=0: bare CR LF
    fields, payload = host.binary_erxudp(8)
    assert fields[-1] == "0012" and payload.endswith(b"\xe7\x04\x0d\x0a\x20\x0d")


# ---------------------------------------------------------------------------
# The seeds: a real RL7023 Stick-D/IPS session (seed 002) and its meter values
# ---------------------------------------------------------------------------
def test_seed_002_scan_output(connect):
    """The user's IPS scan log: EVER 1.2.8, EVENT 20/22 from the module's own address."""
    module = make_module("ips", mac="103456789ABCDEF0", meter_mac="00FFEEDDCCBBAA99",
                         channel=0x33, pan_id=0x24EF, lqi=0x32, pairing_id="12345678",
                         route_b_id="AAAABBBB12345678", password="PASSWORDDDDD")
    host = connect(module)
    assert host.command("SKVER", 3) == ["SKVER", "EVER 1.2.8", "OK"]
    host.send(b"SKSETPWD C PASSWORDDDDD\r\nSKSETRBID AAAABBBB12345678\r\n")
    assert host.lines(4) == ["SKSETPWD C PASSWORDDDDD", "OK", "SKSETRBID AAAABBBB12345678", "OK"]
    assert host.command("SKSCAN 2 FFFFFFFF 4", 11) == """\
SKSCAN 2 FFFFFFFF 4
OK
EVENT 20 FE80:0000:0000:0000:1234:5678:9ABC:DEF0
EPANDESC
  Channel:33
  Channel Page:09
  Pan ID:24EF
  Addr:00FFEEDDCCBBAA99
  LQI:32
  PairID:12345678
EVENT 22 FE80:0000:0000:0000:1234:5678:9ABC:DEF0""".split("\n")
    # The seed derives the meter's address by flipping the U/L bit, as SKLL64 does.
    host.send(b"SKLL64 00FFEEDDCCBBAA99\r\n")
    assert host.lines(2)[1] == "FE80:0000:0000:0000:02FF:EEDD:CCBB:AA99"


def _seed_script_read(host: Host, module: WisunModule, epc: int) -> str:
    """What seed 004's script does: Get one EPC, take cols[8] of ERXUDP, check SEOJ/ESV/EPC."""
    frame = bytes.fromhex("1081000105FF0102880162") + bytes([1, epc, 0])
    host.send(sendto(module, frame))
    host.lines(3)                                    # CR LF, EVENT 21, OK
    cols = host.line().strip().split(" ")
    res = cols[8]
    assert res[8:14] == "028801" and res[20:22] == "72" and res[24:26] == "%02X" % epc
    return res


PINNED = {
    # seed 002's table (RL7023 IPS, 2018-07-29 23:00)
    "seed002": ({0xE7: "0000073C", 0xE8: "0046006E", 0xE0: "00003354", 0xE3: "00000015",
                 0xEA: "07E2071D17000000003354", 0xEB: "07E2071D17000000000015"},
                {"E7": 1852, "E8r": 7.0, "E8t": 11.0, "E0": 13140, "E3": 21}),
    # seed 004's printed line "E7:686 E8r:7.0 E8t:1.0 E0:86704 E3:10"
    "seed004": ({0xE7: "000002AE", 0xE8: "0046000A", 0xE0: "000152B0", 0xE3: "0000000A"},
                {"E7": 686, "E8r": 7.0, "E8t": 1.0, "E0": 86704, "E3": 10}),
}


@pytest.mark.parametrize("case", sorted(PINNED))
def test_seed_values_through_the_seed_script_parsing(connect, case):
    overrides, expected = PINNED[case]
    meter = SmartMeter(seed=5, reverse=True, overrides={epc: bytes.fromhex(edt)
                                                        for epc, edt in overrides.items()})
    module = make_module("ips", meter=meter)
    host = connect(module)
    setup_and_join(host, module)
    res = _seed_script_read(host, module, 0xE7)
    assert int(res[-8:], 16) == expected["E7"]
    res = _seed_script_read(host, module, 0xE8)
    assert round(int(res[-8:-4], 16) * 0.1, 1) == expected["E8r"]
    assert round(int(res[-4:], 16) * 0.1, 1) == expected["E8t"]
    assert int(_seed_script_read(host, module, 0xE0)[-8:], 16) == expected["E0"]
    assert int(_seed_script_read(host, module, 0xE3)[-8:], 16) == expected["E3"]
    if 0xEA in overrides:
        for epc in (0xEA, 0xEB):
            value = el.decode_fixed_time(bytes.fromhex(_seed_script_read(host, module, epc)[-22:]), epc)
            assert value.timestamp == datetime.datetime(2018, 7, 29, 23, 0, 0)
        assert value.raw == 21


# ---------------------------------------------------------------------------
# Echo, framing, product commands, registers
# ---------------------------------------------------------------------------
def test_echo_is_streamed_and_follows_sfe(connect):
    module = make_module("bp35c2")
    host = connect(module)
    host.send(b"SKV")
    assert host.read_exact(3) == b"SKV"                # echoed as it arrives
    host.send(b"ER\r\n")
    assert host.lines(3) == ["ER", "EVER 1.5.2", "OK"]     # the rest of the echo
    host.send(b"\r\n")                                  # empty line: echo only
    assert host.line() == ""
    assert host.command("SKSREG SFE 0", 2) == ["SKSREG SFE 0", "OK"]   # echoed itself
    assert host.command("SKVER", 2) == ["EVER 1.5.2", "OK"]
    host.send(b"\r\n\r\n")
    host.quiet(0.1)
    assert host.command("SKRESET", 1) == ["OK"]
    assert module.sfe == 1
    assert host.command("SKVER", 3) == ["SKVER", "EVER 1.5.2", "OK"]


def test_sendto_payload_is_never_echoed_and_may_arrive_in_pieces(connect):
    module = make_module("bp35a1")
    host = connect(module)
    setup_and_join(host, module, sfe=1)
    host.send(b"WOPT 01\r")
    host.read_exact(11)
    request = sendto(module, GET_E7)
    for index in range(len(request)):                   # byte by byte
        host.send(request[index:index + 1])
    assert host.lines(3) == ["SKSENDTO 1 %s 0E1A 1 000E " % METER, "EVENT 21 %s 00" % METER, "OK"]
    assert host.line().startswith("ERXUDP ")
    host.send(sendto(module, GET_E7) + b"\r\n")        # a stray CR LF after the payload
    assert host.lines(3)[2] == "OK"
    assert host.line().startswith("ERXUDP ")
    assert host.line() == ""                             # the stray CR LF: echo of an empty line
    host.quiet(0.1)


@pytest.mark.parametrize("kind,ropt", [("bp35a1", b"OK 00\r"), ("bp35c2", b"OK 00\r")])
def test_product_commands_on_rohm_kinds(connect, kind, ropt):
    module = make_module(kind)
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    host.send(b"ROPT\r")
    assert host.read_exact(len(ropt)) == ropt
    host.send(b"WOPT 01\r")
    assert host.read_exact(3) == b"OK\r"
    host.send(b"RUART\r")
    assert host.read_exact(6) == b"OK 00\r"
    host.send(b"WUART 03\r")
    assert host.read_exact(3) == b"OK\r"
    host.send(b"WOPT 07\r")
    assert host.read_exact(10) == b"FAIL ER06\r"
    host.send(b"WOPT\r")
    assert host.read_exact(10) == b"FAIL ER05\r"
    host.command("SKRESET", 1)                           # WOPT lives in flash
    host.send(b"ROPT\r")
    assert host.read_exact(11) == b"ROPT\rOK 01\r"      # SFE is back to 1


@pytest.mark.parametrize("kind", ["ips", "dss"])
def test_rl7023_has_no_product_commands(connect, kind):
    module = make_module(kind)
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    for command in (b"ROPT\r", b"WOPT 01\r", b"RUART\r"):
        host.send(command)
        assert host.line() == "FAIL ER04"


def test_einfo_fifth_parameter_tells_the_stack(connect):
    for kind, spec in MODULE_KINDS.items():
        module = make_module(kind, mac=spec.mac_prefix.ljust(16, "0"))
        host = connect(module)
        einfo = host.command("SKINFO", 3)[1].split()
        assert einfo[0] == "EINFO" and len(einfo) == 6
        assert einfo[1] == link_local(einfo[2])
        assert einfo[5] == ("0" if spec.dual else "FFFE"), kind


def test_register_reads_and_writes(connect):
    module = make_module("bp35a1")
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    expected = {"S2": "21", "S02": "21", "S3": "FFFF", "S0A": "CCDDEEFF", "S16": "00000384",
                "S17": "1", "SFE": "0", "SFB": "0", "SFD": "0" * 16, "S1": OWN_MAC, "sa2": "0"}
    for register, value in expected.items():
        assert host.command("SKSREG " + register, 2) == ["ESREG " + value, "OK"], register
    host.command("SKSETRBID 0123456789ABCDEF0123456789ABCDEF", 1)
    assert host.command("SKSREG S0A", 2)[0] == "ESREG 89ABCDEF"   # last 8 characters
    assert host.command("SKSREG S3 a", 1) == ["OK"]                # short, lower-case hex
    assert host.command("SKSREG S3", 2)[0] == "ESREG 000A"
    assert host.command("SKSREG S16 3C", 1) == ["OK"]              # BP35A1 minimum
    for bad in ("SKSREG S2 3D", "SKSREG S2 G1", "SKSREG S99", "SKSREG X2", "SKSREG S1 01",
                "SKSREG SFB 1", "SKSREG SFD 5", "SKSREG S16 3B", "SKSREG S0B",
                "SKSREG S1C", "SKSREG S1F"):                   # dual-only
        assert host.command(bad, 1) == ["FAIL ER06"], bad
    assert host.command("SKSREG SFD 0", 1) == ["OK"]


def test_dual_stack_register_limits(connect):
    module = make_module("bp35c2")
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    assert host.command("SKSREG S16 3C", 1) == ["FAIL ER06"]       # DSS/C2 minimum is 60
    assert host.command("SKSREG S16 60", 1) == ["OK"]
    assert host.command("SKSREG SF0", 2) == ["ESREG 0", "OK"]
    # Every read is one fixed-width token, never empty (keilog takes split()[1])
    assert host.command("SKSREG S0B", 2) == ["ESREG " + "0" * 16, "OK"]
    assert host.command("SKSREG S1C", 2) == ["ESREG 00278D00", "OK"]
    assert host.command("SKSREG S1F", 2) == ["ESREG " + "0" * 16, "OK"]
    assert host.command("SKSREG S1F 01", 1) == ["FAIL ER06"]        # read-only
    assert host.command("SKSREG S1C 5F", 1) == ["FAIL ER06"]        # below 0x60
    assert host.command("SKSREG S0B 0123456789ABCDEF", 1) == ["OK"]
    assert host.command("SKSREG S0B", 2) == ["ESREG 0123456789ABCDEF", "OK"]


# ---------------------------------------------------------------------------
# Error codes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind,command,code", [
    ("bp35a1", "SKFOO", "ER04"),
    ("bp35a1", "skver", "ER04"),                      # command names are upper case
    ("bp35a1", "SKSTART", "ER04"),                    # not emulated
    ("bp35a1", "SKVER 1", "ER05"),
    ("bp35a1", "SKSCAN 2 FFFFFFFF 6 0", "ER05"),      # single stack: no SIDE
    ("bp35c2", "SKSCAN 2 FFFFFFFF 6", "ER05"),        # dual stack: SIDE required
    ("bp35a1", "SKSETRBID", "ER05"),
    ("bp35a1", "SKSCAN 5 FFFFFFFF 6", "ER06"),
    ("bp35a1", "SKSCAN 2 FFFFFFFF F", "ER06"),
    ("bp35a1", "SKSCAN 2 FFFFFFFFF 6", "ER06"),
    ("bp35c2", "SKSCAN 2 FFFFFFFF 6 2", "ER06"),
    ("bp35a1", "SKLL64 001D1290123456", "ER06"),
    ("bp35a1", "SKJOIN FE80::1", "ER06"),             # addresses only in full colon form
    ("bp35a1", "SKSETPWD 21 0123456789AB", "ER06"),
    ("bp35a1", "SKSETPSK 0F 00112233445566778899AABBCCDDEEFF", "ER06"),
    ("bp35a1", "SKTABLE 7", "ER06"),
    ("bp35a1", "SKTERM", "ER10"),                     # no session
    ("bp35a1", "SKREJOIN", "ER10"),
])
def test_error_codes(connect, kind, command, code):
    module = make_module(kind)
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    assert host.command(command, 1) == ["FAIL " + code]
    assert host.command("SKVER", 2)[1] == "OK"        # the module carries on


def test_sendto_errors(connect):
    module = make_module("bp35a1")
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    host.send(sendto(module, GET_E7, handle=3))        # handle 3 has no port
    assert host.lines(2) == ["", "FAIL ER10"]
    host.send(b"SKSENDTO 1 %s E1A 1 000E " % METER.encode() + GET_E7)   # PORT must be 4 chars
    assert host.lines(2) == ["", "FAIL ER06"]
    host.send(b"SKSENDTO 1 FE80::1 0E1A 1 000E " + GET_E7)
    assert host.lines(2) == ["", "FAIL ER06"]
    host.send(b"SKSENDTO 1 %s 0E1A 1 0 000E " % METER.encode())   # dual syntax on single: LEN "0"
    assert host.line() == "FAIL ER06"
    host.send(b"\r\n")                                   # what followed is just a bad line
    assert host.line() == "FAIL ER04"
    host.send(b"SKSENDTO 1 %s 0E1A 1 000E " % METER.encode() + GET_E7)
    assert host.lines(3) == ["", "EVENT 21 %s 01" % METER, "OK"]  # SEC=1, no session: not sent
    host.send(b"SK" + b"X" * 1100 + b"\r\n")
    assert host.line() == "FAIL ER09"


def test_sktable_and_udp_handles(connect):
    module = make_module("bp35a1")
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    assert host.command("SKTABLE E", 13) == ["EPORT", "3610", "716", "0", "0", "0", "0", "",
                                            "3610", "0", "0", "0", "OK"]
    assert host.command("SKUDPPORT 3 0E1A", 1) == ["OK"]
    assert host.command("SKTABLE 1", 3) == ["EADDR", OWN, "OK"]
    assert host.command("SKADDNBR %s %s" % (METER, METER_MAC), 1) == ["OK"]
    assert host.command("SKTABLE 2", 3) == ["ENEIGHBOR", "%s %s FFFF" % (METER, METER_MAC), "OK"]


# ---------------------------------------------------------------------------
# Scan, join, ping
# ---------------------------------------------------------------------------
def test_scan_finds_the_meter_only_from_the_minimum_duration(connect):
    module = make_module("bp35a1", scan_min=6)
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    host.command("SKSETRBID " + RBID, 1)
    for duration in (4, 5):
        assert host.command("SKSCAN 2 FFFFFFFF %d" % duration, 2) == ["OK", "EVENT 22 " + OWN]
    assert host.command("SKSCAN 2 FFFFFFFF 6", 10)[-1] == "EVENT 22 " + OWN
    # A mask without the meter's channel (0x21 = bit 0) finds nothing.
    assert host.command("SKSCAN 2 FFFFFFFE 6", 2) == ["OK", "EVENT 22 " + OWN]


def test_scan_mode_2_needs_the_pairing_id_and_mode_3_does_not(connect):
    module = make_module("bp35a1")
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    host.command("SKSETRBID 0000000000000000000000000000BEEF", 1)    # Pairing ID 0000BEEF
    assert host.command("SKSCAN 2 FFFFFFFF 6", 2) == ["OK", "EVENT 22 " + OWN]
    lines = host.command("SKSCAN 3 FFFFFFFF 6", 9)
    assert lines[2] == "EPANDESC" and lines[-2] == "  LQI:E1"          # no PairID line
    assert lines[-1] == "EVENT 22 " + OWN


def test_energy_detect_scan(connect):
    module = make_module("bp35c2")
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    lines = host.command("SKSCAN 0 3 4 0", 4)
    assert lines[:3] == ["OK", "EVENT 1F %s 0" % module.address, "EEDSCAN"]
    side, ch1, rssi1, ch2, _ = lines[3].split()
    assert (side, ch1, rssi1, ch2) == ("0", "21", "E1", "22")


def test_scan_timing_follows_duration(fake_clock, connect):
    """D=6 on channel 3B: EVENT 20 after ~26 dwells of 0.64 s, EVENT 22 after 28 (section 3.8)."""
    module = make_module("bp35a1", clock=fake_clock, latency="realistic", channel=0x3B)
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    host.command("SKSETRBID " + RBID, 1)
    assert host.command("SKSCAN 2 FFFFFFFF 6", 1) == ["OK"]
    dwell = 0.0096 * 65 + 0.02
    fake_clock.advance(dwell * 26 - 0.01)
    host.quiet(0.05)
    fake_clock.advance(dwell)
    assert host.line() == "EVENT 20 " + OWN
    fake_clock.advance(dwell)
    assert host.lines(7)[0] == "EPANDESC"
    host.quiet(0.03)
    fake_clock.advance(dwell)
    assert host.line() == "EVENT 22 " + OWN


def test_join_with_wrong_password_ends_in_event_24(connect):
    module = make_module("bp35a1")
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    host.send(b"SKSETRBID %s\r\nSKSETPWD C WRONGPASSWRD\r\nSKSREG S2 21\r\nSKSREG S3 8888\r\n"
              % RBID.encode())
    host.lines(4)
    host.send(("SKJOIN %s\r\n" % METER).encode())
    lines = host.until("EVENT 24")
    assert "EVENT 25 " + METER not in lines
    assert [line.split()[7] for line in lines if line.startswith("ERXUDP")][-1] == "0028"  # PAR-C reject
    assert not module.session_up
    assert host.command("SKTERM", 1) == ["FAIL ER10"]


def test_join_with_wrong_route_b_id_ends_in_event_24(connect):
    module = make_module("ips")
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    host.send(b"SKSETRBID %s\r\nSKSETPWD C %s\r\nSKSREG S2 21\r\nSKSREG S3 8888\r\n"
              % (b"FFEEDDCCBBAA99887766554433221100", PWD.encode()))
    assert host.lines(4) == ["OK"] * 4
    host.send(("SKJOIN %s\r\n" % METER).encode())
    lines = host.until("EVENT 24")
    assert lines[-1] == "EVENT 24 " + METER and "EVENT 25 " + METER not in lines
    assert [line.split()[7] for line in lines if line.startswith("ERXUDP")][-1] == "0028"  # PAR-C reject
    assert not module.session_up
    host.quiet(0.1)


def test_join_on_the_wrong_channel_gets_no_answer(connect):
    module = make_module("bp35a1")
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    host.send(b"SKSETRBID %s\r\nSKSETPWD C %s\r\nSKSREG S2 22\r\n" % (RBID.encode(), PWD.encode()))
    host.lines(3)
    host.send(("SKJOIN %s\r\n" % METER).encode())
    assert host.lines(3) == ["OK", "EVENT 21 %s 02" % METER, "EVENT 24 " + METER]


def test_rejoin_and_ping(connect):
    module = make_module("bp35a1")
    host = connect(module)
    setup_and_join(host, module)
    host.send(b"SKREJOIN\r\n")
    lines = host.until("EVENT 25")
    assert lines[0] == "OK" and len([line for line in lines if line.startswith("ERXUDP")]) == 4
    assert host.command("SKPING " + METER, 2) == ["OK", "EPONG " + METER]
    assert host.command("SKPING FE80:0000:0000:0000:0000:0000:0000:0001", 1) == ["OK"]
    host.quiet(0.1)


def test_realistic_sendto_latency_and_busy_backlog(fake_clock, connect):
    module = make_module("bp35a1", clock=fake_clock, latency="realistic")
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    host.send(b"SKSETRBID %s\r\nSKSETPWD C %s\r\nSKSREG S2 21\r\nSKSREG S3 8888\r\n"
              % (RBID.encode(), PWD.encode()))
    host.lines(4)
    host.send(("SKJOIN %s\r\n" % METER).encode())
    assert host.line() == "OK"
    fake_clock.advance(0.12)
    assert host.lines(2) == ["EVENT 21 %s 02" % METER, "EVENT 02 " + METER]
    # Four PANA round trips are due by then, EVENT 25 not (OK -> 25: 2.2..3.6 s).
    fake_clock.advance(2.0)
    lines = []
    while lines.count("EVENT 21 %s 00" % METER) < 4:
        lines.append(host.line())
    assert [line.split()[3] for line in lines if line.startswith("ERXUDP")] == ["02CC"] * 4
    host.quiet(0.05)
    fake_clock.advance(1.6)
    assert host.line() == "EVENT 25 " + METER
    host.send(sendto(module, GET_E7) + b"SKVER\r\n")   # SKVER waits in the UART buffer
    assert host.line() == ""
    host.quiet(0.05)
    fake_clock.advance(0.35)
    assert host.lines(4) == ["EVENT 21 %s 00" % METER, "OK", "EVER 1.2.10", "OK"]
    fake_clock.advance(0.5)
    fields, _ = host.binary_erxudp(8)
    assert fields[3] == "0E1A"


# ---------------------------------------------------------------------------
# Time-driven behaviour: notifications, lifetime, transmit-time limit
# ---------------------------------------------------------------------------
def test_half_hourly_ea_eb_notification(fake_clock, connect):
    meter = SmartMeter(seed=5, reverse=True)
    module = make_module("ips", clock=fake_clock, meter=meter)
    host = connect(module)
    setup_and_join(host, module)
    fake_clock.advance(1800)                           # 14:00 -> 14:30
    fields = host.line().split()
    assert fields[:8] == ["ERXUDP", METER, OWN, "0E1A", "0E1A", METER_MAC, "1", "0026"]
    frame = el.Frame.decode(bytes.fromhex(fields[8]))
    assert frame.esv == el.ESV.INF and [p.epc for p in frame.properties] == [0xEA, 0xEB]
    stamp = el.decode_fixed_time(frame.properties[0].edt, 0xEA).timestamp
    assert stamp == datetime.datetime(2026, 5, 20, 14, 30)


def test_session_lifetime_end_reauthenticates(fake_clock, connect):
    module = make_module("bp35c2", clock=fake_clock, lifetime=600)
    host = connect(module)
    setup_and_join(host, module)
    host.send(b"WOPT 01\r")
    host.read_exact(3)
    fake_clock.advance(600)
    lines = host.until("EVENT 25", timeout=5)
    assert lines[0] == "EVENT 29 %s 0" % METER
    assert lines[-1] == "EVENT 25 %s 0" % METER and module.session_up
    module.inject("session_expiry", reauth="fail")
    lines = host.until("EVENT 24")
    assert lines[0] == "EVENT 29 %s 0" % METER and not module.session_up


def test_transmit_time_accounting_raises_event_32_and_33(fake_clock, connect):
    module = make_module("ips", clock=fake_clock, tx_budget_ms=30)
    host = connect(module)
    setup_and_join(host, module)                       # 5 PANA frames: ~26 ms of airtime
    host.send(sendto(module, GET_E7))
    assert host.lines(4)[1:] == ["EVENT 21 %s 00" % METER, "EVENT 32 " + OWN, "OK"]
    assert host.line().startswith("ERXUDP ")
    assert host.command("SKSREG SFB", 2) == ["ESREG 1", "OK"]
    assert int(host.command("SKSREG SFD", 2)[0].split()[1], 16) >= 30
    host.send(sendto(module, GET_E7))
    assert host.lines(3) == ["", "EVENT 21 %s 01" % METER, "OK"]   # refused while limited
    fake_clock.advance(3600)                           # (the meter's two INF come too)
    assert host.until("EVENT 33")[-1] == "EVENT 33 " + OWN
    assert host.command("SKSREG SFB", 2) == ["ESREG 0", "OK"]


# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------
def test_fault_out_of_range(connect):
    module = make_module("bp35a1")
    host = connect(module)
    setup_and_join(host, module)
    module.inject("out_of_range")
    host.send(sendto(module, GET_E7))
    assert host.lines(3) == ["", "EVENT 21 %s 01" % METER, "OK"]
    host.command("SKSETRBID " + RBID, 1)
    assert host.command("SKSCAN 2 FFFFFFFF 6", 2) == ["OK", "EVENT 22 " + OWN]
    module.inject("out_of_range", on=False)
    host.send(sendto(module, GET_E7))
    assert host.lines(3)[1] == "EVENT 21 %s 00" % METER
    host.binary_erxudp(8)


def test_fault_silent_meter(connect):
    module = make_module("bp35a1")
    host = connect(module)
    setup_and_join(host, module)
    module.inject("silent")
    host.send(sendto(module, GET_E7))
    assert host.lines(3) == ["", "EVENT 21 %s 00" % METER, "OK"]   # MAC ACK, no answer
    host.quiet(0.1)
    assert host.command("SKTERM", 3) == ["OK", "EVENT 21 %s 00" % METER, "EVENT 28 " + METER]


def test_fault_join_failures_then_success(connect):
    module = make_module("bp35a1", join_failures=1)
    host = connect(module)
    host.command("SKSREG SFE 0", 2)
    host.send(b"SKSETRBID %s\r\nSKSETPWD C %s\r\nSKSREG S2 21\r\nSKSREG S3 8888\r\n"
              % (RBID.encode(), PWD.encode()))
    host.lines(4)
    host.send(("SKJOIN %s\r\n" % METER).encode())
    assert host.until("EVENT 24")[-1] == "EVENT 24 " + METER
    host.send(("SKJOIN %s\r\n" % METER).encode())
    assert host.until("EVENT 25")[-1] == "EVENT 25 " + METER


def test_fault_peer_terminates(connect):
    module = make_module("bp35a1")
    host = connect(module)
    setup_and_join(host, module)
    host.send(b"WOPT 01\r")
    host.read_exact(3)
    module.inject("peer_terminate")
    fields = host.line().split()
    assert fields[3:5] == ["02CC", "02CC"] and fields[8][8:16] == "80000004"   # PANA PTR
    assert host.line() == "EVENT 26 " + METER
    assert not module.session_up


def test_fault_tx_limit_for_a_while(fake_clock, connect):
    module = make_module("bp35c2", clock=fake_clock)
    host = connect(module)
    setup_and_join(host, module)
    module.inject("tx_limit", seconds=120)
    assert host.line() == "EVENT 32 %s 0" % OWN
    host.send(sendto(module, GET_E7))
    assert host.lines(3) == ["", "EVENT 21 %s 0 01" % METER, "OK"]
    fake_clock.advance(119)
    host.quiet(0.05)
    fake_clock.advance(1)
    assert host.line() == "EVENT 33 %s 0" % OWN


def test_fault_garbage(connect):
    module = make_module("bp35a1")
    host = connect(module)
    module.inject("garbage")
    assert host.line() == b"\x00\xff\xfe\x80 EVE\xe3\x81\x82#%".decode("latin-1")
    module.inject("garbage", data=b"\x01\x02junk")
    assert host.read_exact(6) == b"\x01\x02junk"


@pytest.mark.parametrize("mode", ["truncated", "malformed"])
def test_fault_bad_erxudp(connect, mode):
    module = make_module("ips")
    host = connect(module)
    setup_and_join(host, module)
    module.inject("bad_erxudp", mode=mode)
    host.send(sendto(module, GET_E7))
    host.lines(3)
    fields = host.line().split()
    if mode == "truncated":
        assert len(fields) == 9 and len(fields[8]) < 2 * int(fields[7], 16)
    else:
        assert len(fields) < 9 and not all(c in "0123456789ABCDEF" for c in fields[-1])
    host.send(sendto(module, GET_E7))                  # the next reply is sound again
    host.lines(3)
    fields = host.line().split()
    assert len(fields[8]) == 2 * int(fields[7], 16) == 36


def test_fault_delayed_and_duplicated_replies(fake_clock, connect):
    module = make_module("ips", clock=fake_clock)
    host = connect(module)
    setup_and_join(host, module)
    module.inject("delay_reply", seconds=30)
    host.send(sendto(module, GET_E7))
    host.lines(3)
    host.quiet(0.05)
    fake_clock.advance(30)
    assert host.line().startswith("ERXUDP ")
    module.inject("duplicate_reply")
    host.send(sendto(module, GET_E7))
    host.lines(3)
    first, second = host.line(), host.line()
    assert first == second and first.startswith("ERXUDP ")


def test_fault_module_reset(connect):
    module = make_module("bp35a1")
    host = connect(module)
    setup_and_join(host, module)
    module.inject("reset")                             # unsolicited, prints nothing
    assert module.sfe == 1 and not module.session_up
    assert host.command("SKTERM", 2) == ["SKTERM", "FAIL ER10"]


def test_fault_table_is_complete():
    module = make_module("bp35a1")
    try:
        assert set(FAULT_ARGS) == set(FAULTS)
        for name, (method, description) in FAULTS.items():
            assert description and callable(getattr(module, method)), name
            assert name in CONTROL_GRAMMAR
        for name in ("unplug", "replug"):              # nothing bound to pull
            with pytest.raises(ValueError, match="transport"):
                module.inject(name)
        with pytest.raises(ValueError, match="unknown fault"):
            module.inject("meteor_strike")
    finally:
        module.close()


# ---------------------------------------------------------------------------
# Faults as text commands (control(): what the CLI's --control reads)
# ---------------------------------------------------------------------------
def test_control_commands_switch_faults(connect):
    module = make_module("ips")
    host = connect(module)
    setup_and_join(host, module)
    module.control("silent on")
    assert module.silent
    module.control("silent off")
    module.control("out_of_range 1")
    assert module.out_of_range
    module.control("out_of_range off")
    module.control("duplicate_reply")
    module.control("bad_erxudp malformed 1")
    host.send(sendto(module, GET_E7))
    host.lines(3)
    assert host.line() == host.line()                   # duplicated
    host.send(sendto(module, GET_E7))
    host.lines(3)
    assert len(host.line().split()) < 9                # malformed
    module.control("garbage 41420D0A")
    assert host.line() == "AB"
    module.control("tx_limit 30")
    assert host.line() == "EVENT 32 " + OWN
    module.control("peer_terminate")
    host.line()                                        # the PANA PTR
    assert host.line() == "EVENT 26 " + METER
    module.control("reset")
    assert module.sfe == 1 and not module.tx_restricted


@pytest.mark.parametrize("command,message", [
    ("", "empty command"),
    ("meteor", "unknown fault 'meteor'; expected out_of_range [on|off] |"),
    ("silent maybe", "bad value 'maybe' for on (expected on or off); usage: silent [on|off]"),
    ("tx_limit 5 6", "tx_limit takes at most 1 argument(s); usage: tx_limit [S]"),
    ("tx_limit -1", "bad value '-1' for seconds"),
    ("bad_erxudp sideways", "expected one of truncated|malformed"),
    ("delay_reply 3 0", "bad value '0' for count"),
    ("garbage xyz", "expected hex digits"),
    ("unplug", "fault 'unplug' needs a transport"),
])
def test_control_rejects_bad_commands(command, message):
    module = make_module("ips")
    try:
        with pytest.raises(ValueError) as info:
            module.control(command)
        assert message in str(info.value)
    finally:
        module.close()


# ---------------------------------------------------------------------------
# Faults set at start (WISUN_OPTIONS: the sim:// URL and the CLI's --option)
# ---------------------------------------------------------------------------
URL = ("sim://wisun?kind=ips&latency=zero&id=%s&password=%s&mac=%s&meter_mac=%s&channel=21&pan=8888"
       % (RBID, PWD, OWN_MAC, METER_MAC))


@pytest.fixture
def url_host():
    """url_host('opt=value&...') -> (Host, module) on a named sim:// port."""
    keilib.sim.register_url_handler()
    ports = []

    def _open(options: str):
        name = "wisun-options-%d" % len(ports)
        port = serial.serial_for_url("%s&name=%s&%s" % (URL, name, options), timeout=0.05)
        ports.append(port)
        return Host(port), protocol_sim.get_device(name)

    yield _open
    for port in ports:
        port.close()
    protocol_sim.forget_all()


def test_start_option_terminate_after(url_host):
    host, module = url_host("terminate_after=0.2")
    started = time.monotonic()
    setup_and_join(host, module)
    lines = host.until("EVENT 26")
    assert lines[-1] == "EVENT 26 " + METER and lines[0].split()[3] == "02CC"   # PANA PTR first
    assert time.monotonic() - started >= 0.2 and not module.session_up
    host.send(("SKJOIN %s\r\n" % METER).encode())     # once only: the next session stays
    host.until("EVENT 25")
    assert host.line().startswith("ERXUDP ")          # the instance-list INF
    host.quiet(0.4)
    assert module.session_up


def test_start_option_tx_limit_after_and_for(url_host):
    host, module = url_host("tx_limit_after=0&tx_limit_for=0.5")
    setup_and_join(host, module)
    assert host.line() == "EVENT 32 " + OWN
    host.send(sendto(module, GET_E7))
    assert host.lines(3) == ["", "EVENT 21 %s 01" % METER, "OK"]   # refused meanwhile
    assert host.line() == "EVENT 33 " + OWN
    host.send(sendto(module, GET_E7))
    assert host.lines(3)[1] == "EVENT 21 %s 00" % METER
    assert host.line().startswith("ERXUDP ")


def test_start_option_garbage_every(url_host):
    host, module = url_host("garbage_every=0.05")
    junk = b"\x00\xff\xfe\x80 EVE\xe3\x81\x82#%".decode("latin-1")
    assert host.lines(3) == [junk] * 3                  # from the start, no session needed


@pytest.mark.parametrize("option,corrupt", [("truncated", 1), ("truncated:2", 2), ("malformed:2", 2)])
def test_start_option_bad_erxudp(url_host, option, corrupt):
    host, module = url_host("bad_erxudp=" + option)
    setup_and_join(host, module)                       # the instance-list INF is not a reply
    for index in range(corrupt + 1):
        host.send(sendto(module, GET_E7))
        host.lines(3)
        fields = host.line().split()
        sound = len(fields) == 9 and len(fields[8]) == 2 * int(fields[7], 16) == 36
        assert sound == (index == corrupt), (index, fields)
        if not sound and option.startswith("truncated"):
            assert len(fields) == 9 and 0 < len(fields[8]) < 2 * int(fields[7], 16)


def test_start_option_delay_reply(url_host):
    host, module = url_host("delay_reply=0.4:1")
    setup_and_join(host, module)
    host.send(sendto(module, GET_E7))
    sent = time.monotonic()
    host.lines(3)
    host.quiet(0.2)
    assert host.line().startswith("ERXUDP ") and time.monotonic() - sent >= 0.4
    host.send(sendto(module, GET_E7))                  # only the first reply was late
    host.lines(3)
    assert host.line(timeout=0.3).startswith("ERXUDP ")


def test_start_option_duplicate_reply(url_host):
    host, module = url_host("duplicate_reply=1")
    setup_and_join(host, module)
    host.send(sendto(module, GET_E7))
    host.lines(3)
    first, second = host.line(), host.line()
    assert first == second and first.startswith("ERXUDP ")
    host.send(sendto(module, GET_E7))
    host.lines(3)
    assert host.line().startswith("ERXUDP ")
    host.quiet(0.1)


def test_start_option_reset_after(url_host):
    host, module = url_host("reset_after=0.1")
    setup_and_join(host, module)
    wait_for(lambda: not module.session_up, 3.0, message="the scheduled reset")
    assert module.sfe == 1                             # power-on state: echo back on
    assert host.command("SKTERM", 2) == ["SKTERM", "FAIL ER10"]
    host.quiet(0.05)


def test_start_option_unplug_after_and_for(url_host):
    host, module = url_host("unplug_after=0.1&unplug_for=0.4")
    setup_and_join(host, module)
    unplugged = time.monotonic()
    with pytest.raises(serial.SerialException):
        host.line(timeout=3.0)                         # the port dies under the reader
    name = "wisun-options-0"
    url = "%s&name=%s" % (URL, name)

    def reopened():
        try:
            return serial.serial_for_url(url, timeout=0.05)
        except serial.SerialException as exc:
            assert "unplugged" in str(exc)
            return None
    port = wait_for(reopened, 3.0, message="the device to come back")
    try:
        assert time.monotonic() - unplugged >= 0.3
        host = Host(port)
        assert host.command("SKVER", 3) == ["SKVER", "EVER 1.2.8", "OK"]   # powered up afresh
        assert not module.session_up
    finally:
        port.close()


def test_unplug_option_needs_a_named_sim_port():
    keilib.sim.register_url_handler()
    with pytest.raises(serial.SerialException, match="needs a named device"):
        serial.serial_for_url(URL + "&unplug_after=1", timeout=0.05)


@pytest.mark.parametrize("option,message", [
    ("terminate_after=-1", "bad value '-1' for option 'terminate_after' (must be a number of seconds >= 0)"),
    ("tx_limit_after=soon", "bad value 'soon' for option 'tx_limit_after'"),
    ("tx_limit_for=5", "option 'tx_limit_for' needs 'tx_limit_after'"),
    ("garbage_every=0", "bad value '0' for option 'garbage_every' (must be positive)"),
    ("bad_erxudp=sideways", "bad value 'sideways' for option 'bad_erxudp' (expected truncated[:N]"),
    ("bad_erxudp=truncated:0", "bad value 'truncated:0' for option 'bad_erxudp'"),
    ("delay_reply=3:x", "bad value '3:x' for option 'delay_reply'"),
    ("delay_reply=0", "bad value '0' for option 'delay_reply' (must be positive)"),
    ("duplicate_reply=0", "bad value '0' for option 'duplicate_reply' (must be a whole number >= 1)"),
    ("reset_after=inf", "bad value 'inf' for option 'reset_after'"),
    ("unplug_for=2", "option 'unplug_for' needs 'unplug_after'"),
    ("unplug_after=1&unplug_for=-2", "bad value '-2' for option 'unplug_for'"),
])
def test_bad_start_option_values_are_refused(option, message):
    options = dict(item.split("=", 1) for item in option.split("&"))
    with pytest.raises(ValueError) as info:
        from_options(options)
    assert message in str(info.value) and "sim://wisun?kind=" in str(info.value)
    keilib.sim.register_url_handler()
    with pytest.raises(serial.SerialException) as info:
        serial.serial_for_url("sim://wisun?" + option, timeout=0.05)
    assert message in str(info.value)


def test_constructor_checks_fault_arguments():
    for kwargs in ({"terminate_after": -1}, {"tx_limit_for": 0}, {"bad_erxudp": ("sideways", 1)},
                   {"delay_reply": (1.0, 0)}, {"duplicate_reply": -1}, {"unplug_for": 0}):
        with pytest.raises(ValueError):
            make_module("ips", **kwargs)


def test_parse_hex_accepts_short_and_lower_case():
    assert parse_hex("c", 2) == 0x0C and parse_hex("2", 2) == 2 and parse_hex("0021", 4) == 0x21
    assert link_local("001C640003DD6393") == "FE80:0000:0000:0000:021C:6400:03DD:6393"
