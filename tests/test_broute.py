"""BrouteReader against the simulated module and meter, via sim:// and over a real pty.

Every test runs the real driver, the real reader and a real FileRecorder into
a temporary directory, and compares what was recorded with what the
simulated meter says it sent.
"""

from __future__ import annotations

import itertools
import logging
import queue
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import serial

from keilib.broute import BrouteReader, State
from keilib.clock import ScaledClock
from keilib.errors import ConfigError
from keilib.recorder import FileRecorder
from keilib.sim import protocol_sim, register_url_handler
from keilib.sim.meter import SmartMeter
from keilib.sim.transport import PtyTransport
from keilib.sim.wisun import WisunModule
from keilib.skstack import BP35A1, BP35C2, WiSunRL7023
from support import read_text, wait_for

ROUTE_B_ID = "00112233445566778899AABBCCDDEEFF"
PASSWORD = "0123456789AB"
FAST = [{"epc": ["E7", "E8"], "cycle": 2}, {"epc": ["E0", "E3"], "cycle": 3}]
DRIVERS = {
    "ips": lambda port: WiSunRL7023(port, 115200, type=WiSunRL7023.IPS),
    "dss": lambda port: WiSunRL7023(port, 115200, type=WiSunRL7023.DSS),
    "bp35a1": lambda port: BP35A1(port, 115200),
    "bp35c2": lambda port: BP35C2(port, 115200),
}
_names = itertools.count()


class TcpBridge:
    """A serial port served over TCP, as ser2net does: the module's sim:// port
    on one side, a socket://127.0.0.1:PORT client on the other."""

    def __init__(self, serial_url: str):
        self.serial_url = serial_url
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            port = serial.serial_for_url(self.serial_url, timeout=0.05)
            threading.Thread(target=self.pump_to_client, args=(port, conn), daemon=True).start()
            try:
                while True:
                    data = conn.recv(4096)
                    if not data:
                        break
                    port.write(data)
            except OSError:
                pass
            finally:
                conn.close()
                port.close()

    @staticmethod
    def pump_to_client(port: Any, conn: socket.socket) -> None:
        try:
            while port.is_open:
                data = port.read(4096)
                if data:
                    conn.sendall(data)
        except (OSError, serial.SerialException, TypeError, AttributeError):
            pass

    def close(self) -> None:
        self.closed.set()
        self.server.close()


class Rig:
    """A module + meter, a port (sim://, socket:// or pty), a reader and a recorder."""

    def __init__(self, tmp_path: Path, kind: str = "bp35c2", transport: str = "sim", scale: float = 5.0,
                 requests: Any = None, response_timeout: float = 2.0, reverse: bool = False,
                 infc: bool = False, **module_options: Any):
        register_url_handler()
        self.tmp = tmp_path
        self.kind = kind
        self.clock = ScaledClock(scale)
        self.module = WisunModule(kind=kind, latency="zero", clock=self.clock, seed=7,
                                  meter=SmartMeter(seed=7, reverse=reverse, infc=infc), **module_options)
        self.pty = None
        self.name = "broute-%d" % next(_names)
        self.bridge: Optional[TcpBridge] = None
        if transport in ("sim", "socket"):
            protocol_sim.register(self.name, self.module)
            self.port = "sim://wisun?name=%s" % self.name
            if transport == "socket":
                self.bridge = TcpBridge(self.port)
                self.port = "socket://127.0.0.1:%d" % self.bridge.port
        else:
            self.pty = PtyTransport(self.module, link_path=str(tmp_path / "ttyWISUN"))
            self.port = str(tmp_path / "ttyWISUN")
        self.requests = requests or FAST
        self.response_timeout = response_timeout
        self.record_que: "queue.Queue[Any]" = queue.Queue(1000)
        self.recorder = FileRecorder(self.record_que, fname_base="br", directory=str(tmp_path))
        self.reader = self.new_reader()

    def new_reader(self) -> BrouteReader:
        return BrouteReader(DRIVERS[self.kind](self.port), ROUTE_B_ID, PASSWORD, requests=self.requests,
                            record_que=self.record_que, scan_cache=str(self.tmp / "scancache.json"),
                            response_timeout=self.response_timeout, clock=self.clock)

    def start(self) -> "Rig":
        self.recorder.start()
        self.reader.start()
        return self

    def stop(self) -> None:
        self.reader.stop(5)
        self.recorder.stop(5)
        if self.bridge is not None:
            self.bridge.close()
        self.module.close()
        if self.pty is not None:
            self.pty.close()
        else:
            protocol_sim.forget(self.name)

    def lines(self, sensor: str = "") -> List[List[str]]:
        rows = [line.split(",") for path in sorted(self.tmp.glob("2*-br.txt"))
                for line in read_text(path).splitlines()]
        return [row for row in rows if not sensor or row[2] == sensor]

    def wait_records(self, sensor: str, count: int, timeout: float = 15.0) -> List[List[str]]:
        return wait_for(lambda: len(self.lines(sensor)) >= count and self.lines(sensor), timeout=timeout,
                        message="%d %s records" % (count, sensor))

    def served(self, epc: int) -> List[Any]:
        return [s.value for s in list(self.module.meter.served) if s.epc == epc]

    def check_values(self) -> None:
        """Every recorded value is one the meter sent (nothing garbled, nothing invented)."""
        power = set(self.served(0xE7))
        currents = self.served(0xE8)
        energy = {round(raw * 0.1, 4) for raw in self.served(0xE0) if isinstance(raw, int)}
        for _, unit, sensor, value, data_id in self.lines():
            assert unit == "BR" and data_id == "x"
            if sensor == "E7":
                assert int(value) in power
            elif sensor == "E8R":
                assert float(value) in {c.r for c in currents}
            elif sensor == "E8T":
                assert float(value) in {c.t for c in currents}
            elif sensor == "E0":
                assert float(value) in energy
            elif sensor in ("EA", "EB", "E3"):
                assert float(value) >= 0
            else:
                raise AssertionError("unexpected sensor %s" % sensor)

    def assert_healthy(self) -> None:
        assert self.reader.is_alive() and self.reader.failure is None
        assert self.recorder.is_alive()
        self.check_values()


