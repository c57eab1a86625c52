"""EchonetLanReader against the simulated LAN devices, over real UDP on loopback.

Port 3610 is fixed by ECHONET Lite, so every test takes its own 127.x.y.z
addresses (tests/lanaddr.py).  Time is a FakeClock: the models stand still
unless a test advances it, so recorded values can be compared with the
model's exactly.
"""

from __future__ import annotations

import logging
import queue
import socket

import pytest

from keilib import echonet as el
from keilib.errors import ConfigError, DeviceError
from keilib.lan import EchonetLanReader
from keilib.sim.lan import LanNode, make_model
from lanaddr import addresses
from support import wait_for

PORT = 3610


def drain(record_que, into):
    while True:
        try:
            into.append(record_que.get_nowait())
        except queue.Empty:
            return into


def counter(reader, name):
    return reader.health.snapshot()["counters"].get(name, 0)


def expected_values(model):
    """What the reader must record for each listed EPC the model has: the
    model's value through the wire codec, as kei records it."""
    out = {}
    for epc in set(el.DEFAULT_EPCS[el.eoj_class(model.eoj)]) & set(model.values()):
        value = model.value(epc)
        wire = el.encode_device_property(model.eoj, epc, value)
        out["%02X" % epc] = el.record_value(el.decode_device_property(model.eoj, epc, wire))
    return out


@pytest.fixture
def running():
    """Start nodes and readers; stop them all in finally."""
    started = []

    def start(thing):
        started.append(thing)
        thing.start()
        return thing

    yield start
    for thing in reversed(started):
        thing.stop()


@pytest.mark.parametrize("device", ["ecocute", "battery", "solar"])
def test_reader_records_every_property_with_the_models_values(device, fake_clock, running, caplog):
    caplog.set_level(logging.INFO, logger="keilib.lan")
    reader_addr, node_addr = addresses(2)
    node = running(LanNode(make_model(device), node_addr, clock=fake_clock, multicast=False))
    records = []
    q = queue.Queue()
    reader = running(EchonetLanReader(record_que=q, devices=[node_addr], address=reader_addr, cycle=60,
                                      clock=fake_clock))
    expected = expected_values(node.model)
    unit = "%06X" % node.model.eoj
    wait_for(lambda: {r.sensor for r in drain(q, records)} >= set(expected), timeout=10,
             message="every property of %s" % device)
    got = {r.sensor: r.value for r in records}
    assert got == expected
    if device == "solar":      # a solar object has no 84/85: asked once, then dropped
        assert [r.getMessage() for r in caplog.records if "no longer asked" in r.getMessage()] == [
            "ECHONET Lite: 027901 (027901 at %s) does not have EPC 84 85; no longer asked" % node_addr]
    assert all(r.unit == unit and r.timestamp == fake_clock.now() for r in records)
    # numbers the model holds show up scaled, e.g. kWh with three decimals
    assert unit in ("026B01", "027D01", "027901")
    snapshot = reader.health.snapshot()
    assert snapshot["states"][unit] == "ok"
    assert counter(reader, "requests") == 1 and counter(reader, "answers") == 1
    assert {(r["unit"], r["sensor"]) for r in snapshot["readings"]} == {(unit, s) for s in expected}


def test_configured_unit_ids_and_epcs(fake_clock, running):
    reader_addr, node_addr = addresses(2)
    node = running(LanNode(make_model("battery"), node_addr, clock=fake_clock, multicast=False,
                           inf_to=[reader_addr]))
    q = queue.Queue()
    reader = running(EchonetLanReader(record_que=q, devices=[node_addr], address=reader_addr,
                                      units={"%s/027D01" % node_addr: "batt"}, epcs={"027D": ["E4", "D3"]},
                                      clock=fake_clock))
    records = []
    wait_for(lambda: len(drain(q, records)) >= 2, timeout=10)
    assert sorted((r.unit, r.sensor, r.value) for r in records) == [("batt", "D3", 1500), ("batt", "E4", 50)]
    # An INF of CF (not configured) is heard but not recorded.
    with node.lock:
        node.model.set(0xDA, el.Code(0x43, ""))
    fake_clock.advance(1)
    wait_for(lambda: counter(reader, "notifications") == 1, timeout=10)    # counted after recording
    assert len(drain(q, records)) == 2


