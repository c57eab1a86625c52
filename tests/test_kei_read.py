"""``kei read``: one join, one Get, one line (or JSON), SKTERM, an exit status scripts can use."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

from keilib import read
from keilib.sim import protocol_sim
from keilib.sim.wisun import WisunModule
from support import PYTHON, REPO, read_text, subprocess_env, wait_for

KEI = str(REPO / "kei.py")
ROUTE_B_ID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "PASSWORD1234"
CREDENTIALS = ["--id", ROUTE_B_ID, "--password", PASSWORD]


@pytest.fixture
def named_module():
    """A simulated BP35C2 in the sim:// registry, so the test can look at its meter."""
    name = "read-%s" % uuid.uuid4().hex[:8]
    module = WisunModule(kind="bp35c2", route_b_id=ROUTE_B_ID, password=PASSWORD, latency="zero")
    protocol_sim.register(name, module)
    try:
        yield name, module
    finally:
        protocol_sim.forget(name)
        module.close()


def served(module, epc):
    return [item.value for item in module.meter.served if item.esv in (0x72, 0x52) and item.epc == epc][-1]


def test_reads_the_listed_properties_once_and_ends_the_session(named_module, tmp_path, monkeypatch,
                                                               capsys, caplog):
    name, module = named_module
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    status = read.main(["--port", "sim://wisun?name=" + name, "--device", "bp35c2", *CREDENTIALS,
                        "E7", "E8", "E0"])
    out, err = capsys.readouterr()
    assert status == 0, err
    match = re.fullmatch(r"E7:(-?\d+) E8R:([\d.]+) E8T:([\d.]+) E0:([\d.]+)\n", out)
    assert match, out
    assert int(match.group(1)) == served(module, 0xE7)
    assert float(match.group(2)) == pytest.approx(served(module, 0xE8).r)
    assert float(match.group(3)) == pytest.approx(served(module, 0xE8).t)
    assert float(match.group(4)) == pytest.approx(served(module, 0xE0) * 0.1)   # unit 0.1 kWh
    # each asked once (the reader also asks the factors D3, D7, E1 and the meter's identity)
    gets = [item.epc for item in module.meter.served if item.esv == 0x72]
    assert [gets.count(epc) for epc in (0xD3, 0xD7, 0xE1, 0xE7, 0xE8, 0xE0)] == [1] * 6, gets
    assert "session terminated (SKTERM)" in caplog.text
    assert ROUTE_B_ID not in caplog.text + err and PASSWORD not in caplog.text + err
    assert (tmp_path / "scancache.json").is_file()      # the next run joins without a scan


def test_json_output_and_credentials_from_the_environment(named_module, tmp_path, monkeypatch, capsys):
    name, module = named_module
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEI_BROUTE_ID", ROUTE_B_ID)
    monkeypatch.setenv("KEI_BROUTE_PWD", PASSWORD)
    monkeypatch.setenv("KEI_DEVICE", "bp35c2")
    status = read.main(["--port", "sim://wisun?name=" + name, "--json", "E7", "E3"])
    out, err = capsys.readouterr()
    assert status == 0, err
    values = json.loads(out)
    assert list(values) == ["E7", "E3"]
    assert values["E7"] == served(module, 0xE7)
    assert values["E3"] is None                      # no reverse flow: the meter refuses E3
    assert "the meter does not provide E3" in err