@pytest.fixture
def rigs(tmp_path):
    made: List[Rig] = []

    def make(**options: Any) -> Rig:
        rig = Rig(tmp_path, **options)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.stop()


@pytest.mark.parametrize("transport", ["sim", "pty"])
@pytest.mark.parametrize("kind", sorted(DRIVERS))
def test_cold_then_warm_start_reach_polling(rigs, kind, transport, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    rig = rigs(kind=kind, transport=transport).start()
    rig.wait_records("E7", 2)
    rig.wait_records("E0", 1)
    assert "active scan" in caplog.text
    assert (rig.tmp / "scancache.json").exists()
    rig.reader.stop(5)
    assert "session terminated (SKTERM)" in caplog.text
    caplog.clear()
    before = len(rig.lines("E7"))
    rig.reader = rig.new_reader()          # a restart: the cached scan result is used
    rig.reader.start()
    rig.wait_records("E7", before + 2)
    assert "using the cached scan result" in caplog.text
    assert "active scan" not in caplog.text
    rig.assert_healthy()
    assert rig.lines("E8R") and rig.lines("E0")
    if kind in ("dss", "bp35c2"):
        assert rig.lines("E8T")


def test_values_match_the_meter_model_exactly(rigs):
    rig = rigs(kind="bp35c2").start()
    rig.wait_records("E7", 3)
    rig.reader.stop(5)
    rig.recorder.stop(5)
    recorded = [int(row[3]) for row in rig.lines("E7")]
    assert recorded == rig.served(0xE7)[:len(recorded)]
    energy = [float(row[3]) for row in rig.lines("E0")]
    assert energy == [round(raw * 0.1, 4) for raw in rig.served(0xE0)[:len(energy)]]


def test_fixed_time_notifications_are_recorded_with_the_meter_timestamp(rigs):
    # 600x: a half-hour boundary passes every 3 s of real time
    rig = rigs(kind="ips", scale=600.0, reverse=True, response_timeout=60.0,
               requests=[{"epc": ["E7"], "cycle": 300}]).start()
    rows = rig.wait_records("EA", 1, timeout=20)
    rig.wait_records("EB", 1, timeout=10)
    stamp = rows[0][0]
    assert stamp.endswith(":00:00") or stamp.endswith(":30:00")
    rig.assert_healthy()


def test_infc_notifications_are_answered_and_recorded(rigs, caplog):
    caplog.set_level(logging.DEBUG, logger="keilib")
    # slow polling: at x600 the FAST schedule would use up the module's transmission budget
    rig = rigs(kind="dss", scale=600.0, infc=True, response_timeout=60.0,
               requests=[{"epc": ["E7"], "cycle": 300}]).start()
    rig.wait_records("EA", 2, timeout=20)
    # the meter got its INFC_Res (ESV 7A, same TID, PDC 0) for what it notified
    assert "05FF010288017A01EA00" in caplog.text.replace(" ", "").upper()

    def answered() -> List[int]:
        return [int(m.group(1), 16) for m in re.finditer(r"INFC \(TID ([0-9A-F]{4})\) answered", caplog.text)]

    # New INFCs keep coming every 3 s.  A stall of a second on a busy machine is
    # ten simulated minutes and may make the reader rejoin, losing an INFC sent
    # meanwhile; but every INFC the reader answered must be settled at the meter.
    first = len(answered())
    wait_for(lambda: len(answered()) >= first + 2, timeout=15)
    wait_for(lambda: not set(answered()) & set(rig.module.meter.pending_infc), timeout=5,
             message="the meter to settle every answered INFC")
    rig.assert_healthy()


# -- faults: each one injected while polling; the reader recovers by itself ----------

def _polling(rig: Rig) -> int:
    rig.wait_records("E7", 2)
    return len(rig.lines("E7"))


def _resumes(rig: Rig, before: int, bound: float) -> None:
    rig.wait_records("E7", before + 2, timeout=bound)
    rig.assert_healthy()


FAULTS: Dict[str, Any] = {
    # name: (inject, undo or None, bound in real seconds for recording to resume)
    "meter_out_of_range": (lambda m: m.set_out_of_range(True), lambda m: m.set_out_of_range(False), 30),
    "meter_silent": (lambda m: m.set_silent(True), lambda m: m.set_silent(False), 30),
    "session_expiry_reauth_ok": (lambda m: m.expire_session(), None, 10),
    "session_expiry_reauth_fails": (lambda m: m.expire_session(reauth="fail"), None, 20),
    "peer_terminates": (lambda m: m.terminate_session(), None, 15),
    "tx_restriction": (lambda m: m.restrict_tx(seconds=5.0), None, 15),
    "garbage_on_line": (lambda m: [m.inject_garbage() for _ in range(5)], None, 10),
    "truncated_erxudp": (lambda m: m.corrupt_next_reply("truncated", count=3), None, 15),
    "malformed_erxudp": (lambda m: m.corrupt_next_reply("malformed", count=3), None, 15),
    "delayed_reply": (lambda m: m.delay_next_reply(seconds=15.0, count=2), None, 15),
    "duplicated_reply": (lambda m: m.duplicate_next_reply(count=3), None, 10),
    "module_reset": (lambda m: m.reset(), None, 20),
    "session_ended_then_joins_refused": (lambda m: (m.fail_joins(2), m.terminate_session()), None, 30),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_reader_recovers_from_fault(rigs, fault, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    inject, undo, bound = FAULTS[fault]
    rig = rigs(kind="bp35c2").start()
    before = _polling(rig)
    inject(rig.module)
    if undo is not None:
        time.sleep(1)                          # let the reader notice
        assert rig.reader.is_alive()
        undo(rig.module)
    _resumes(rig, len(rig.lines("E7")), bound)
    assert len(rig.lines("E7")) >= before + 2


def test_transmission_limit_pauses_sending_without_misses_or_rejoin(rigs, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    rig = rigs(kind="bp35c2", response_timeout=1.0).start()
    before = _polling(rig)
    rig.module.delay_next_reply(seconds=40.0, count=4)   # requests are in flight when the limit hits
    time.sleep(0.5)
    rig.module.restrict_tx(seconds=30.0)           # 6 s real at x5: several cycles and timeouts
    wait_for(lambda: "EVENT 32" in caplog.text, timeout=5)
    wait_for(lambda: "EVENT 33" in caplog.text, timeout=15)
    _resumes(rig, max(before, len(rig.lines("E7"))), 10)
    assert "missed" not in caplog.text
    assert "POLL -> OPEN" not in caplog.text          # no rejoin: the link was never lost


def test_lost_event_33_does_not_stall_polling(rigs, monkeypatch, caplog):
    """A module that resets during the limit never prints EVENT 33; SFB says it is over."""
    import keilib.broute as broute
    monkeypatch.setattr(broute, "TX_BLOCK_CHECK", 10.0)      # clock seconds: 2 s real at x5
    caplog.set_level(logging.INFO, logger="keilib")
    rig = rigs(kind="bp35c2").start()
    before = _polling(rig)
    rig.module.restrict_tx(seconds=600.0)
    wait_for(lambda: rig.reader.tx_blocked, timeout=5)
    rig.module.reset()                                      # the limit is forgotten, no EVENT 33
    _resumes(rig, max(before, len(rig.lines("E7"))), 20)
    assert "transmission-time limit is over (SFB 0)" in caplog.text


def test_lost_answers_to_the_conversion_factors_are_asked_again_soon(rigs):
    rig = rigs(kind="bp35c2")
    rig.module.corrupt_next_reply("malformed", count=2)     # the D3/D7/E1 Get and its retry
    rig.start()
    rig.wait_records("E7", 1, timeout=15)                   # not after the hourly cycle
    rig.assert_healthy()


class RefusingDevice(BP35C2):
    """A module that answers FAIL to the Route-B password, every time."""

    def __init__(self, port):
        super().__init__(port)
        self.setups = 0

    def setup(self, broute_id, password):
        self.setups += 1
        from keilib.errors import DeviceError
        raise DeviceError("SKSETPWD failed: FAIL ER04")


def test_a_failing_module_is_retried_with_backoff_not_in_a_loop(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    register_url_handler()
    device = RefusingDevice("sim://wisun?kind=bp35c2&latency=zero")
    reader = BrouteReader(device, ROUTE_B_ID, PASSWORD, record_que=queue.Queue(),
                          scan_cache=str(tmp_path / "cache.json"), clock=ScaledClock(10.0))
    reader.start()
    time.sleep(2.0)                     # 20 clock seconds: backoff 1, 2, 4, 8 -> about 5 tries
    assert reader.stop(5)
    assert 2 <= device.setups <= 8, device.setups
    assert "starting over in" in caplog.text


def test_duplicated_and_delayed_replies_are_recorded_once(rigs):
    rig = rigs(kind="bp35c2").start()
    before = _polling(rig)
    rig.module.duplicate_next_reply(count=3)
    rig.module.delay_next_reply(seconds=4.0, count=1)
    rig.wait_records("E7", before + 4)
    rig.reader.stop(5)
    rig.recorder.stop(5)
    recorded = [int(row[3]) for row in rig.lines("E7")]
    served = rig.served(0xE7)
    # the records are a subsequence of the meter's answers: one record per
    # answer at most (a late answer to a request asked again may be dropped,
    # never doubled)
    remaining = iter(served)
    assert all(any(value == answer for answer in remaining) for value in recorded), (recorded, served)


def test_polls_through_a_socket_url_as_served_by_ser2net(rigs):
    # Ports are opened with serial_for_url(): a stick on another box works too.
    rig = rigs(kind="ips", transport="socket").start()
    assert rig.reader.device.port.startswith("socket://")
    rig.wait_records("E7", 3)
    rig.wait_records("E0", 1)
    rig.assert_healthy()


def test_device_unplugged_and_back_over_pty(rigs, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    rig = rigs(kind="ips", transport="pty").start()
    _polling(rig)
    rig.pty.unplug()
    wait_for(lambda: "B-route: POLL -> INIT" in caplog.text, timeout=10)
    time.sleep(1.0)
    rig.pty.replug()
    _resumes(rig, len(rig.lines("E7")), 30)


def test_device_unplugged_and_back_via_sim_url(rigs, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    rig = rigs(kind="bp35a1").start()
    _polling(rig)
    protocol_sim.unplug(rig.name)
    wait_for(lambda: "-> INIT" in caplog.text, timeout=10)
    protocol_sim.replug(rig.name)
    _resumes(rig, len(rig.lines("E7")), 30)


def test_meter_never_found_keeps_trying_and_stops_promptly(rigs, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    rig = rigs(kind="dss", out_of_range=True).start()
    wait_for(lambda: caplog.text.count("no smart meter found") >= 2, timeout=20)
    started = time.monotonic()
    assert rig.reader.stop(5)
    assert time.monotonic() - started < 2
    assert not rig.lines()


def test_wrong_password_never_joins_and_stops_promptly(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    rig = Rig(tmp_path, kind="bp35c2", password="XXXXXXXXXXXX")
    try:
        rig.start()
        wait_for(lambda: "join failed" in caplog.text or "join with the known PAN failed" in caplog.text,
                 timeout=20)
        started = time.monotonic()
        assert rig.reader.stop(5)
        assert time.monotonic() - started < 2
        assert not rig.lines()
    finally:
        rig.stop()


@pytest.mark.parametrize("state", ["SCAN", "JOIN", "POLL"])
def test_stop_is_honoured_within_two_seconds_in_every_state(tmp_path, state):
    # realistic latencies: a scan of duration 6 takes 17 s, a join about 3 s
    register_url_handler()
    module = WisunModule(kind="bp35c2", latency="realistic", seed=3, scan_min=6)
    name = "stop-%s" % state
    protocol_sim.register(name, module)
    reader = BrouteReader(BP35C2("sim://wisun?name=%s" % name), ROUTE_B_ID, PASSWORD,
                          requests=[{"epc": ["E7"], "cycle": 5}], record_que=queue.Queue(),
                          scan_cache=str(tmp_path / "cache.json"))
    if state != "SCAN":
        # a cached scan result skips the long scan
        (tmp_path / "cache.json").write_text('{"channel": 59, "pan_id": %d, "addr": "%s"}'
                                             % (module.pan_id, module.meter_mac))
    try:
        reader.start()
        wait_for(lambda: reader.state == State[state], timeout=20)
        started = time.monotonic()
        assert reader.stop(5)
        assert time.monotonic() - started < 2
    finally:
        module.close()
        protocol_sim.forget(name)


def test_stop_while_the_port_is_missing_is_prompt(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    reader = BrouteReader(BP35C2(str(tmp_path / "no-such-stick")), ROUTE_B_ID, PASSWORD,
                          requests=[{"epc": ["E7"], "cycle": 5}], record_que=queue.Queue(),
                          scan_cache=str(tmp_path / "cache.json"))
    reader.start()
    wait_for(lambda: "no-such-stick" in caplog.text, timeout=10)
    assert reader.state in (State.INIT, State.OPEN)
    started = time.monotonic()
    assert reader.stop(5)
    assert time.monotonic() - started < 2


def test_stop_with_a_hung_module_is_prompt(tmp_path, caplog):
    # The module stops answering anything (hung firmware): SKTERM at stop
    # gets no OK; the stop must still end within its 2 s budget.
    caplog.set_level(logging.INFO, logger="keilib")
    register_url_handler()
    module = WisunModule(kind="bp35c2", latency="zero", seed=3)
    protocol_sim.register("hung", module)
    reader = BrouteReader(BP35C2("sim://wisun?name=hung"), ROUTE_B_ID, PASSWORD,
                          requests=[{"epc": ["E7"], "cycle": 60}], record_que=queue.Queue(),
                          scan_cache=str(tmp_path / "cache.json"))
    try:
        reader.start()
        wait_for(lambda: reader.state == State.POLL, timeout=20)
        module.receive = lambda data: None         # every byte to the module is now lost
        started = time.monotonic()
        assert reader.stop(5)
        assert time.monotonic() - started < 2
        assert "SKTERM: SKTERM: no answer" in caplog.text
    finally:
        module.close()
        protocol_sim.forget("hung")


def test_a_quiet_meter_is_not_rejoined_when_every_cycle_is_long(rigs, caplog):
    # One request every 20 simulated minutes: 10 minutes without a frame is normal.
    caplog.set_level(logging.INFO, logger="keilib")
    rig = rigs(kind="bp35c2", scale=300.0, response_timeout=60.0,
               requests=[{"epc": ["E0"], "cycle": 1200}]).start()
    rig.wait_records("E0", 3, timeout=30)      # 40 simulated minutes of polling
    assert "no frame from the meter" not in caplog.text
    assert "POLL -> OPEN" not in caplog.text
    rig.assert_healthy()


def test_response_timeout_and_scan_cache_are_validated():
    for bad in (0, -1, 301, "10", True, None):
        with pytest.raises(ConfigError, match="'response_timeout'"):
            BrouteReader(BP35C2("sim://wisun"), ROUTE_B_ID, PASSWORD, response_timeout=bad)
    with pytest.raises(ConfigError, match="'scan_cache'"):
        BrouteReader(BP35C2("sim://wisun"), ROUTE_B_ID, PASSWORD, scan_cache="")


def test_secrets_never_logged(rigs, caplog):
    caplog.set_level(logging.DEBUG)
    rig = rigs(kind="bp35a1").start()
    rig.wait_records("E7", 1)
    rig.reader.stop(5)
    assert ROUTE_B_ID not in caplog.text and PASSWORD not in caplog.text
    assert "SKSETPWD C ********" in caplog.text


def test_secrets_in_a_garbled_echo_are_masked_too(rigs, caplog):
    # A line the parser cannot read is logged as skipped: an echo hit by noise
    # may still carry the Route-B ID or password.
    caplog.set_level(logging.DEBUG)
    rig = rigs(kind="bp35c2").start()
    rig.wait_records("E7", 1)
    rig.module.inject_garbage(b"\xfeSKSETRBID " + ROUTE_B_ID.encode() + b"\r\n")
    rig.module.inject_garbage(b"SKSETPWD C \xff" + PASSWORD.encode() + b"\r\n")
    wait_for(lambda: caplog.text.count("<< skipped") >= 2)
    rig.reader.stop(5)
    assert ROUTE_B_ID not in caplog.text and PASSWORD not in caplog.text


@pytest.mark.parametrize("requests,message", [
    ([{"epc": ["E7"], "cycle": 0}], "argument 'cycle' must be a number above 0 and at most 86400"),
    ([{"epc": ["ZZ"], "cycle": 10}], "unknown EPC 'ZZ'"),
    ([{"epc": [], "cycle": 10}], "'epc' must be a non-empty list"),
    ([{"epc": ["E7"]}], "must be {'epc': [...], 'cycle': seconds}"),
    ("E7", "must be a list of"),
    ([{"epc": ["E7", "E8", "E0", "E3", "D3", "D7", "E1"], "cycle": 60}], "at most 6 EPCs"),
    ([{"epc": ["E7"], "cycle": 0.01}], "would transmit about"),
    ([{"epc": ["E7"], "cycle": 10 ** 400}], "at most 86400.0, got an integer of 401 digits"),
    ([{"epc": ["E7"], "cycle": float("inf")}], "argument 'cycle' must be a number above 0"),
    ([{"epc": ["E7"], "cycle": "10"}], "argument 'cycle' must be a number above 0"),
])
def test_bad_request_lists_are_refused_at_construction(requests, message):
    with pytest.raises(ConfigError, match=None) as info:
        BrouteReader(BP35C2("/dev/null"), ROUTE_B_ID, PASSWORD, requests=requests)
    assert message in str(info.value)


@pytest.mark.parametrize("args,message", [
    (dict(broute_id="short"), "32-character Route-B ID"),
    (dict(broute_pwd=""), "Route-B password"),
    (dict(wisundev="COM3"), "must be a Wi-SUN device"),
    (dict(broute_pwd="パスワードです12345"), "argument 'broute_pwd' must be the Route-B password (12 characters): "
                                          "printable ASCII without spaces; character 1 is not"),
    (dict(broute_pwd="ABCDEF 12345"), "character 7 is not"),
    (dict(broute_pwd=12345678), "argument 'broute_pwd' must be the Route-B password (12 characters) (a string)"),
    (dict(broute_id=ROUTE_B_ID[:-1] + "\u00e9"), "argument 'broute_id' must be the 32-character Route-B ID: "
                                                 "printable ASCII"),
    (dict(wisundev=None, port="/dev/ttyUSB0", baudrate="fast"), "argument 'baudrate' must be an integer"),
    (dict(scan_cache="a\x00b"), "argument 'scan_cache' must be a file name"),
])
def test_bad_arguments_are_refused_at_construction(args, message):
    values = dict(wisundev=BP35C2("/dev/null"), broute_id=ROUTE_B_ID, broute_pwd=PASSWORD)
    values.update(args)
    with pytest.raises(ConfigError) as info:
        BrouteReader(**values)
    assert message in str(info.value)
    assert PASSWORD not in str(info.value)
