"""systemd notify and watchdog: a datagram socket bound by the test stands in
for systemd's; kei.py runs as a real process with NOTIFY_SOCKET pointing at it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import List, Tuple

import pytest

from keilib import sdnotify
from support import PYTHON, REPO, read_text, subprocess_env, wait_for

KEI = str(REPO / "kei.py")

HEALTHY_CONFIG = """
import queue
from keilib.recorder import FileRecorder
from fixture_workers import CountingReader

record_que = queue.Queue(50)
worker_def = [
    {'class': CountingReader, 'args': {'record_que': record_que, 'count': 3}},
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'run'}},
]
"""

WEDGED_CONFIG = """
from fixture_workers import EnvPrinter, WedgedWorker
worker_def = [
    {'class': EnvPrinter, 'args': {}},
    {'class': WedgedWorker, 'args': {'hang': %(hang)s, 'marker': %(marker)r}},
]
"""


class FakeSystemd:
    """A bound datagram socket collecting every message, with arrival times."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(sdnotify.socket_address(address))
        self.sock.settimeout(0.1)
        self.messages: List[Tuple[float, str]] = []
        self.closed = False
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def fields(self, key: str) -> List[Tuple[float, str]]:
        found = []
        for when, message in list(self.messages):
            for line in message.split("\n"):
                name, _, value = line.partition("=")
                if name == key:
                    found.append((when, value))
        return found

    def close(self) -> None:
        self.closed = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    fake = FakeSystemd(str(tmp_path / "notify.sock"))
    try:
        yield fake
    finally:
        fake.close()


def start_kei(workdir: Path, config: str, socket_name: str, watchdog_usec: int) -> subprocess.Popen:
    (workdir / "keiconf.py").write_text(textwrap.dedent(config))
    env = subprocess_env(NOTIFY_SOCKET=socket_name, WATCHDOG_USEC=str(watchdog_usec))
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen([PYTHON, KEI], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen) -> int:
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=15)
    finally:
        proc.kill()
        proc.communicate()


def test_healthy_kei_says_ready_pings_and_says_stopping(tmp_path, systemd):
    proc = start_kei(tmp_path, HEALTHY_CONFIG, str(tmp_path / "notify.sock"), 300_000)
    try:
        wait_for(lambda: len(systemd.fields("WATCHDOG")) >= 5, timeout=20, message="5 pings")
    finally:
        assert stop(proc) == 0
    wait_for(lambda: systemd.fields("STOPPING"), timeout=5)
    ready = systemd.fields("READY")
    assert [value for _, value in ready] == ["1"]
    pings = systemd.fields("WATCHDOG")
    assert all(value == "1" for _, value in pings)
    assert ready[0][0] <= pings[0][0]                      # READY before the first ping
    assert systemd.fields("STOPPING")[-1][0] >= pings[-1][0]
    statuses = [value for _, value in systemd.fields("STATUS")]
    assert statuses[0] == "2/2 workers running"
    assert statuses[-1] == "stopping"
    assert "systemd: ready (watchdog ping every 0.15 s)" in read_text(tmp_path / "kei.log")


def test_a_wedged_worker_stops_the_pings_until_its_step_returns(tmp_path, systemd):
    marker = tmp_path / "wedged"
    proc = start_kei(tmp_path, WEDGED_CONFIG % {"hang": 6, "marker": str(marker)},
                     str(tmp_path / "notify.sock"), 200_000)      # ping every 0.1 s
    try:
        wait_for(lambda: "hanging" in read_text(marker), timeout=20)
        # STEP_LIMIT is 1 s: within a few pings after that, STATUS names it ...
        wait_for(lambda: any("WEDGED: worker_def[1] (WedgedWorker)" in value
                             for _, value in systemd.fields("STATUS")), timeout=10)
        wedged_at = min(when for when, value in systemd.fields("STATUS") if "WEDGED" in value)
        # ... and no ping comes while the step hangs
        wait_for(lambda: "back" in read_text(marker), timeout=20)
        stamps = dict(line.split() for line in read_text(marker).splitlines())
        hung_at, back_at = float(stamps["hanging"]), float(stamps["back"])   # the worker's own clock
        wait_for(lambda: any(when > back_at for when, _ in systemd.fields("WATCHDOG")), timeout=10,
                 message="pings resume once the step returned")
    finally:
        assert stop(proc) == 0
    pings = [when for when, _ in systemd.fields("WATCHDOG")]
    assert pings and pings[0] < wedged_at                  # pinged before the worker was wedged
    # STEP_LIMIT 1 s (step_since is taken just before the stamp: a few ms of slack)
    assert wedged_at > hung_at + 0.9
    silent = [when for when in pings if wedged_at <= when < back_at]
    assert silent == [], "pinged while a worker was wedged"
    assert back_at - wedged_at > 1.0          # a real gap: systemd (WatchdogSec=0.2 s) would kill
    log = read_text(tmp_path / "kei.log")
    assert "worker_def[1] (WedgedWorker) is wedged" in log
    assert "pings resume" in log


def test_notifier_reaches_an_abstract_namespace_socket_and_a_path_socket(tmp_path):
    for name in ("@kei-test-%s" % uuid.uuid4().hex, str(tmp_path / "n.sock")):
        fake = FakeSystemd(name)
        try:
            notifier = sdnotify.Notifier.from_environ({"NOTIFY_SOCKET": name})
            assert notifier.send(READY=1, STATUS="two\nlines") is True
            notifier.close()
            wait_for(lambda: fake.messages, timeout=5)
            assert fake.messages[0][1] == "READY=1\nSTATUS=two lines"
        finally:
            fake.close()


def test_no_notify_socket_no_watchdog_and_a_vanished_socket_is_not_fatal(tmp_path, caplog):
    assert sdnotify.Notifier.from_environ({}) is None
    assert sdnotify.Notifier.from_environ({"NOTIFY_SOCKET": "relative"}) is None
    watchdog = sdnotify.Watchdog.from_environ({})
    assert watchdog.tick([]) == sdnotify.IDLE
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "4000000"}) == 2.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "4000000",
                                       "WATCHDOG_PID": str(os.getpid())}) == 2.0
    notifier = sdnotify.Notifier(str(tmp_path / "nobody-listens.sock"))
    assert notifier.send(WATCHDOG=1) is False
    assert notifier.send(WATCHDOG=1) is False
    assert caplog.text.count("cannot send") == 1          # logged once, not per ping
    notifier.close()