def test_missing_credentials_are_a_usage_error_that_names_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("KEI_BROUTE_ID", "KEI_BROUTE_PWD", "KEI_PORT", "KEI_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    assert read.main(["--port", "sim://wisun?latency=zero", "--device", "ips"]) == 2
    err = capsys.readouterr().err
    assert "--id (or KEI_BROUTE_ID)" in err and "--password (or KEI_BROUTE_PWD)" in err
    assert read.main(["--port", "x", "--device", "ips", *CREDENTIALS, "E9"]) == 2


def test_a_keiconf_without_a_broute_reader_is_ignored_unless_named(named_module, tmp_path, monkeypatch, capsys):
    name, _ = named_module
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keiconf.py").write_text("worker_def = []\n")
    args = ["--port", "sim://wisun?name=" + name, "--device", "bp35c2", *CREDENTIALS]
    assert read.main(args + ["-c", "keiconf.py"]) == 2
    assert "keiconf.py has no BrouteReader entry" in capsys.readouterr().err
    assert read.main(args) == 0
    assert capsys.readouterr().out.startswith("E7:")


def test_a_module_that_does_not_answer_exits_1_with_the_reason(tmp_path, monkeypatch, capsys):
    """A real pty with nothing behind it: the module is silent."""
    monkeypatch.chdir(tmp_path)
    master, slave = os.openpty()
    try:
        status = read.main(["--port", os.ttyname(slave), "--device", "ips", *CREDENTIALS, "--timeout", "7"])
    finally:
        os.close(master)
        os.close(slave)
    err = capsys.readouterr().err
    assert status == 1
    assert "does not answer" in err and "kei read: no answer within 7 s" in err


def test_a_meter_that_refuses_the_join_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status = read.main(["--port", "sim://wisun?kind=dss&latency=zero&join_failures=9&id=" + ROUTE_B_ID,
                        "--device", "dss", "--id", ROUTE_B_ID, "--password", PASSWORD, "--timeout", "4"])
    err = capsys.readouterr().err
    assert status == 1
    assert "the meter refused the join" in err
    assert PASSWORD not in err


@pytest.fixture
def sim_pty():
    sim = subprocess.Popen([sys.executable, "-m", "keilib.sim", "wisun", "--kind", "dss", "--latency", "zero",
                            "--id", ROUTE_B_ID, "--password", PASSWORD],
                           cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        path = sim.stdout.readline().strip()
        assert path.startswith("/dev/pts/"), path
        yield path
    finally:
        sim.terminate()
        sim.wait(timeout=10)


CONFIG = """
import queue
from keilib.recorder import FileRecorder
from keilib.broute import BrouteReader, WiSunRL7023

record_que = queue.Queue(50)
worker_def = [
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'run'}},
    {'class': BrouteReader, 'args': {
        'wisundev': WiSunRL7023(%(port)r, 115200, type=WiSunRL7023.DSS),
        'broute_id': %(id)r, 'broute_pwd': %(pwd)r,
        'requests': [{'epc': ['E7'], 'cycle': 10}], 'record_que': record_que}},
]
"""


def test_settings_from_keiconf_over_a_pty_and_refusal_while_the_daemon_holds_the_port(tmp_path, sim_pty):
    (tmp_path / "keiconf.py").write_text(textwrap.dedent(CONFIG % {"port": sim_pty, "id": ROUTE_B_ID,
                                                                   "pwd": PASSWORD}))
    env = subprocess_env()
    for name in ("KEI_BROUTE_ID", "KEI_BROUTE_PWD", "KEI_PORT", "KEI_DEVICE"):
        env.pop(name, None)
    # Everything from keiconf.py: no option at all.
    result = subprocess.run([PYTHON, KEI, "read", "E7", "E8"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=40)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"E7:-?\d+ E8R:[\d.]+ E8T:[\d.]+\n", result.stdout), result.stdout
    # Now the daemon polls the same stick: kei read refuses, and says why.
    daemon = subprocess.Popen([PYTHON, KEI], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "B-route: INIT -> OPEN" in read_text(tmp_path / "kei.log"), timeout=20)
        busy = subprocess.run([PYTHON, KEI, "read"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=30)
        assert busy.returncode == 3, busy.stderr
        assert "%s is in use" % sim_pty in busy.stderr
        assert busy.stdout == ""
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            assert daemon.wait(timeout=15) == 0
        finally:
            daemon.kill()
            daemon.communicate()
