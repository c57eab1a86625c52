"""The serial sensor emulator: determinism, pacing, faults, and its three front ends
(in-process ``sim://sensor``, a pty transport, ``python3 -m keilib.sim sensor``)."""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import threading
from typing import List

import pytest
import serial

from keilib.clock import SYSTEM_CLOCK, FakeClock
from keilib.errors import ProtocolError
from keilib.record import Record
from keilib.serial import LineSplitter, Reading, SerialReader, parse_line
from keilib.sim import protocol_sim, register_url_handler
from keilib.sim.sensor import GARBAGE_KINDS, SensorNode, from_options
from keilib.sim.transport import PtyTransport
from support import PYTHON, REPO, subprocess_env, wait_for


class Collector:
    """A sink standing in for a transport: keeps every byte the device wrote."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lock = threading.Lock()

    def __call__(self, data: bytes) -> None:
        with self.lock:
            self.data += data

    def lines(self) -> List[bytes]:
        with self.lock:
            return [line for line, _ in LineSplitter(10000).feed(bytes(self.data))]


@pytest.fixture
def nodes():
    made: List[SensorNode] = []

    def make(**kwargs) -> SensorNode:
        node = SensorNode(**kwargs)
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


def run_for(node: SensorNode, clock: FakeClock, seconds: float, expect: int) -> Collector:
    sink = Collector()
    node.attach(sink)
    clock.advance(seconds)
    wait_for(lambda: len(node.sent) >= expect, message="%d readings" % expect)
    return sink


def test_readings_are_paced_on_the_clock_round_robin_and_parse(nodes):
    clock = FakeClock()
    node = nodes(units=2, sensors=3, rate=5, seed=1, clock=clock)
    sink = run_for(node, clock, 2.0, 10)          # t = 0.2, 0.4, ..., 2.0
    assert len(node.sent) == 10
    parsed = [parse_line(line) for line in sink.lines()]
    assert parsed == node.sent
    assert [(r.unit, r.sensor) for r in parsed[:7]] == [
        ("unit1", "temp"), ("unit1", "hum"), ("unit1", "pres"),
        ("unit2", "temp"), ("unit2", "hum"), ("unit2", "pres"), ("unit1", "temp")]
    assert [r.data_id for r in parsed[:7]] == ["0", "1", "2", "0", "1", "2", "3"]   # per-unit frame counter
    assert all(line.endswith(b"\r") for line in sink.lines())                     # CRLF
    clock.advance(1.0)
    wait_for(lambda: len(node.sent) == 15)


def test_same_seed_same_bytes_whatever_the_faults_do_to_the_values(nodes):
    outputs = []
    for seed, garbage in ((7, 0.3), (7, 0.3), (7, 0.0), (8, 0.3)):
        clock = FakeClock()
        node = nodes(units=2, sensors=2, rate=10, seed=seed, dup=0.2, garbage=garbage, clock=clock)
        sink = run_for(node, clock, 5.0, 50)
        outputs.append((bytes(sink.data), list(node.sent)))
    assert outputs[0] == outputs[1]                                  # deterministic
    assert outputs[0][1] == outputs[2][1]                            # faults do not change values
    assert outputs[0][0] != outputs[2][0]
    assert outputs[0][1] != outputs[3][1]                            # another seed, other values


def test_faults_are_what_the_reader_must_reject(nodes):
    clock = FakeClock()
    node = nodes(units=1, sensors=4, rate=100, seed=3, dup=0.2, garbage=0.3, clock=clock)
    sink = run_for(node, clock, 10.0, 1000)
    assert set(node.garbage_sent) == set(GARBAGE_KINDS)
    valid, invalid, resent = [], 0, 0
    for line in sink.lines():
        if len(line) > 256:
            invalid += 1
            continue
        try:
            reading = parse_line(line)
        except ProtocolError:
            invalid += 1
            continue
        if valid and reading == valid[-1]:
            resent += 1
        else:
            valid.append(reading)
    assert valid == list(node.sent)
    assert invalid == sum(node.garbage_sent.values()) > 200
    assert resent == node.duplicates_sent > 150


def test_without_ids_and_with_count(nodes):
    clock = FakeClock()
    node = nodes(units=1, sensors=1, rate=10, ids=False, dup=1.0, count=5, eol=b"\n", clock=clock)
    sink = run_for(node, clock, 10.0, 5)
    assert [line.count(b",") for line in sink.lines()] == [2] * 5     # no data id, and never resent
    assert len(node.sent) == 5 and node.duplicates_sent == 0
    assert all(r.data_id is None for r in node.sent)


def test_nothing_counts_as_sent_while_detached(nodes):
    clock = FakeClock()
    node = nodes(rate=10, clock=clock)
    clock.advance(1.0)
    wait_for(lambda: node._produced == 10)
    sink = Collector()
    node.attach(sink)
    clock.advance(0.5)
    wait_for(lambda: len(node.sent) == 5)
    assert [r.data_id for r in node.sent] == ["10", "11", "12", "13", "14"]   # readings 0..9 were lost
    assert len(sink.lines()) == 5


@pytest.mark.parametrize("options, text", [
    ({"units": "2", "colour": "red"}, "unknown option(s) colour; expected sim://sensor?units=<"),
    ({"rate": "fast"}, "bad value 'fast' for option 'rate'"),
    ({"dup": "1.5"}, "bad value '1.5' for option 'dup' (must be between 0 and 1)"),
    ({"ids": "yes"}, "bad value 'yes' for option 'ids' (expected 0 or 1)"),
    ({"units": "0"}, "units must be an integer >= 1"),
])
def test_bad_options_are_refused_with_the_grammar(options, text):
    with pytest.raises(ValueError) as info:
        from_options(options).close()
    assert text in str(info.value)


# -- front ends ---------------------------------------------------------------------

@pytest.fixture
def sim_names():
    register_url_handler()
    names: List[str] = []
    yield names
    for name in names:
        protocol_sim.forget(name)


def collect_records(record_que: "queue.Queue[Record]", into: List[Record]) -> List[Record]:
    while True:
        try:
            into.append(record_que.get_nowait())
        except queue.Empty:
            return into


def test_sim_url_through_serial_reader_records_exactly_what_was_sent(sim_names, caplog):
    caplog.set_level(logging.INFO, logger="keilib.serial")
    sim_names.append("sens-e2e")
    url = "sim://sensor?units=2&sensors=2&rate=500&seed=1&dup=0.1&garbage=0.05&count=400&name=sens-e2e"
    record_que: "queue.Queue[Record]" = queue.Queue()
    reader = SerialReader(url, 115200, record_que=record_que, clock=SYSTEM_CLOCK)
    reader.start()
    try:
        wait_for(lambda: reader.connected)
        node = protocol_sim.get_device("sens-e2e")
        wait_for(lambda: len(node.sent) == 400, timeout=10)
        records: List[Record] = []
        wait_for(lambda: len(collect_records(record_que, records)) >= len(node.sent) - 1, timeout=10)
        total = len(node.sent) + node.duplicates_sent + sum(node.garbage_sent.values())
        wait_for(lambda: len(collect_records(record_que, records)) + reader.stats["duplicates"]
                 + reader.stats["invalid"] + len(discarded(caplog)) == total)
    finally:
        assert reader.stop(5)
    got = [Reading(r.unit, r.sensor, float(r.value), r.data_id) for r in records]
    # The first lines arrive within the reader's settle time after the open, so the
    # first one may be discarded as a possible tail of a line.
    assert len(discarded(caplog)) <= 1
    skipped = len(node.sent) - len(got)
    assert skipped in (0, 1) and got == node.sent[skipped:]   # in order; resends and garbage gone
    assert reader.stats["duplicates"] >= node.duplicates_sent - 1 and node.duplicates_sent > 0
    assert reader.stats["invalid"] >= sum(node.garbage_sent.values()) - 1 > 0


def discarded(caplog) -> list:
    return [r for r in caplog.records if "discarded the first line" in r.getMessage()]


def test_sim_url_unplug_and_replug(sim_names, fake_clock):
    sim_names.append("sens-plug")
    url = "sim://sensor?rate=200&seed=2&name=sens-plug"
    record_que: "queue.Queue[Record]" = queue.Queue()
    reader = SerialReader(url, 9600, record_que=record_que, clock=fake_clock)
    reader.start()
    records: List[Record] = []
    try:
        wait_for(lambda: len(collect_records(record_que, records)) >= 20)
        protocol_sim.unplug("sens-plug")
        wait_for(lambda: not reader.connected)
        protocol_sim.replug("sens-plug")
        node = protocol_sim.get_device("sens-plug")

        def reconnected():
            fake_clock.advance(1.0)
            return reader.connected
        wait_for(reconnected)
        after = len(node.sent)
        wait_for(lambda: len(node.sent) >= after + 50)
        wanted = {r.data_id for r in node.sent[after:after + 50]}
        wait_for(lambda: wanted <= {r.data_id for r in collect_records(record_que, records)})
    finally:
        assert reader.stop(5)
    ids = [int(r.data_id) for r in records]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    first_after = int(node.sent[after].data_id)
    assert [i for i in ids if i >= first_after][:50] == list(range(first_after, first_after + 50))


def test_pty_transport_unplug_replug_with_bind_transport(tmp_path, fake_clock):
    link = str(tmp_path / "usb-sensor")
    node = SensorNode(units=1, sensors=2, rate=100, seed=4, unplug_every=0.3, unplug_for=0.2)
    transport = PtyTransport(node, link_path=link)
    record_que: "queue.Queue[Record]" = queue.Queue()
    reader = SerialReader(link, 115200, record_que=record_que, clock=fake_clock)
    records: List[Record] = []
    reader.start()
    try:
        node.bind_transport(transport)
        lost = []

        def watch():
            fake_clock.advance(1.0)           # the reader's reopen back-off
            if not reader.connected and not lost:
                lost.append(True)
            return lost and reader.connected and len(collect_records(record_que, records)) > 50
        wait_for(watch, timeout=10)
    finally:
        assert reader.stop(5)
        node.close()          # first: its scheduler must not replug a closed transport
        transport.close()
    sent_ids = [int(r.data_id) for r in node.sent if r.sensor == "temp"]
    got_ids = [int(r.data_id) for r in records if r.sensor == "temp"]
    assert got_ids == sorted(got_ids) and set(got_ids) <= set(sent_ids)


def test_command_line_serves_a_pty_until_sigterm(tmp_path):
    link = str(tmp_path / "kei-sensor")
    proc = subprocess.Popen([PYTHON, "-m", "keilib.sim", "sensor", "--units", "2", "--sensors", "2",
                             "--rate", "50", "--seed", "1", "--garbage", "0.1", "--link", link],
                            cwd=str(REPO), env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        slave = proc.stdout.readline().strip()
        assert slave.startswith("/dev/pts/") and os.path.realpath(link) == slave
        port = serial.serial_for_url(link, baudrate=115200, timeout=0.5)
        try:
            splitter, readings = LineSplitter(), []

            def read_some():
                for line, too_long in splitter.feed(port.read(256)):
                    if too_long:
                        continue
                    try:
                        readings.append(parse_line(line))
                    except ProtocolError:
                        pass        # the faults asked for with --garbage
                return len(readings) >= 9
            wait_for(read_some, timeout=10)
        finally:
            port.close()
        # readings[0] may be the tail of a line cut by opening the port
        assert {(r.unit, r.sensor) for r in readings[1:9]} == {
            ("unit1", "temp"), ("unit1", "hum"), ("unit2", "temp"), ("unit2", "hum")}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not os.path.lexists(link)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_command_line_refuses_a_bad_option():
    result = subprocess.run([PYTHON, "-m", "keilib.sim", "sensor", "--rate", "-1"], cwd=str(REPO),
                            env=subprocess_env(), capture_output=True, text=True, timeout=20)
    assert result.returncode == 2 and "rate must be positive" in result.stderr
