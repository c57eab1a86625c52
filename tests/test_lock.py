"""One kei per work directory (issue 17.7): real kei.py processes and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from keilib.lock import LOCK_NAME, LockHeld, WorkdirLock
from support import PYTHON, REPO, read_text, subprocess_env, wait_for

KEI = str(REPO / "kei.py")

CONFIG = """
import queue
from keilib.recorder import FileRecorder
from fixture_workers import CountingReader

record_que = queue.Queue(50)
worker_def = [
    {'class': CountingReader, 'args': {'record_que': record_que, 'count': 3}},
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'run'}},
]
"""


def start_kei(workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, KEI, *args], cwd=workdir, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_kei(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, KEI, *args], cwd=workdir, env=subprocess_env(),
                          capture_output=True, text=True, timeout=20)


def started(workdir: Path, times: int = 1):
    return lambda: read_text(workdir / "kei.log").count("started with 2 worker(s)") >= times


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "keiconf.py").write_text(textwrap.dedent(CONFIG))
    return tmp_path


def test_a_second_kei_in_the_same_directory_exits_2_naming_the_holder(workdir):
    first = start_kei(workdir)
    try:
        wait_for(started(workdir), timeout=15, message="the first kei")
        second = run_kei(workdir)
        assert second.returncode == 2, second
        assert "another kei (PID %d) is already running in %s" % (first.pid, workdir) in second.stderr
        assert read_text(workdir / LOCK_NAME).strip() == str(first.pid)
        # The refused one wrote nothing: one start in the log, three readings.
        assert read_text(workdir / "kei.log").count("started with") == 1
        wait_for(lambda: len(read_text(next(workdir.glob("2*-run.txt"), workdir / "none")).splitlines()) == 3)
        # --check does not take the lock: validating while the daemon runs is normal.
        check = run_kei(workdir, "--check")
        assert check.returncode == 0, check.stderr
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=10) == 0
    finally:
        first.kill()
        first.communicate()
    assert read_text(workdir / LOCK_NAME) == ""      # a clean stop leaves no PID behind


def test_a_lock_left_by_a_killed_kei_never_blocks_a_start(workdir):
    first = start_kei(workdir)
    try:
        wait_for(started(workdir), timeout=15, message="the first kei")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
        first.communicate()
    assert read_text(workdir / LOCK_NAME).strip() == str(first.pid)   # the crash left its PID
    second = start_kei(workdir)
    try:
        wait_for(started(workdir, 2), timeout=15, message="the second kei after a kill -9")
        assert read_text(workdir / LOCK_NAME).strip() == str(second.pid)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0
    finally:
        second.kill()
        second.communicate()


def test_a_lock_file_naming_a_living_unrelated_process_does_not_block(workdir):
    # After a reboot the PID in a stale file may belong to anything alive: only
    # the kernel's lock counts, never the PID.
    (workdir / LOCK_NAME).write_text("%d\n" % os.getpid())
    proc = start_kei(workdir)
    try:
        wait_for(started(workdir), timeout=15)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()


def test_lock_in_process_is_exclusive_and_released(tmp_path):
    held = WorkdirLock(str(tmp_path)).acquire()
    try:
        with pytest.raises(LockHeld) as info:
            WorkdirLock(str(tmp_path)).acquire()      # a second open file: flock refuses it
        assert info.value.pid == os.getpid()
    finally:
        held.release()
    WorkdirLock(str(tmp_path)).acquire().release()