def test_inf_on_a_state_change_is_recorded_with_its_own_time(fake_clock, running):
    reader_addr, node_addr, other = addresses(3)
    running(LanNode(make_model("battery"), node_addr, clock=fake_clock, multicast=False, inf_to=[reader_addr]))
    q = queue.Queue()
    reader = running(EchonetLanReader(record_que=q, devices=[node_addr], address=reader_addr, cycle=3600,
                                      clock=fake_clock))
    records = []
    wait_for(lambda: any(r.sensor == "CF" for r in drain(q, records)), timeout=10)
    assert [r.value for r in records if r.sensor == "CF"] == [0x42]        # 14:00: charging
    # Another controller switches the battery to discharging (a real SetC).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as controller:
        controller.bind((other, PORT))
        controller.settimeout(5)
        controller.sendto(el.set_request(7, [(0xDA, b"\x43")], deoj=el.STORAGE_BATTERY).encode(), (node_addr, PORT))
        answer = el.Frame.decode(controller.recvfrom(2048)[0])
    assert answer.esv == el.ESV.SET_RES and answer.tid == 7
    fake_clock.advance(1)
    wait_for(lambda: [r for r in drain(q, records) if r.sensor == "CF" and r.value == 0x43], timeout=10,
             message="the INF of CF")
    inf = [r for r in records if r.sensor == "CF" and r.value == 0x43]
    assert inf[0].timestamp == fake_clock.now() and inf[0].unit == "027D01"
    assert counter(reader, "notifications") == 1
    assert counter(reader, "requests") == 1          # recorded from the INF, not from a poll


def test_device_restart_is_logged_once_retried_with_backoff_and_survived(fake_clock, running, caplog):
    caplog.set_level(logging.INFO, logger="keilib.lan")
    reader_addr, node_addr = addresses(2)
    node = running(LanNode(make_model("solar"), node_addr, clock=fake_clock, multicast=False))
    q = queue.Queue()
    reader = running(EchonetLanReader(record_que=q, devices=[node_addr], address=reader_addr, cycle=60,
                                      response_timeout=5, clock=fake_clock))
    records = []
    wait_for(lambda: counter(reader, "answers") == 1, timeout=10)
    node.stop()
    # Three unanswered Gets: 60 s cycle, then backoff 60 s, then 120 s.
    for number, delay in ((2, 60), (3, 60), (4, 120)):
        fake_clock.advance(delay)
        wait_for(lambda: counter(reader, "requests") == number, timeout=10, message="Get %d" % number)
        fake_clock.advance(5)
        wait_for(lambda: counter(reader, "timeouts") == number - 1, timeout=10, message="timeout %d" % number)
    stopped = [r for r in caplog.records if "stopped answering" in r.getMessage()]
    assert len(stopped) == 1 and stopped[0].levelno == logging.WARNING
    assert reader.health.snapshot()["states"]["027901"] == "silent"
    # The device comes back on the same address (a reboot).
    before = len(drain(q, records))
    running(LanNode(make_model("solar"), node_addr, clock=fake_clock, multicast=False))
    fake_clock.advance(240)
    wait_for(lambda: counter(reader, "answers") == 2, timeout=10)
    assert len(drain(q, records)) > before
    assert reader.health.snapshot()["states"]["027901"] == "ok"
    assert len([r for r in caplog.records if "answers again" in r.getMessage()]) == 1


class FakeNode:
    """A hand-made node (a plain UDP socket) that answers what the test says."""

    def __init__(self, address):
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, PORT))
        self.sock.settimeout(10)

    def receive(self):
        data, sender = self.sock.recvfrom(2048)
        return el.Frame.decode(data), sender

    def close(self):
        self.sock.close()


def test_answers_match_tid_and_source_bad_frames_and_values_are_skipped_with_one_line(fake_clock, running,
                                                                                         caplog):
    caplog.set_level(logging.INFO, logger="keilib.lan")
    reader_addr, node_addr, stranger_addr = addresses(3)
    node, stranger = FakeNode(node_addr), FakeNode(stranger_addr)
    try:
        q = queue.Queue()
        reader = running(EchonetLanReader(record_que=q, devices=[node_addr], address=reader_addr,
                                          clock=fake_clock))
        ask, sender = node.receive()
        assert ask.esv == el.ESV.GET and ask.deoj == el.NODE_PROFILE and [p.epc for p in ask.properties] == [0xD6]
        node.sock.sendto(el.Frame(ask.tid, el.NODE_PROFILE, el.CONTROLLER, el.ESV.GET_RES,
                                  (el.Property(0xD6, el.encode_instance_list([el.STORAGE_BATTERY])),)).encode(),
                         sender)
        get, sender = node.receive()
        assert get.deoj == el.STORAGE_BATTERY and len(get.properties) == len(el.DEFAULT_EPCS[0x027D])

        def answer(tid, *props):
            return el.Frame(tid, el.STORAGE_BATTERY, el.CONTROLLER, el.ESV.GET_RES,
                            tuple(el.Property(epc, bytes.fromhex(edt)) for epc, edt in props)).encode()

        node.sock.sendto(b"\x10\x81\x00\x01garbage", sender)                         # malformed
        node.sock.sendto(answer((get.tid + 5) & 0xFFFF, (0xD3, "000004D2")), sender)  # wrong TID
        stranger.sock.sendto(answer(get.tid, (0xD3, "000004D2")), sender)              # wrong sender
        node.sock.sendto(answer(get.tid, (0xD3, "000001F4"),      # 500 W charging
                                (0xE4, "70"),                     # 112 %: impossible
                                (0xE2, "FFFFFFFE"),               # underflow code: no number
                                (0x80, "30")), sender)
        records = []
        wait_for(lambda: len(drain(q, records)) >= 2, timeout=10)
        fake_clock.advance(1)
        wait_for(lambda: counter(reader, "answers") == 1, timeout=10)
        assert sorted((r.sensor, r.value) for r in drain(q, records)) == [("80", 1), ("D3", 500)]
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len([m for m in warnings if "bad frame" in m]) == 1
        assert len([m for m in warnings if "E4 skipped" in m]) == 1
        assert counter(reader, "bad_frames") == 1
    finally:
        node.close()
        stranger.close()


