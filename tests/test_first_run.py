"""A real first run as a newcomer meets it: --check warnings, what the terminal
shows, a missing or wrong pyserial, the README's commands."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

from support import PYTHON, REPO, read_text, subprocess_env

KEI = str(REPO / "kei.py")


def write(workdir: Path, text: str) -> None:
    (workdir / "keiconf.py").write_text(textwrap.dedent(text))


def test_check_warns_about_missing_ports_and_placeholders(tmp_path):
    example = (REPO / "keiconf_broute.py").read_text()
    (tmp_path / "keiconf.py").write_text(example)
    result = subprocess.run([PYTHON, KEI, "--check"], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert "kei: warning: worker_def[1] (BrouteReader): port /dev/serial/by-id/usb-FTDI_FT230X_Basic_UART_" \
           "xxxxxxxx-if00-port0 still holds the example's placeholder" in result.stdout
    assert "broute_id and broute_pwd are the example's" in result.stdout
    write(tmp_path, """
        import queue
        from keilib.recorder import FileRecorder
        from keilib.serial import SerialReader
        q = queue.Queue()
        worker_def = [{'class': SerialReader, 'args': {'port': '/dev/ttyUSB9', 'baudrate': 9600, 'record_que': q}},
                      {'class': FileRecorder, 'args': {'record_que': q}}]
        """)
    result = subprocess.run([PYTHON, KEI, "--check"], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0
    assert "kei: warning: worker_def[0] (SerialReader): port /dev/ttyUSB9 does not exist (yet?)" in result.stdout


def run_on_a_terminal(workdir: Path, seconds_until: str, timeout: float = 20) -> str:
    """kei.py with a pty as its terminal (stdin, stdout, stderr), until
    ``seconds_until`` shows on it; then Ctrl-C.  Returns what the terminal showed."""
    master, slave = pty.openpty()
    process = subprocess.Popen([PYTHON, KEI], cwd=workdir, env=subprocess_env(), stdin=slave,
                               stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    shown = b""
    try:
        deadline = time.monotonic() + timeout
        while seconds_until.encode() not in shown:
            assert time.monotonic() < deadline, shown.decode(errors="replace")
            try:
                shown += os.read(master, 4096)
            except OSError:
                break
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(15) == 0
        try:
            while True:
                chunk = os.read(master, 4096)
                if not chunk:
                    break
                shown += chunk
        except OSError:
            pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)
    return shown.decode(errors="replace")


def test_an_interactive_start_says_where_the_log_is_and_a_missing_port_once(tmp_path):
    write(tmp_path, """
        import queue
        from keilib.clock import ScaledClock
        from keilib.recorder import FileRecorder
        from keilib.serial import SerialReader
        clock = ScaledClock(60)          # a minute of retries in a second
        q = queue.Queue()
        worker_def = [{'class': SerialReader, 'args': {'port': '/dev/ttyUSB9', 'baudrate': 9600,
                                                       'record_que': q, 'clock': clock}},
                      {'class': FileRecorder, 'args': {'record_que': q}}]
        """)
    shown = run_on_a_terminal(tmp_path, "still cannot open it")
    assert "kei: running 2 worker(s); the log is %s" % (tmp_path / "kei.log") in shown
    assert "kei: config: worker_def[0] (SerialReader): port /dev/ttyUSB9 does not exist" in shown
    assert re.search(r"kei: port /dev/ttyUSB9: still cannot open it after \d+ s", shown)
    assert shown.count("still cannot open it") == 1
    assert "retrying every" in read_text(tmp_path / "kei.log")      # the details stay in the log


def fake_serial(tmp_path: Path, body: str) -> dict:
    package = tmp_path / "shadow" / "serial"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body)
    return subprocess_env(PYTHONPATH=os.pathsep.join([str(tmp_path / "shadow"), str(REPO)]))


def test_a_missing_pyserial_names_the_right_package(tmp_path):
    env = fake_serial(tmp_path, "raise ModuleNotFoundError(\"No module named 'serial'\")\n")
    result = subprocess.run([PYTHON, KEI, "--check"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=20)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "sudo apt install python3-serial" in result.stderr
    assert "python3 -m pip install pyserial" in result.stderr
    assert "'serial' on PyPI is a different one" in result.stderr


def test_the_wrong_serial_package_is_named_too(tmp_path):
    env = fake_serial(tmp_path, "# the PyPI package 'serial', not pyserial\n")
    result = subprocess.run([PYTHON, KEI, "--check"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=20)
    assert result.returncode == 2
    assert "'import serial' found another package" in result.stderr
    assert "sudo apt install python3-serial" in result.stderr


def readme_block(after: str) -> str:
    """The first ```sh block after the line ``after`` in README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("```sh\n", text.index(after)) + len("```sh\n")
    return text[start:text.index("```", start)].strip()


def test_the_readme_test_command_is_what_ci_runs():
    command = readme_block("Run the whole test suite")
    assert command == readme_block("テストの実行（CI と同じコマンド）")
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines[-1] == command == "bash tests/run.sh"


def run_demo_command(command: str, tmp_path: Path, env_path: str) -> tuple:
    """``command`` (a README line that ends in ``kei.py --demo``) in a fresh
    clone, until the demo prints a window line; then Ctrl-C to its group."""
    clone = tmp_path / "kei"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=60)
    env = {"PATH": env_path, "HOME": str(tmp_path), "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONFIG_FILE", "http_proxy", "https_proxy"):
        if name in os.environ:
            env[name] = os.environ[name]
    process = subprocess.Popen(["bash", "-c", command], cwd=clone, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = ""
    try:
        deadline = time.monotonic() + 50
        while "  power " not in output:
            assert time.monotonic() < deadline and process.poll() is None, output[-3000:]
            output += process.stdout.readline()
        os.killpg(process.pid, signal.SIGINT)
        output += process.communicate(timeout=20)[0]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    assert process.returncode == 0, output[-3000:]
    assert "kei DEMO: this is a SIMULATION" in output
    assert re.search(r"^\d\d:\d\d  power [+-]\d+ W", output, re.M)
    assert list((clone / "demo-data").glob("sum2*-demo.txt"))
    return clone, output


def test_the_quick_start_command_runs_the_demo_from_a_fresh_clone(tmp_path):
    """The README's first command, as written, in a fresh clone, from a shell
    whose python3 is a fresh virtual environment's (without pyserial): the
    demo runs with the distribution's Python and its packages."""
    import shutil
    import sys
    import pytest
    command = readme_block("## Quick start")
    assert command == readme_block("### はじめかた") == "sh demo.sh"
    if shutil.which("apt-get") is None or not os.path.exists("/usr/bin/python3"):
        pytest.skip("the Quick start installs with apt (Debian-family systems)")
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("installing with apt needs root or sudo without a password")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    _, output = run_demo_command(command, tmp_path, "%s:/usr/sbin:/usr/bin:/sbin:/bin" % (venv / "bin"))
    assert "Graph page: http://127.0.0.1:" in output


def test_the_virtual_environment_variant_runs_the_demo_too(tmp_path):
    """The README's other way, for systems without the packages: a fresh venv."""
    import sys
    text = (REPO / "README.md").read_text(encoding="utf-8")
    command = re.search(r"`(python3 -m venv \.venv && [^`]+kei\.py --demo)`", text).group(1)
    python_dir = os.path.dirname(os.path.realpath(sys.executable))
    base = os.path.dirname(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    clone, _ = run_demo_command(command, tmp_path, "%s:%s:/usr/bin:/bin" % (base, python_dir))
    assert (clone / ".venv" / "bin" / "python").exists()
