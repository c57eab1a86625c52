"""kei.py end to end: FileRecorder -> HttpPostUploader -> php/upload.php.

The daemon runs as a real process with a keiconf.py in a temporary work
directory; the endpoint is php/upload.php under ``php -S``.  The server is
down at first, the daemon is killed with SIGKILL and restarted, the server
comes back: in the end the server holds exactly the local 10-minute files,
every block once and in order.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from phpserver import PhpServer
from support import PYTHON, REPO, subprocess_env, wait_for

KEY = "e2e-upload-key-77aa31"

CONFIG = """
import queue
from keilib.recorder import FileRecorder
from keilib.uploader import HttpPostUploader
from upload_e2e_workers import PastReader, read_state, resume_clock

# 2400x: a clock minute lasts 25 ms, a 10-minute window 0.25 s.
clock = resume_clock('reader.state', '2026-11-20T23:20:00', 2400)
record_que = queue.Queue()
upload_que = queue.Queue()
worker_def = [
    {'class': PastReader, 'args': {'record_que': record_que, 'state_path': 'reader.state',
                                   'per_run': 30 if read_state('reader.state')[0] else 20,
                                   'clock': clock}},
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'e2e',
                                     'upload_que': upload_que, 'clock': clock}},
    {'class': HttpPostUploader, 'args': {'upload_que': upload_que, 'target_url': %(url)r,
                                         'upload_key': %(key)r, 'retry_min': 0.05,
                                         'retry_max': 0.3}},
]
"""


def local_sums(workdir: Path) -> dict:
    return {p.name: p.read_text() for p in sorted(workdir.glob("sum*-e2e.txt"))}


def server_files(data_dir: Path) -> dict:
    return {p.name: p.read_text() for p in sorted(data_dir.glob("sum*-e2e.txt"))}


def spooled_bytes(spool_dir: Path) -> int:
    total = 0
    for path in spool_dir.iterdir():
        if path.name.startswith(".") or path.suffix not in (".item", ".batch"):
            continue                   # a temp file is not spooled yet (pathlib's * matches it)
        try:
            unit = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return -1                  # replaced under our feet: look again
        total += sum(len(data) for _, data in unit["parts"])
    return total


def settled(workdir: Path, readings: int) -> bool:
    """The recorder wrote all ``readings`` to the raw files, every window has
    its two summary lines, and the spool holds exactly what the summary files
    hold: nothing is in flight between the workers."""
    state = workdir / "reader.state"
    if not state.exists() or int(state.read_text().split()[0]) != readings:
        return False
    raw_lines = [line for raw in workdir.glob("2026*-e2e.txt") for line in raw.read_text().splitlines()]
    if len(raw_lines) != 2 * readings:          # the recorder has not written them all yet
        return False
    windows = {line[:15] for line in raw_lines}   # YYYY/MM/DD hh:m
    sums = local_sums(workdir)
    lines = sum(len(text.splitlines()) for text in sums.values())
    return lines == 2 * len(windows) and spooled_bytes(workdir / "spool") == sum(map(len, sums.values()))


def start_kei(workdir: Path, log) -> subprocess.Popen:
    # DEBUG: the most verbose logging goes to the log file we then search for the key.
    return subprocess.Popen([PYTHON, str(REPO / "kei.py")], cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(DEBUG="1"))


def kill_all(processes: list) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_outage_kill_and_restart_deliver_every_block_once(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = PhpServer(REPO / "php", env={"KEI_DATA_DIR": str(data_dir), "KEI_UPLOAD_KEY": KEY,
                                          "KEI_MIN_INTERVAL": "0"})
    (workdir / "keiconf.py").write_text(textwrap.dedent(CONFIG % {
        "url": server.url("upload.php"), "key": KEY}))
    log_path = tmp_path / "kei-output.log"
    spool_dir = workdir / "spool"
    processes = []
    try:
        with open(log_path, "ab") as log:
            # 1. Server down: 20 minutes of readings end up summarised and spooled.
            first = start_kei(workdir, log)
            processes.append(first)
            wait_for(lambda: settled(workdir, 20), timeout=10, message="first run settled")
            assert list(local_sums(workdir)) == ["sum20261120-e2e.txt"]
            first.send_signal(signal.SIGKILL)                 # no cleanup at all
            first.wait(10)

            # 2. Restarted, server still down: 30 more minutes, past midnight, join the spool.
            second = start_kei(workdir, log)
            processes.append(second)
            wait_for(lambda: settled(workdir, 50), timeout=10, message="second run settled")
            assert server_files(data_dir) == {}

            # 3. The server comes back: everything arrives, once, in order.
            server.start()
            expected = local_sums(workdir)
            assert sorted(expected) == ["sum20261120-e2e.txt", "sum20261121-e2e.txt"]
            wait_for(lambda: server_files(data_dir) == expected, timeout=15, message="delivery")
            wait_for(lambda: spooled_bytes(spool_dir) == 0, timeout=5, message="empty spool")
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0
        assert server_files(data_dir) == local_sums(workdir) == expected
        output = log_path.read_text()
        assert "Connection refused" in output
        assert "accepts uploads again" in output
        assert KEY not in output
        assert server.php_errors() == []
    finally:
        kill_all(processes)
        server.close()


FLOW_CONFIG = CONFIG.replace(
    "'per_run': 30 if read_state('reader.state')[0] else 20,",
    "'per_run': int(open('per_run').read()),")


def server_lines(data_dir: Path) -> int:
    return sum(len(text.splitlines()) for text in server_files(data_dir).values())


def test_server_stopped_and_kei_killed_while_uploads_flow(tmp_path):
    """Blocks are uploaded as they come (a window closes every 0.25 s); the
    server stops in the middle of that flow and comes back, then kei is
    killed while it delivers the backlog: every block still arrives once."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = PhpServer(REPO / "php", env={"KEI_DATA_DIR": str(data_dir), "KEI_UPLOAD_KEY": KEY,
                                          "KEI_MIN_INTERVAL": "0"})
    assert "'per_run': int(open('per_run').read())," in FLOW_CONFIG
    (workdir / "keiconf.py").write_text(textwrap.dedent(FLOW_CONFIG % {
        "url": server.url("upload.php"), "key": KEY}))
    (workdir / "per_run").write_text("240")           # 240 clock minutes: 6 s of readings
    log_path = tmp_path / "kei-output.log"
    processes = []
    try:
        server.start()
        with open(log_path, "ab") as log:
            first = start_kei(workdir, log)
            processes.append(first)
            wait_for(lambda: server_lines(data_dir) >= 6, timeout=15, message="uploads flowing")
            server.stop()                                  # in the middle of the flow
            stopped_at = server_lines(data_dir)
            local = lambda: sum(len(t.splitlines()) for t in local_sums(workdir).values())  # noqa: E731
            wait_for(lambda: local() >= stopped_at + 10, timeout=15, message="a backlog while down")

            def handed_over() -> bool:
                # The reader is done and every local summary line is on the
                # server or in the spool: none is only in memory (a kill in the
                # milliseconds between the recorder's write and the spool would
                # lose that block's upload, not the local line).
                if (workdir / "reader.state").read_text().split()[0] != "240":
                    return False
                local_bytes = sum(map(len, local_sums(workdir).values()))
                on_server = sum(map(len, server_files(data_dir).values()))
                spooled = spooled_bytes(workdir / "spool")
                return spooled >= 0 and on_server + spooled >= local_bytes

            wait_for(handed_over, timeout=15, message="the whole run recorded and spooled")
            time.sleep(0.5)                                # the last window closes 0.26 s after
            wait_for(handed_over, timeout=5, message="its last window spooled too")
            server.start()
            wait_for(lambda: server_lines(data_dir) > stopped_at, timeout=15, interval=0.002,
                     message="delivery resumed")
            first.send_signal(signal.SIGKILL)              # while the backlog is being delivered
            first.wait(10)
            assert first.returncode == -signal.SIGKILL
            (workdir / "per_run").write_text("0")          # the restarted run only delivers
            second = start_kei(workdir, log)
            processes.append(second)
            expected = local_sums(workdir)
            wait_for(lambda: server_files(data_dir) == expected, timeout=20, message="everything once")
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0
        assert server_files(data_dir) == local_sums(workdir) == expected
        lines = [line for text in expected.values() for line in text.splitlines()]
        assert len(lines) == len(set(lines)) >= stopped_at + 10        # no block twice
        assert "Connection refused" in log_path.read_text()        # the outage was seen
        assert server.php_errors() == []
    finally:
        kill_all(processes)
        server.close()