def test_port_taken_by_a_program_that_does_not_share_it_is_said_clearly(fake_clock):
    reader_addr, node_addr = addresses(2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind((reader_addr, PORT))                 # no SO_REUSEADDR: exclusive
        reader = EchonetLanReader(devices=[node_addr], address=reader_addr, clock=fake_clock)
        reader.start()
        reader.join(10)
    assert not reader.is_alive()
    assert isinstance(reader.failure, DeviceError)
    assert "port 3610 on %s is taken" % reader_addr in str(reader.failure)


def test_port_shared_with_other_echonet_software(fake_clock, running):
    reader_addr, node_addr = addresses(2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind((reader_addr, PORT))
        reader = running(EchonetLanReader(devices=[node_addr], address=reader_addr, clock=fake_clock))
        wait_for(lambda: counter(reader, "requests") or reader.sockets, timeout=10)
        assert reader.is_alive() and reader.failure is None


@pytest.mark.parametrize("args, name", [
    ({"devices": "192.168.1.20"}, "devices"),
    ({"devices": ["192.168.1.300"]}, "devices"),
    ({"devices": [], "discover": False}, "devices"),
    ({"discover": "yes"}, "discover"),
    ({"address": "localhost"}, "address"),
    ({"interface": "eth0"}, "interface"),
    ({"cycle": 0}, "cycle"),
    ({"cycle": "60"}, "cycle"),
    ({"response_timeout": -1}, "response_timeout"),
    ({"rediscover": True}, "rediscover"),
    ({"port": 70000}, "port"),
    ({"units": ["026B01"]}, "units"),
    ({"units": {"026B": "x"}}, "units"),
    ({"units": {"026B01": "hot water"}}, "units"),
    ({"epcs": {"027D": "E4"}}, "epcs"),
    ({"epcs": {"027D01": ["E4"]}}, "epcs"),
    ({"epcs": {"027D": ["ZZ"]}}, "epcs"),
    ({"record_que": []}, "record_que"),
])
def test_every_argument_is_validated(args, name):
    with pytest.raises(ConfigError, match="argument '%s'" % name):
        EchonetLanReader(**args)


def test_readme_lan_example_builds_a_reader():
    """The README's LAN config block is a valid worker_def for EchonetLanReader."""
    from support import REPO
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## ECHONET Lite devices on the LAN"):]
    start = section.index("```python") + len("```python")
    block = section[start:section.index("```\n", start)]
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)   # noqa: S102 - our own README
    entry = namespace["worker_def"][1]
    assert entry["class"] is EchonetLanReader
    reader = entry["class"](**entry["args"])                # validates every argument, no I/O
    assert reader.nodes == ["192.168.1.20", "192.168.1.21"] and reader.discover
    assert reader.unit_for("192.168.1.20", 0x027D01) == "battery"


def test_two_devices_with_one_unit_id_are_not_taken_for_a_move(fake_clock, running, caplog):
    caplog.set_level(logging.INFO, logger="keilib.lan")
    reader_addr, first, second = addresses(3)
    running(LanNode(make_model("solar"), first, clock=fake_clock, multicast=False))
    running(LanNode(make_model("solar"), second, clock=fake_clock, multicast=False))
    q = queue.Queue()
    reader = running(EchonetLanReader(record_que=q, devices=[first, second], address=reader_addr, clock=fake_clock))
    wait_for(lambda: [r for r in caplog.records if "has the unit id" in r.getMessage()], timeout=10)
    fake_clock.advance(60)
    wait_for(lambda: counter(reader, "answers") == 2, timeout=10)
    assert reader.devices["027901"].address in (first, second) and len(reader.devices) == 1
    assert not [r for r in caplog.records if "is now at" in r.getMessage()]
    # named apart, both are read
    q2 = queue.Queue()
    reader2_addr, = addresses(1)
    running(EchonetLanReader(record_que=q2, devices=[first, second], address=reader2_addr, clock=fake_clock,
                             units={"%s/027901" % second: "roof2"}))
    records = []
    wait_for(lambda: {r.unit for r in drain(q2, records)} == {"027901", "roof2"}, timeout=10)


@pytest.mark.parametrize("args, name", [
    ({"devices": ["fe80::1"], "address": "::"}, "devices"),                 # link-local needs its interface
    ({"devices": ["fe80::1%eth 0"], "address": "::"}, "devices"),
    ({"devices": ["fe80::1%2"], "address": "::"}, "devices"),              # by name, not index
    ({"devices": ["fd00::20"]}, "devices"),                                # IPv6 device, no IPv6 'address'
    ({"devices": ["192.168.1.20"], "address": "::"}, "devices"),           # and the other way round
    ({"address": ["0.0.0.0", "127.0.0.1"]}, "address"),                    # one per family
    ({"address": []}, "address"),
    ({"address": "::", "interface6": ""}, "interface6"),
    ({"address": "::", "interface6": ["eth0", "a/b"]}, "interface6"),
    ({"address": "::", "interface6": 6}, "interface6"),
    ({"interface6": "eth0"}, "interface6"),                                # IPv4 only: nothing to join
    ({"units": {"fe80::1/026B01": "x"}}, "units"),
])
def test_ipv6_arguments_are_validated(args, name):
    with pytest.raises(ConfigError, match="argument '%s'" % name):
        EchonetLanReader(**args)


def test_ipv6_addresses_are_kept_in_one_canonical_form():
    reader = EchonetLanReader(devices=["192.168.1.20", "FD00::0020", "fe80::1%eth0"], address=["0.0.0.0", "::"],
                              units={"fd00::20/027D01": "battery"})
    assert reader.nodes == ["192.168.1.20", "fd00::20", "fe80::1%eth0"]
    assert reader.listen == {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"} and reader.interface6 is None
    assert reader.unit_for("fd00::20", 0x027D01) == "battery"
    # a link-local listening address names the interface multicast uses
    assert EchonetLanReader(address="fe80::2%eth1").interface6 == ["eth1"]
    assert EchonetLanReader(address="::", interface6="eth0").interface6 == ["eth0"]


def test_socket_addresses_round_trip_through_the_kernels_form():
    from keilib import inet
    lo = socket.if_nameindex()[0]                   # a real interface: (index, name)
    assert inet.sockaddr("fe80::1%%%s" % lo[1], 3610) == ("fe80::1", 3610, 0, lo[0])
    assert inet.from_sockaddr(("fe80::1", 3610, 0, lo[0])) == "fe80::1%%%s" % lo[1]
    assert inet.from_sockaddr(("fe80::1%%%s" % lo[1], 3610, 0, lo[0])) == "fe80::1%%%s" % lo[1]
    assert inet.from_sockaddr(("::1", 3610, 0, 0)) == "::1"
    assert inet.sockaddr("127.0.0.5", 3610) == ("127.0.0.5", 3610)
    with pytest.raises(OSError):
        inet.sockaddr("fe80::1%nosuchif0", 3610)


def test_an_inf_heard_twice_is_recorded_once_and_a_new_one_with_the_same_tid_is_not_a_copy(fake_clock, running):
    """A box with two links to one LAN hears each multicast INF on both."""
    reader_addr, node_addr = addresses(2)
    node = FakeNode(node_addr)
    try:
        q = queue.Queue()
        reader = running(EchonetLanReader(record_que=q, devices=[node_addr], address=reader_addr, cycle=3600,
                                          clock=fake_clock))
        ask, sender = node.receive()
        node.sock.sendto(el.Frame(ask.tid, el.NODE_PROFILE, el.CONTROLLER, el.ESV.GET_RES,
                                  (el.Property(0xD6, el.encode_instance_list([el.STORAGE_BATTERY])),)).encode(),
                         sender)
        node.receive()                                    # the Get: left unanswered
        records = []

        def inf(code):
            return el.Frame(0, el.STORAGE_BATTERY, el.NODE_PROFILE, el.ESV.INF,
                            (el.Property(0xCF, bytes([code])),)).encode()
        for frame in (inf(0x43), inf(0x43), inf(0x44)):   # TID 0 each time, as some devices send
            node.sock.sendto(frame, sender)
        wait_for(lambda: counter(reader, "notifications") == 2, timeout=10)
        assert counter(reader, "inf_copies") == 1
        assert [(r.sensor, r.value) for r in drain(q, records)] == [("CF", 0x43), ("CF", 0x44)]
    finally:
        node.close()
