"""``kei status`` against real kei.py processes: healthy, degraded, stopped, killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time

from keilib import status
from support import PYTHON, REPO, read_text, subprocess_env, wait_for

KEI = str(REPO / "kei.py")
ROUTE_B_ID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "PASSWORD1234"

BROUTE_CONFIG = """
import queue
from keilib.recorder import FileRecorder
from keilib.broute import BrouteReader, BP35C2

record_que = queue.Queue(50)
worker_def = [
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'run'}},
    {'class': BrouteReader, 'args': {
        'wisundev': BP35C2('sim://wisun?kind=bp35c2&latency=zero&id=%(id)s&password=%(pwd)s'),
        'broute_id': %(id)r, 'broute_pwd': %(pwd)r,
        'requests': [{'epc': ['E7'], 'cycle': 10}], 'record_que': record_que}},
]
""" % {"id": ROUTE_B_ID, "pwd": PASSWORD}

FAILING_CONFIG = """
from fixture_workers import EnvPrinter, FailingWorker
worker_def = [
    {'class': EnvPrinter, 'args': {}},
    {'class': FailingWorker, 'args': {'delay': 0.2}},
]
"""


def start(workdir, config):
    (workdir / "keiconf.py").write_text(textwrap.dedent(config))
    return subprocess.Popen([PYTHON, KEI], cwd=workdir, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def kei_status(workdir, *args):
    return subprocess.run([PYTHON, KEI, "status", *args], cwd=workdir, env=subprocess_env(),
                          capture_output=True, text=True, timeout=30)


def stop(proc, sig=signal.SIGTERM):
    try:
        proc.send_signal(sig)
        return proc.wait(timeout=15)
    finally:
        proc.kill()
        proc.communicate()


def status_data(workdir):
    try:
        return json.loads((workdir / status.STATUS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_healthy_daemon_then_stopped(tmp_path):
    proc = start(tmp_path, BROUTE_CONFIG)
    try:
        wait_for(lambda: ",BR,E7," in "".join(read_text(p) for p in tmp_path.glob("2*-run.txt")), timeout=30)
        # the file is rewritten every 10 s or at a state change: wait for one showing the reading
        wait_for(lambda: (status_data(tmp_path) or {}).get("workers", [{}, {}])[1]
                 .get("health", {}).get("readings"), timeout=20, message="a status with the E7 reading")
        result = kei_status(tmp_path)
        assert result.returncode == 0, result.stdout
        assert "HEALTHY" in result.stdout.splitlines()[0]
        assert "worker_def[1] (BrouteReader)  RUNNING" in result.stdout
        assert "POLL" in result.stdout and "BR E7 = " in result.stdout
        as_json = json.loads(kei_status(tmp_path, "--json").stdout)
        assert as_json["status"] == "healthy" and as_json["problems"] == []
        assert [w["state"] for w in as_json["daemon"]["workers"]] == ["RUNNING", "RUNNING"]
        text = (tmp_path / status.STATUS_FILE).read_text()
        assert ROUTE_B_ID not in text and PASSWORD not in text
    finally:
        assert stop(proc) == 0
    assert not (tmp_path / status.STATUS_FILE).exists()       # removed at a clean stop
    result = kei_status(tmp_path)
    assert result.returncode == 2 and "not running" in result.stdout


def test_a_worker_restarting_is_degraded_and_a_killed_daemon_is_not_running(tmp_path):
    proc = start(tmp_path, FAILING_CONFIG)
    try:
        wait_for(lambda: any(w["state"] == "BACKOFF" for w in (status_data(tmp_path) or {}).get("workers", [])),
                 timeout=20, message="a status showing the restart backoff")
        result = kei_status(tmp_path)
        # the worker may be RUNNING again for a moment between failures: ask until caught
        if result.returncode == 0:
            result = wait_for(lambda: (lambda r: r if r.returncode == 1 else None)(kei_status(tmp_path)),
                              timeout=20)
        assert result.returncode == 1, result.stdout
        assert "DEGRADED" in result.stdout.splitlines()[0]
        assert "problem: worker_def[1] (FailingWorker) is BACKOFF" in result.stdout
        assert "RuntimeError: deliberate failure for the test" in result.stdout   # its last error
    finally:
        stop(proc, signal.SIGKILL)
    assert (tmp_path / status.STATUS_FILE).exists()           # no clean stop
    result = kei_status(tmp_path)
    assert result.returncode == 2
    assert "is gone" in result.stdout


def test_a_status_file_not_rewritten_means_a_stuck_main_loop(tmp_path):
    now = time.time()
    data = {"pid": os.getpid(), "version": "x", "started": now - 3600, "written": now - 300, "workers": []}
    verdict, problems = status.judge(data, now)
    assert verdict == 1 and "not updated for 300 s" in problems[0]
    data["written"] = now
    assert status.judge(data, now) == (0, [])
    data["workers"] = [{"label": "r", "state": "RUNNING", "health": {
        "states": {"link": "POLL"}, "readings": [{"unit": "BR", "sensor": "E7", "value": 1, "seen": now - 1000},
                                                 {"unit": "BR", "sensor": "EA", "value": 1, "seen": now - 2000}]}}]
    verdict, problems = status.judge(data, now)
    assert verdict == 1 and problems == ["r: no reading for 17 min"]


def test_a_state_change_or_a_new_sensor_wakes_the_main_loop_once():
    # The launcher sleeps a minute between status rewrites: a reader's link
    # state changing must wake it (once, not at every repeat of the same state).
    from keilib.health import Health

    wakes = []
    health = Health("worker_def[0]", "BrouteReader")
    health.on_state_change = lambda: wakes.append(dict(health.states))
    health.state("link", "SCAN")
    health.state("link", "SCAN")
    health.state("link", "POLL")
    health.count("frames")
    assert wakes == [{"link": "SCAN"}, {"link": "POLL"}]
    # a sensor's first reading wakes it too; its next readings do not
    import datetime
    from keilib.record import Record
    now = datetime.datetime(2026, 12, 1, 12, 0, 0)
    health.reading(Record(now, "BR", "E7", 420))
    health.reading(Record(now, "BR", "E7", 430))
    health.reading(Record(now, "BR", "E8", 4.5))
    assert len(wakes) == 4
