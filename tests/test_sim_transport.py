"""The simulator's transports: pty (unplug/replug through a by-id style symlink),
the sim:// URL handler and its registry, the command line, the Scheduler."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
import serial

import keilib.sim
from keilib.sim import protocol_sim
from keilib.sim.transport import PtyTransport, Scheduler
from keilib.sim.wisun import WisunModule

from support import PYTHON, REPO, subprocess_env, wait_for

RBID = "00112233445566778899AABBCCDDEEFF"
PWD = "0123456789AB"


@pytest.fixture(autouse=True)
def url_handler():
    keilib.sim.register_url_handler()
    yield
    protocol_sim.forget_all()


def read_until(port: serial.SerialBase, marker: bytes, timeout: float = 3.0) -> bytes:
    data = bytearray()
    deadline = time.monotonic() + timeout
    while marker not in data:
        assert time.monotonic() < deadline, "no %r; got %r" % (marker, bytes(data))
        data += port.read(port.in_waiting or 1)
    return bytes(data)


def join(port: serial.SerialBase, module: WisunModule) -> None:
    port.write(b"SKSETRBID %s\r\nSKSETPWD C %s\r\nSKSREG S2 %02X\r\nSKSREG S3 %04X\r\nSKJOIN %s\r\n"
               % (RBID.encode(), PWD.encode(), module.channel, module.pan_id,
                  module.meter_address.encode()))
    read_until(port, b"EVENT 25")
    assert module.session_up


# ---------------------------------------------------------------------------
# pty
# ---------------------------------------------------------------------------
def test_pty_unplug_and_replug_through_the_symlink(tmp_path):
    link = str(tmp_path / "usb-Tessera_RL7023-if00")
    module = WisunModule(kind="ips", latency="zero", route_b_id=RBID, password=PWD)
    with PtyTransport(module, link_path=link) as pty:
        assert os.path.realpath(link) == pty.slave_path
        port = serial.Serial(link, 115200, timeout=0.05)
        port.write(b"SKSREG SFE 0\r\n")
        read_until(port, b"OK\r\n")
        join(port, module)

        pty.unplug()                                   # the stick is pulled
        assert not os.path.lexists(link)
        with pytest.raises(serial.SerialException):
            port.write(b"SKVER\r\n")
            port.read(1)
        port.close()
        with pytest.raises(serial.SerialException):
            serial.Serial(link, 115200, timeout=0.05)

        pty.replug()                                   # ...and plugged back in
        assert os.path.realpath(link) == pty.slave_path
        port = serial.Serial(link, 115200, timeout=0.05)
        port.write(b"SKTERM\r\n")                      # powered up afresh: echo on, no session
        assert read_until(port, b"FAIL ER10\r\n") == b"SKTERM\r\nFAIL ER10\r\n"
        assert not module.session_up
        port.close()
    assert not os.path.lexists(link)


def test_pty_survives_the_host_closing_and_reopening(tmp_path):
    module = WisunModule(kind="bp35c2", latency="zero")
    with PtyTransport(module) as pty:
        for _ in range(2):
            port = serial.Serial(pty.slave_path, 115200, timeout=0.05)
            port.write(b"SKVER\r\n")
            assert read_until(port, b"OK\r\n") == b"SKVER\r\nEVER 1.5.2\r\nOK\r\n"
            port.close()


# ---------------------------------------------------------------------------
# sim://
# ---------------------------------------------------------------------------
def test_sim_url_registry_reopens_the_same_module_and_meter():
    url = "sim://wisun?kind=ips&latency=zero&id=%s&password=%s&name=reopen" % (RBID, PWD)
    port = serial.serial_for_url(url, timeout=0.05)
    module = protocol_sim.get_device("reopen")
    assert module.kind.key == "ips"
    join(port, module)
    port.close()
    port = serial.serial_for_url(url, timeout=0.05)     # reconnect: same module, session kept
    assert protocol_sim.get_device("reopen") is module
    port.write(b"SKTERM\r\n")
    assert read_until(port, b"EVENT 27").startswith(b"SKTERM\r\nOK\r\n")
    port.close()


def test_sim_url_unplug_and_replug():
    url = "sim://wisun?kind=bp35a1&latency=zero&name=pull"
    port = serial.serial_for_url(url, timeout=5)
    module = protocol_sim.get_device("pull")
    port.write(b"SKSREG SFE 0\r\n")
    read_until(port, b"OK\r\n")

    started = time.monotonic()
    timer = threading.Timer(0.1, protocol_sim.unplug, args=("pull",))
    timer.start()
    with pytest.raises(serial.SerialException):
        port.read(1)                                   # a blocked read sees the loss at once
    assert time.monotonic() - started < 2.0
    timer.join()
    with pytest.raises(serial.SerialException):
        port.write(b"SKVER\r\n")
    with pytest.raises(serial.SerialException, match="unplugged"):
        serial.serial_for_url(url, timeout=0.05)

    protocol_sim.replug("pull")
    with pytest.raises(serial.SerialException):
        port.read(1)                                   # the old handle stays dead
    port.close()
    port = serial.serial_for_url(url, timeout=0.05)
    assert module.sfe == 1                             # power-on state after the replug
    port.write(b"SKVER\r\n")
    assert read_until(port, b"OK\r\n") == b"SKVER\r\nEVER 1.2.10\r\nOK\r\n"
    port.close()


@pytest.mark.parametrize("url,message", [
    ("sim://wisun?colour=red", "unknown option(s) colour; expected sim://wisun?kind="),
    ("sim://wisun?kind=bp99", "bad value 'bp99' for option 'kind'"),
    ("sim://wisun?scale=-1", "bad value '-1' for option 'scale'"),
    ("sim://wisun?kind=ips&kind=dss", "given twice"),
    ("sim://toaster?kind=ips", "unknown simulated device 'toaster'"),
])
def test_sim_url_rejects_bad_urls_with_the_grammar(url, message):
    with pytest.raises(serial.SerialException) as info:
        serial.serial_for_url(url, timeout=0.05)
    assert message in str(info.value)


def test_unnamed_sim_device_lives_as_long_as_its_port():
    before = {thread.name for thread in threading.enumerate()}
    port = serial.serial_for_url("sim://wisun?kind=dss&latency=zero&scale=60&seed=4", timeout=0.2)
    assert any(thread.name == "sim-wisun-dss" for thread in threading.enumerate())
    started = time.monotonic()
    assert port.read(10) == b""                        # waits the port timeout, no data
    assert 0.15 <= time.monotonic() - started < 1.0
    port.write(b"ROPT\r")
    assert read_until(port, b"\r\n") == b"ROPT\rFAIL ER04\r\n"
    port.close()
    wait_for(lambda: not any(thread.name == "sim-wisun-dss" and thread.name not in before
                             for thread in threading.enumerate()), 3.0)


def test_register_url_handler_is_idempotent():
    keilib.sim.register_url_handler()
    keilib.sim.register_url_handler()
    assert serial.protocol_handler_packages.count("keilib.sim") == 1


# ---------------------------------------------------------------------------
# python3 -m keilib.sim
# ---------------------------------------------------------------------------
def test_command_line_serves_a_pty_until_sigterm(tmp_path):
    link = str(tmp_path / "wisun")
    proc = subprocess.Popen([PYTHON, "-m", "keilib.sim", "wisun", "--kind", "ips", "--latency", "zero",
                             "--seed", "9", "--link", link, "--option", "scan_min=6"],
                            cwd=str(REPO), env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        slave = proc.stdout.readline().strip()
        assert slave.startswith("/dev/pts/") and os.path.realpath(link) == slave
        port = serial.Serial(slave, 115200, timeout=0.05)
        port.write(b"SKVER\r\nSKINFO\r\n")
        answer = read_until(port, b"FFFE\r\nOK\r\n")
        assert answer.startswith(b"SKVER\r\nEVER 1.2.8\r\nOK\r\nSKINFO\r\nEINFO FE80:")
        port.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not os.path.lexists(link)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_command_line_rejects_unknown_options():
    result = subprocess.run([PYTHON, "-m", "keilib.sim", "wisun", "--option", "colour=red"],
                            cwd=str(REPO), env=subprocess_env(), capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 2
    assert "unknown option(s) colour" in result.stderr and "sim://wisun?kind=" in result.stderr


# ---------------------------------------------------------------------------
# Scheduler
# ---------------------------------------------------------------------------
def test_scheduler_runs_in_due_order_and_cancels_by_tag(fake_clock):
    scheduler = Scheduler(fake_clock)
    ran = []
    try:
        scheduler.call_later(2.0, ran.append, "b")
        scheduler.call_later(1.0, ran.append, "a")
        scheduler.call_later(1.0, ran.append, "a2")
        scheduler.call_later(1.5, ran.append, "gone", tag="scan")
        # A chained step counts from its parent's due time (1.0 + 0.5 < 2.0).
        scheduler.call_later(1.0, lambda: scheduler.call_later(0.5, ran.append, "chained"))
        scheduler.cancel("scan")
        assert scheduler.pending("scan") == 0
        fake_clock.advance(5.0)
        wait_for(lambda: len(ran) == 4)
        assert ran == ["a", "a2", "chained", "b"]
    finally:
        scheduler.close()
