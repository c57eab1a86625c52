"""Idle cost: readers wait on their port until bytes come or something is due,
and a stop wakes them at once (issue 18).

A port that can be woken (pyserial's ``cancel_read``: a local device or pty,
``sim://``) is read with a long timeout; other ports (``socket://``) keep
short reads, so that a stop is still noticed within READ_TIMEOUT.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import tty

import pytest

from keilib.broute import REAUTH_WAIT, BrouteReader
from keilib.serial import SerialReader
from keilib.sim import protocol_sim, register_url_handler
from keilib.sim.wisun import WisunModule
from keilib.skstack import Cancelled, Event, WiSunRL7023
from support import wait_for

ROUTE_B_ID = "00112233445566778899AABBCCDDEEFF"
PASSWORD = "0123456789AB"
EVENT_21 = b"EVENT 21 FE80:0000:0000:0000:021D:1290:1234:5678 00\r\n"


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


class ReadLog:
    """Instrumentation around a real port's read(): the timeout of each call."""

    def __init__(self, port):
        self.port = port
        self.timeouts = []
        self.plain_read = port.read
        port.read = self.read

    def read(self, size=1):
        self.timeouts.append(self.port.timeout)
        return self.plain_read(size)


def test_receive_blocks_until_bytes_come_not_in_short_slices(pty_pair):
    master, path = pty_pair
    device = WiSunRL7023(path, 115200, type=WiSunRL7023.IPS)
    device.open()
    try:
        log = ReadLog(device.serial)
        got = []
        receiver = threading.Thread(target=lambda: got.append(device.receive(30.0)))
        receiver.start()
        wait_for(lambda: log.timeouts, message="the read started")
        os.write(master, EVENT_21)
        receiver.join(10)
        assert isinstance(got[0], Event) and got[0].num == 0x21
        # reads up to the deadline (the line may come in two), not 0.2 s at a time
        assert all(timeout > 25 for timeout in log.timeouts)
    finally:
        device.close()


def test_a_stop_wakes_a_long_receive_at_once(pty_pair):
    master, path = pty_pair
    device = WiSunRL7023(path, 115200, type=WiSunRL7023.IPS)
    device.open()
    stop = threading.Event()
    device.interrupt = stop
    outcome = []

    def receive():
        try:
            outcome.append(device.receive(60.0))
        except Cancelled:
            outcome.append("cancelled")
    try:
        log = ReadLog(device.serial)
        receiver = threading.Thread(target=receive)
        receiver.start()
        wait_for(lambda: log.timeouts, message="the read started")
        stop.set()
        device.wake()                   # what BrouteReader.stop() does
        receiver.join(10)               # the read's own timeout is 60 s
        assert not receiver.is_alive() and outcome == ["cancelled"]
    finally:
        device.close()
    device.wake()                       # a closed port: nothing to wake, no error


def test_a_socket_port_keeps_short_reads():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    device = WiSunRL7023("socket://127.0.0.1:%d" % server.getsockname()[1], 115200, type=WiSunRL7023.IPS)
    device.open()
    try:
        log = ReadLog(device.serial)
        assert device.receive(0.5) is None
        assert log.timeouts and set(log.timeouts) == {device.READ_TIMEOUT}
    finally:
        device.close()
        server.close()


def test_sim_port_cancel_read_ends_one_read():
    register_url_handler()
    module = WisunModule(kind="ips", latency="zero")
    protocol_sim.register("cancel", module)
    try:
        import serial
        port = serial.serial_for_url("sim://wisun?name=cancel", timeout=60)
        got = []
        reader = threading.Thread(target=lambda: got.append(port.read(1)))
        reader.start()
        port.cancel_read()
        reader.join(10)
        assert not reader.is_alive() and got == [b""]
        port.write(b"SKVER\r\n")        # the next read is a normal one
        assert b"EVER" in port.read_until(b"OK\r\n")
        port.close()
    finally:
        module.close()
        protocol_sim.forget("cancel")


def test_no_busy_loop_while_the_session_or_sending_is_paused():
    # A request overdue while the session is lost (EVENT 29) or sending is
    # paused (EVENT 32) is not sent, so it must not make the reader spin.
    reader = BrouteReader(WiSunRL7023("/dev/null", 115200, type=WiSunRL7023.IPS), ROUTE_B_ID, PASSWORD,
                          requests=[{"epc": ["E7"], "cycle": 10}], record_que=queue.Queue())
    now = 5000.0
    reader.last_frame_at = now
    reader.unit_code = 1
    for group in reader.groups + [reader.factors]:
        group.next_due = now - 30          # overdue
    assert reader.seconds_to_next(now) == 0
    reader.session_lost_at = now - 5
    assert reader.seconds_to_next(now) == pytest.approx(REAUTH_WAIT - 5)
    reader.session_lost_at = None
    reader.tx_blocked = True
    reader.tx_check_at = now + 120
    assert reader.seconds_to_next(now) == pytest.approx(120)


def test_serial_reader_idle_read_is_long_and_stop_ends_it(pty_pair):
    master, path = pty_pair
    record_que: "queue.Queue" = queue.Queue()
    reader = SerialReader(path, 115200, record_que=record_que)
    reader.start()
    try:
        wait_for(lambda: reader.connected, message="port open")
        assert reader._serial.timeout == SerialReader.IDLE_READ_TIMEOUT
        os.write(master, b"unit1,temp,21.5,1\r\n")
        assert record_que.get(timeout=5).value == 21.5
    finally:
        assert reader.stop(5)           # wakes the read (5 s timeout) at once
