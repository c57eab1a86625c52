"""A running daemon imports what its configuration uses, and no more (issue 18).

Each module costs a Pi memory for as long as kei runs, and start-up time:
typing 0.4 MB, dataclasses with inspect 1.2 MB, argparse 0.5 MB, pathlib with
urllib and ipaddress 0.5 MB, uuid 0.2 MB, logging.handlers with socket and
pickle 0.7 MB (kei.log rotates by keilib.logutil.DailyLogFile), requests 12 MB
(the uploader's POST is the standard library's: 3.6 MB).  A real kei.py is
started on a real pty with ``python3 -S -X importtime`` (-S: this machine's
.pth start-up hooks import typing and more before kei runs; the installed
packages are put on PYTHONPATH instead), and the modules it imported by the
time its port was open are read from that report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import tty

import pytest

from support import PYTHON, REPO, read_text, wait_for

# Never needed by a running daemon with these configs.
HEAVY = {"typing", "dataclasses", "inspect", "argparse", "pathlib", "uuid", "ipaddress", "requests",
         "logging.handlers", "pickle", "keilib.sim", "keilib.sdnotify", "keilib.fanout"}

SERIAL = """
import queue
from keilib.recorder import FileRecorder
from keilib.serial import SerialReader

record_que = queue.Queue(50)
worker_def = [
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'lean'}},
    {'class': SerialReader, 'args': {'port': %(port)r, 'baudrate': 115200, 'record_que': record_que}},
]
"""

BROUTE = """
import queue
from keilib.uploader import HttpPostUploader
from keilib.recorder import FileRecorder
from keilib.broute import BrouteReader, WiSunRL7023

record_que = queue.Queue(50)
upload_que = queue.Queue(50)
worker_def = [
    {'class': HttpPostUploader, 'args': {'upload_que': upload_que, 'target_url': 'http://127.0.0.1:9/up.php',
                                         'upload_key': 'leankey'}},
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'lean', 'upload_que': upload_que}},
    {'class': BrouteReader, 'args': {'wisundev': WiSunRL7023(port=%(port)r, baud=115200, type=WiSunRL7023.IPS),
                                     'broute_id': '00112233445566778899AABBCCDDEEFF',
                                     'broute_pwd': '0123456789AB', 'record_que': record_que}},
]
"""


def port_is_open(pid: int, path: str) -> bool:
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, name)) == path:
                return True
        except OSError:
            pass
    return False


def imported_by_a_running_daemon(tmp_path, config: str) -> set:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    (tmp_path / "keiconf.py").write_text(textwrap.dedent(config % {"port": path}))
    env = dict(os.environ)
    env.pop("DEBUG", None)
    # -S drops the site hooks; the interpreter's own package directories come by path.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in sys.path if p and os.path.isdir(p)])
    errors = tmp_path / "stderr.txt"
    with open(errors, "wb") as handle:
        proc = subprocess.Popen([PYTHON, "-S", "-X", "importtime", str(REPO / "kei.py")], cwd=tmp_path,
                                env=env, stdout=subprocess.DEVNULL, stderr=handle)
    try:
        wait_for(lambda: port_is_open(proc.pid, path) or proc.poll() is not None, timeout=30,
                 message="kei.py opening its port")
        assert proc.poll() is None, read_text(errors)[-3000:]
        wait_for(lambda: "started with" in read_text(tmp_path / "kei.log"), timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        os.close(slave)
    report = read_text(errors)
    modules = {line.split("|")[2].strip() for line in report.splitlines() if line.startswith("import time:")}
    assert "keilib.daemon" in modules and "serial" in modules, report[-3000:]   # the report is real
    return modules


def test_a_serial_box_imports_none_of_the_heavy_modules(tmp_path):
    modules = imported_by_a_running_daemon(tmp_path, SERIAL)
    assert "keilib.recorder" in modules and "keilib.serial" in modules
    assert modules & (HEAVY | {"socket"}) == set()     # nothing of a serial box talks to a network


def test_a_broute_box_with_an_uploader_does_not_load_requests(tmp_path):
    modules = imported_by_a_running_daemon(tmp_path, BROUTE)
    assert {"keilib.broute", "keilib.skstack", "keilib.echonet", "keilib.uploader"} <= modules
    # The spool works with pathlib, which requests needs anyway once it uploads.
    assert modules & (HEAVY - {"pathlib", "ipaddress"}) == set()


@pytest.mark.parametrize("check", [False, True])
def test_a_missing_optional_package_is_a_config_error_naming_the_commands(tmp_path, check):
    (tmp_path / "keiconf.py").write_text(textwrap.dedent("""
        from fixture_workers import NeedsMissingPackage
        worker_def = [{'class': NeedsMissingPackage, 'args': {}}]
    """))
    from support import subprocess_env
    result = subprocess.run([PYTHON, str(REPO / "kei.py")] + (["--check"] if check else []), cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert ("worker_def[0] (NeedsMissingPackage): needs the Python package for 'kei_no_such_package'"
            in result.stderr)
    assert "pip install kei-no-such-package" in result.stderr and "apt install python3-none" in result.stderr
    assert not (tmp_path / "kei.log").exists() or "started with" not in read_text(tmp_path / "kei.log")


@pytest.mark.parametrize("check", [False, True])
def test_an_optional_package_that_fails_to_import_is_a_config_error(tmp_path, check):
    # Present but broken: the start and --check both import it and say what is wrong.
    (tmp_path / "kei_broken_package.py").write_text("raise ImportError('its C part is missing')\n")
    (tmp_path / "keiconf.py").write_text(textwrap.dedent("""
        from fixture_workers import NeedsBrokenPackage
        worker_def = [{'class': NeedsBrokenPackage, 'args': {}}]
    """))
    from support import subprocess_env
    result = subprocess.run([PYTHON, str(REPO / "kei.py")] + (["--check"] if check else []), cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "needs the Python package for 'kei_broken_package'" in result.stderr
    assert "its C part is missing" in result.stderr
