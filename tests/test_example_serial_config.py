"""The shipped keiconf_serial.py runs as shipped, with only its port line changed."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import List

import pytest

from keilib.clock import FakeClock
from keilib.record import Record
from keilib.sim.sensor import SensorNode
from support import PYTHON, REPO, read_text, subprocess_env, wait_for

KEI = str(REPO / "kei.py")
EXAMPLE = REPO / "keiconf_serial.py"
PORT_LINE = re.compile(r"^serial_port = .*$", re.M)
SIM_ARGS = ["--units", "2", "--sensors", "2", "--rate", "40", "--seed", "5", "--dup", "0.2", "--garbage", "0.2"]


def config_with_port(workdir: Path, port: str) -> None:
    text = EXAMPLE.read_text()
    assert len(PORT_LINE.findall(text)) == 1
    (workdir / "keiconf.py").write_text(PORT_LINE.sub(lambda _: "serial_port = %r" % port, text))


def raw_records(workdir: Path) -> List[Record]:
    return [Record.parse_raw_line(line) for path in sorted(workdir.glob("2*-mylogfile.txt"))
            for line in read_text(path).splitlines() if line]


def expected_readings(count: int) -> list:
    """What ``python3 -m keilib.sim sensor SIM_ARGS`` sends, computed in process (same seed)."""
    clock = FakeClock()
    node = SensorNode(units=2, sensors=2, rate=40, seed=5, dup=0.2, garbage=0.2, clock=clock)
    try:
        node.attach(lambda data: None)
        clock.advance(count / 40)
        wait_for(lambda: len(node.sent) >= count)
        return [(r.unit, r.sensor, r.value, r.data_id) for r in node.sent]
    finally:
        node.close()


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_shipped_config_passes_check_unchanged(tmp_path):
    (tmp_path / "keiconf.py").write_text(EXAMPLE.read_text())
    result = subprocess.run([PYTHON, KEI, "--check"], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.glob("2*"))            # --check starts nothing


def test_example_config_records_from_the_simulator_pty_and_stops_on_sigterm(tmp_path):
    link = str(tmp_path / "kei-sensor")
    sim = subprocess.Popen([PYTHON, "-m", "keilib.sim", "sensor", *SIM_ARGS, "--link", link],
                           cwd=str(REPO), env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    kei = None
    try:
        assert sim.stdout.readline().startswith("/dev/pts/")
        config_with_port(tmp_path, link)
        kei = subprocess.Popen([PYTHON, KEI], cwd=tmp_path, env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: len(raw_records(tmp_path)) >= 30, timeout=15, message="30 readings in the raw file")
        assert stop(kei) == 0
    finally:
        if kei is not None and kei.poll() is None:
            kei.kill()
            kei.wait()
        stop(sim)
        sim.stdout.close()
    got = [(r.unit, r.sensor, r.value, r.data_id) for r in raw_records(tmp_path)]
    expected = expected_readings(len(got) + 200)
    # The reader opened the port at some point of the stream: from there on it must
    # hold exactly what the simulator sent, resends and garbage removed.
    start = expected.index(got[1])
    assert got[1:] == expected[start:start + len(got) - 1]
    log = read_text(tmp_path / "kei.log")
    assert "SerialReader" in log and "skipped" in log and "- ERROR -" not in log


def test_example_config_with_the_in_process_simulator_url(tmp_path):
    # rate 8: the first line comes 125 ms after the open, after the reader's settle time
    config_with_port(tmp_path, "sim://sensor?units=2&sensors=2&rate=8&seed=5")
    kei = subprocess.Popen([PYTHON, KEI], cwd=tmp_path, env=subprocess_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(raw_records(tmp_path)) >= 6, timeout=15)
        assert stop(kei) == 0
    finally:
        if kei.poll() is None:
            kei.kill()
            kei.wait()
    got = [(r.unit, r.sensor, r.value, r.data_id) for r in raw_records(tmp_path)]
    assert got[:4] == [("unit1", "temp", got[0][2], "0"), ("unit1", "hum", got[1][2], "1"),
                       ("unit2", "temp", got[2][2], "0"), ("unit2", "hum", got[3][2], "1")]
    # the sum file gets its 10-minute block at shutdown
    summary = [line for path in tmp_path.glob("sum2*-mylogfile.txt") for line in read_text(path).splitlines()]
    assert {tuple(line.split(",")[1:3]) for line in summary} == {
        ("unit1", "temp"), ("unit1", "hum"), ("unit2", "temp"), ("unit2", "hum")}


@pytest.mark.parametrize("replacement, message", [
    ("serial_port = 42", "argument 'port' must be a device path or pyserial URL string, got 42"),
])
def test_a_broken_port_line_is_a_config_error(tmp_path, replacement, message):
    (tmp_path / "keiconf.py").write_text(PORT_LINE.sub(replacement, EXAMPLE.read_text()))
    result = subprocess.run([PYTHON, KEI, "--check"], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2 and message in result.stderr and "SerialReader" in result.stderr