@pytest.mark.timeout(150)
def test_kill_9_around_summary_writes_loses_and_duplicates_no_block(tmp_path):
    """kei.py is killed with SIGKILL 30 times, each time within a few
    milliseconds of its summary file growing (a block being written): the
    block is in the uploader's spool before it is in the summary file, so the
    server ends with every local summary line exactly once."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = PhpServer(REPO / "php", env={"KEI_DATA_DIR": str(data_dir), "KEI_UPLOAD_KEY": KEY,
                                          "KEI_MIN_INTERVAL": "0"})
    (workdir / "keiconf.py").write_text(textwrap.dedent(FLOW_CONFIG % {
        "url": server.url("upload.php"), "key": KEY}))
    (workdir / "per_run").write_text("100000")
    rng = random.Random(30)
    log_path = tmp_path / "kei-output.log"
    processes = []
    kills = 0
    try:
        server.start()
        with open(log_path, "ab") as log:
            for _ in range(30):                               # bounded: 30 kills
                before = sum(map(len, local_sums(workdir).values()))
                process = start_kei(workdir, log)
                processes.append(process)
                wait_for(lambda: sum(map(len, local_sums(workdir).values())) > before, timeout=15,
                         interval=0.001, message="a summary write")
                time.sleep(rng.uniform(0, 0.02))              # around it: before, during, after
                process.send_signal(signal.SIGKILL)
                process.wait(10)
                kills += 1
            (workdir / "per_run").write_text("0")             # the last run only delivers
            last = start_kei(workdir, log)
            processes.append(last)
            wait_for(lambda: log_path.read_text().count(" started with ") == 31, timeout=15,
                     message="the last run started")
            wait_for(lambda: spooled_bytes(workdir / "spool") == 0 and server_lines(data_dir) >= 30,
                     timeout=30, message="the spool delivered")
            last.send_signal(signal.SIGTERM)
            assert last.wait(15) == 0
        local = [line for text in local_sums(workdir).values() for line in text.splitlines()]
        served = [line for text in server_files(data_dir).values() for line in text.splitlines()]
        assert kills == 30 and len(local) >= 30
        assert len(served) == len(set(served)), "a block reached the server twice"
        assert set(local) <= set(served), "a summary line never reached the server"
        # A kill between the spool and the file leaves a line the local file lacks.
        assert len(set(served) - set(local)) <= kills
        assert server.php_errors() == []
    finally:
        kill_all(processes)
        server.close()
