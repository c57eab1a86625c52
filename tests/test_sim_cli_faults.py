"""Faults of ``python3 -m keilib.sim wisun`` in a separate process: switched at run
time through ``--control`` (one command a line on stdin, ``ok``/``error: ...`` on
stdout) and at start through ``--option`` (an unplug that needs the CLI's pty)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import List

import pytest
import serial

from support import PYTHON, REPO, subprocess_env, wait_for

RBID = "00112233445566778899AABBCCDDEEFF"      # the simulator's default Route-B ID
PWD = "0123456789AB"                           # ... and password
OWN = "FE80:0000:0000:0000:021D:1290:ABCD:EF01"
METER = "FE80:0000:0000:0000:021D:1290:1234:5678"
FIXED = ["--option", "mac=001D1290ABCDEF01", "--option", "meter_mac=001D129012345678",
         "--option", "channel=21", "--option", "pan=8888"]
GET_E7 = bytes.fromhex("1081000105FF010288016201E700")
SENDTO_E7 = b"SKSENDTO 1 %s 0E1A 1 0 %04X " % (METER.encode(), len(GET_E7)) + GET_E7


class Line:
    """CR LF lines from a pyserial port (bp35c2 with WOPT 01: hex ERXUDP)."""

    def __init__(self, port: serial.SerialBase):
        self.port = port
        self.buf = bytearray()

    def line(self, timeout: float = 3.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            assert time.monotonic() < deadline, "no line; have %r" % bytes(self.buf)
            self.buf += self.port.read(self.port.in_waiting or 1)
        index = self.buf.index(b"\r\n")
        text = bytes(self.buf[:index]).decode("latin-1")
        del self.buf[:index + 2]
        return text

    def until(self, prefix: str, timeout: float = 3.0) -> List[str]:
        got = [self.line(timeout)]
        while not got[-1].startswith(prefix):
            got.append(self.line(timeout))
        return got

    def command(self, text: str, count: int) -> List[str]:
        self.port.write(text.encode("ascii") + b"\r\n")
        return [self.line() for _ in range(count)]

    def join(self) -> None:
        """Echo off, hex ERXUDP, credentials, SKJOIN; returns after the instance-list INF."""
        assert self.command("SKSREG SFE 0", 2) == ["SKSREG SFE 0", "OK"]
        self.port.write(b"WOPT 01\r")
        wait_for(lambda: self.port.read(3) == b"OK\r", 3.0, message="WOPT OK")
        self.port.write(b"SKSETRBID %s\r\nSKSETPWD C %s\r\nSKSREG S2 21\r\nSKSREG S3 8888\r\n"
                        b"SKJOIN %s\r\n" % (RBID.encode(), PWD.encode(), METER.encode()))
        lines = [self.line()]
        while not lines[-1].startswith(("EVENT 24", "EVENT 25")):
            lines.append(self.line())
        assert lines[-1] == "EVENT 25 %s 0" % METER, lines
        assert self.line().startswith("ERXUDP ")    # the instance-list INF


@pytest.fixture
def cli(tmp_path):
    """cli(*args) -> (process, pty link); the process is stopped with SIGTERM afterwards."""
    procs = []

    def _start(*args: str, control: bool = True):
        link = str(tmp_path / ("wisun%d" % len(procs)))
        command = [PYTHON, "-m", "keilib.sim", "wisun", "--kind", "bp35c2", "--latency", "zero",
                   "--link", link] + FIXED + list(args) + (["--control"] if control else [])
        proc = subprocess.Popen(command, cwd=str(REPO), env=subprocess_env(),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1)
        procs.append(proc)
        slave = proc.stdout.readline().strip()
        assert slave.startswith("/dev/pts/") and os.path.realpath(link) == slave, \
            proc.stderr.read() if proc.poll() is not None else slave
        return proc, link

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


def control(proc: subprocess.Popen, command: str) -> str:
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().rstrip("\n")


def test_control_switches_faults_of_the_running_process(cli):
    proc, link = cli()
    port = serial.Serial(link, 115200, timeout=0.05)
    host = Line(port)
    try:
        assert control(proc, "out_of_range on") == "ok"
        assert host.command("SKSCAN 2 FFFFFFFF 6 0", 3) == [
            "SKSCAN 2 FFFFFFFF 6 0", "OK", "EVENT 22 %s 0" % OWN]       # nothing found
        assert control(proc, "out_of_range off") == "ok"
        port.write(b"SKSCAN 2 FFFFFFFF 6 0\r\n")
        assert host.until("EVENT 22")[2] == "EVENT 20 %s 0" % OWN       # found again

        host.join()
        assert control(proc, "duplicate_reply 1") == "ok"
        port.write(SENDTO_E7)
        assert host.line() == "" and host.line() == "EVENT 21 %s 0 00" % METER
        assert host.line() == "OK"
        first, second = host.line(), host.line()
        assert first == second and first.startswith("ERXUDP ")

        assert control(proc, "bad_erxudp truncated 1") == "ok"
        port.write(SENDTO_E7)
        fields = host.until("ERXUDP")[-1].split()
        assert len(fields) == 10 and len(fields[9]) < 2 * int(fields[8], 16)

        assert control(proc, "silent on") == "ok"
        port.write(SENDTO_E7)
        assert host.until("OK")[-2] == "EVENT 21 %s 0 00" % METER
        assert control(proc, "silent off") == "ok"

        assert control(proc, "tx_limit 30") == "ok"
        assert host.line() == "EVENT 32 %s 0" % OWN
        assert control(proc, "garbage") == "ok"
        assert host.line() == b"\x00\xff\xfe\x80 EVE\xe3\x81\x82#%".decode("latin-1")
        assert control(proc, "peer_terminate") == "ok"
        assert host.until("EVENT 26")[-1] == "EVENT 26 %s 0" % METER

        assert control(proc, "meteor").startswith("error: unknown fault 'meteor'")
        assert control(proc, "silent maybe").startswith("error: bad value 'maybe' for on")
        proc.stdin.write("\n  \n")                                   # blank lines: no answer
        assert control(proc, "reset") == "ok"
        assert host.command("SKTERM", 2) == ["SKTERM", "FAIL ER10"]    # power-on: echo again
    finally:
        port.close()


def test_control_unplug_and_replug_the_pty(cli):
    proc, link = cli()
    port = serial.Serial(link, 115200, timeout=0.05)
    try:
        assert control(proc, "unplug") == "ok"
        assert not os.path.lexists(link)
        with pytest.raises(serial.SerialException):
            port.write(b"SKVER\r\n")
            port.read(1)
    finally:
        port.close()
    assert control(proc, "replug") == "ok"
    port = serial.Serial(link, 115200, timeout=0.05)
    try:
        assert Line(port).command("SKVER", 3) == ["SKVER", "EVER 1.5.2", "OK"]
        assert control(proc, "unplug 0.3") == "ok"                    # back by itself
        assert not os.path.lexists(link)
        wait_for(lambda: os.path.lexists(link), 3.0, message="the pty to come back")
    finally:
        port.close()


def test_control_eof_keeps_serving_until_sigterm(cli):
    proc, link = cli()
    proc.stdin.close()                                 # the control reader ends, nothing else
    time.sleep(0.2)
    assert proc.poll() is None
    port = serial.Serial(link, 115200, timeout=0.05)
    try:
        assert Line(port).command("SKVER", 3) == ["SKVER", "EVER 1.5.2", "OK"]
    finally:
        port.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert proc.stdout.read() == ""                    # no answers to anything


def test_start_option_unplug_after_pulls_the_cli_pty(cli):
    proc, link = cli("--option", "unplug_after=0.1", "--option", "unplug_for=0.5", control=False)
    port = serial.Serial(link, 115200, timeout=0.05)
    host = Line(port)
    try:
        host.join()
        gone = time.monotonic()
        wait_for(lambda: not os.path.lexists(link), 3.0, message="the link to vanish")
        with pytest.raises(serial.SerialException):
            port.write(b"SKVER\r\n")
            port.read(1)
    finally:
        port.close()
    wait_for(lambda: os.path.lexists(link), 3.0, message="the link to return")
    assert time.monotonic() - gone >= 0.4
    port = serial.Serial(link, 115200, timeout=0.05)
    try:
        assert Line(port).command("SKTERM", 2) == ["SKTERM", "FAIL ER10"]   # fresh: no session
    finally:
        port.close()
    assert proc.poll() is None


@pytest.mark.parametrize("args,message", [
    (["--option", "bad_erxudp=sideways"], "bad value 'sideways' for option 'bad_erxudp'"),
    (["--option", "unplug_for=3"], "option 'unplug_for' needs 'unplug_after'"),
])
def test_command_line_refuses_bad_fault_options(args, message):
    result = subprocess.run([PYTHON, "-m", "keilib.sim", "wisun"] + args, cwd=str(REPO),
                            env=subprocess_env(), capture_output=True, text=True, timeout=20)
    assert result.returncode == 2 and message in result.stderr


def test_control_needs_a_device_with_faults():
    result = subprocess.run([PYTHON, "-m", "keilib.sim", "sensor", "--control"], cwd=str(REPO),
                            env=subprocess_env(), capture_output=True, text=True, timeout=20)
    assert result.returncode == 2 and "--control: the sensor device has no run-time faults" \
        in result.stderr
