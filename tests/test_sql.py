"""SqlRecorder: SQLite store of Records and Aggregates (real files in temp dirs, real processes)."""

from __future__ import annotations

import datetime
import logging
import os
import queue
import signal
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pytest

from keilib.average import Aggregate
from keilib.errors import ConfigError
from keilib.record import HISTORY_DATA_ID, Record
from keilib import sql
from keilib.sql import SqlRecorder
from support import PYTHON, REPO, read_text, subprocess_env, wait_for

T0 = datetime.datetime(2026, 5, 20, 14, 0, 0)


def rows(path: Path, table: str = "reading") -> list:
    with sqlite3.connect(str(path)) as db:
        if table == "reading":
            return db.execute("SELECT s.unit, s.sensor, r.ts, r.value, r.data_id FROM reading r "
                              "JOIN sensor s ON s.id = r.sensor_id ORDER BY s.unit, s.sensor, r.ts").fetchall()
        return db.execute("SELECT s.sensor, a.window_s, a.ts, a.mean, a.minimum, a.maximum, a.count "
                          "FROM aggregate a JOIN sensor s ON s.id = a.sensor_id ORDER BY a.ts").fetchall()


def run_recorder(tmp_path: Path, items: list, clock, **options) -> Path:
    que: "queue.Queue" = queue.Queue()
    for item in items:
        que.put(item)
    recorder = SqlRecorder(que, database=str(tmp_path / "kei.sqlite"), clock=clock, **options)
    recorder.start()
    try:
        wait_for(que.empty, timeout=10)
    finally:                 # the stop commits what is pending

        assert recorder.stop(5)
    return tmp_path / "kei.sqlite"


def test_readings_and_aggregates_are_stored_once(tmp_path, fake_clock):
    live = Record(T0, "BR", "EA", 1314.5)
    items = [Record(T0, "BR", "E7", 512), Record(T0 + datetime.timedelta(seconds=10), "BR", "E7", 498.5),
             live, Record(T0, "BR", "E7", 512),                      # written twice: one row
             Record(T0, "BR", "EA", 1314.5, HISTORY_DATA_ID),         # back-filled and also read live
             ["S1", "TEMP", "21.5", "x"],                             # keilog list: stamped when taken
             "garbage",                                               # skipped with a log line
             Aggregate(T0, "BR", "E7", 505.25, count=2, minimum=498.5, maximum=512, window=600)]
    path = run_recorder(tmp_path, items, fake_clock)
    stored = rows(path)
    epoch = int(T0.timestamp())
    assert ("BR", "E7", epoch, 512.0, "x") in stored and ("BR", "E7", epoch + 10, 498.5, "x") in stored
    assert [r for r in stored if r[1] == "EA"] == [("BR", "EA", epoch, 1314.5, HISTORY_DATA_ID)]
    assert [r for r in stored if r[1] == "TEMP"] == [("S1", "TEMP", int(fake_clock.now().timestamp()), 21.5, "x")]
    assert len(stored) == 4
    assert rows(path, "aggregate") == [("E7", 600, epoch, 505.25, 498.5, 512.0, 2)]
    with sqlite3.connect(str(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == sql.SCHEMA_VERSION
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Timestamps are UTC epoch seconds: the local time comes back exactly.
    assert sql.local_time(epoch) == T0


def test_a_second_run_upserts_into_the_same_file(tmp_path, fake_clock):
    run_recorder(tmp_path, [Record(T0, "BR", "E0", 1.0)], fake_clock)
    path = run_recorder(tmp_path, [Record(T0, "BR", "E0", 2.0), Record(T0, "BR", "E3", 3.0)], fake_clock)
    assert [(r[1], r[3]) for r in rows(path)] == [("E0", 2.0), ("E3", 3.0)]


def test_schema_avoids_what_sqlite_3_34_lacks():
    # Raspberry Pi OS Bullseye ships SQLite 3.34: no STRICT (3.37), RETURNING (3.35),
    # DROP COLUMN (3.35), unixepoch() (3.38).  Check every statement kei runs.
    import inspect
    text = inspect.getsource(sql).upper()
    code = text.split('"""', 2)[2]    # past the module docstring, which names them
    for newer in ("STRICT", "RETURNING", "DROP COLUMN", "UNIXEPOCH"):
        assert newer not in code


def test_an_older_file_is_migrated_in_place(tmp_path, fake_clock):
    path = tmp_path / "kei.sqlite"
    with sqlite3.connect(str(path)) as db:     # a version-1 file: readings only
        sql.MIGRATIONS[0](db)
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO sensor (unit, sensor) VALUES ('BR', 'E7')")
        db.execute("INSERT INTO reading VALUES (1, 100, 250.0, 'x')")
    run_recorder(tmp_path, [Aggregate(T0, "BR", "E7", 1.0, count=1, minimum=1, maximum=1, window=600)],
                 fake_clock)
    assert rows(path) == [("BR", "E7", 100, 250.0, "x")]
    assert len(rows(path, "aggregate")) == 1
    with sqlite3.connect(str(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_file_from_a_newer_kei_is_refused(tmp_path):
    path = tmp_path / "kei.sqlite"
    with sqlite3.connect(str(path)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError, match="schema version 99"):
        sql.connect(str(path))


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="record_que.*queue.Queue"):
        SqlRecorder(None)
    with pytest.raises(ConfigError, match="batch_size"):
        SqlRecorder(queue.Queue(), batch_size=0)


def test_batches_commit_after_commit_seconds(tmp_path, fake_clock):
    que: "queue.Queue" = queue.Queue()
    recorder = SqlRecorder(que, database=str(tmp_path / "kei.sqlite"), clock=fake_clock,
                           batch_size=100, commit_seconds=5)
    recorder.start()
    try:
        for n in range(10):
            que.put(Record(T0 + datetime.timedelta(seconds=n), "T", "S", n))
        wait_for(lambda: len(recorder.pending) == 10 and que.empty())
        assert rows(tmp_path / "kei.sqlite") == []           # fewer than a batch, not yet due
        fake_clock.advance(5)
        wait_for(lambda: len(rows(tmp_path / "kei.sqlite")) == 10)
        for n in range(10, 210):                               # two full batches at once
            que.put(Record(T0 + datetime.timedelta(seconds=n), "T", "S", n))
        wait_for(lambda: len(rows(tmp_path / "kei.sqlite")) >= 210)
    finally:
        assert recorder.stop(5)


def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def small_fs(tmp_path):
    directory = tmp_path / "small"
    directory.mkdir()
    if os.geteuid() != 0 or _mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(directory)).returncode:
        pytest.skip("needs root to mount a small tmpfs (a real full disk)")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def test_full_disk_is_logged_once_and_recovers(small_fs, fake_clock, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    que: "queue.Queue" = queue.Queue()
    recorder = SqlRecorder(que, database=str(small_fs / "kei.sqlite"), clock=fake_clock,
                           batch_size=200, commit_seconds=1, retry_seconds=10, max_pending=1000)
    recorder.start()
    filler = small_fs / "filler"
    try:
        que.put(Record(T0, "T", "S", -1))
        wait_for(lambda: recorder.pending)
        fake_clock.advance(1)
        wait_for(lambda: len(rows(small_fs / "kei.sqlite")) == 1)
        fd = os.open(str(filler), os.O_WRONLY | os.O_CREAT)    # fill the disk to the last byte
        try:
            while os.write(fd, b"\0" * 65536):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        for n in range(5000):
            que.put(Record(T0 + datetime.timedelta(seconds=n + 1), "T", "S", n))
        wait_for(lambda: len(recorder.pending) >= 200)
        fake_clock.advance(1)
        wait_for(lambda: recorder.failing_since is not None, timeout=10)
        for _ in range(3):                       # retries fail: still one ERROR
            fake_clock.advance(10)
            wait_for(lambda: recorder.health.snapshot()["counters"].get("write_errors", 0) >= 2)
        # held rows are bounded: the rest waits in the queue (back-pressure, nothing dropped)
        wait_for(lambda: len(recorder.pending) == 1000)
        assert que.qsize() == 4000
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "cannot write" in errors[0].getMessage()
        filler.unlink()                          # space again
        fake_clock.advance(10)

        def all_stored() -> bool:       # rows taken after the recovery commit a second later
            fake_clock.advance(1)
            return len(rows(small_fs / "kei.sqlite")) == 5001

        wait_for(all_stored, timeout=15, interval=0.05)
        assert "writing" in caplog.text and "again after" in caplog.text
    finally:
        assert recorder.stop(5)
    with sqlite3.connect(str(small_fs / "kei.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


KILL_CONFIG = """
import queue
from keilib.sql import SqlRecorder
from sql_workers import FloodReader

record_que = queue.Queue(%(queue)d)
worker_def = [
    {'class': FloodReader, 'args': {'record_que': record_que}},
    {'class': SqlRecorder, 'args': {'record_que': record_que, 'batch_size': %(batch)d}},
]
"""


def test_kill_9_under_heavy_input_loses_at_most_the_open_batch(tmp_path):
    queue_size, batch = 1000, 500
    (tmp_path / "keiconf.py").write_text(textwrap.dedent(KILL_CONFIG % {"queue": queue_size, "batch": batch}))
    proc = subprocess.Popen([PYTHON, str(REPO / "kei.py")], cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    database = tmp_path / "kei.sqlite"

    def stored() -> int:
        try:
            with sqlite3.connect(str(database), timeout=5) as db:
                return db.execute("SELECT count(*) FROM reading").fetchone()[0]
        except sqlite3.Error:
            return 0

    try:
        wait_for(lambda: stored() >= 20_000, timeout=40, message="20000 rows stored")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait()
    produced = int(read_text(tmp_path / "produced.txt"))
    with sqlite3.connect(str(database)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        values = [v for (v,) in db.execute("SELECT value FROM reading ORDER BY ts")]
    # Every committed batch is whole and in order: the rows are 0..n-1, no holes.
    assert values == [float(n) for n in range(len(values))]
    # Lost: what was in the queue plus the open batch (the bound the docstring states).
    assert 0 <= produced - len(values) <= queue_size + batch


def test_aggregates_on_their_own_queue(tmp_path, fake_clock):
    records: "queue.Queue" = queue.Queue()
    aggregates: "queue.Queue" = queue.Queue()
    recorder = SqlRecorder(records, aggregate_que=aggregates, database=str(tmp_path / "kei.sqlite"),
                           clock=fake_clock, commit_seconds=1)
    recorder.start()
    try:
        aggregates.put(Aggregate(T0, "S1", "TEMP", 21.25, count=60, minimum=21.0, maximum=21.5, window=600))
        records.put(Record(T0, "S1", "TEMP", 21.0))
        wait_for(lambda: len(recorder.pending) == 2)
        fake_clock.advance(1)
        wait_for(lambda: rows(tmp_path / "kei.sqlite", "aggregate") and rows(tmp_path / "kei.sqlite"))
    finally:
        assert recorder.stop(5)
    assert rows(tmp_path / "kei.sqlite", "aggregate") == [("TEMP", 600, int(T0.timestamp()), 21.25, 21.0, 21.5, 60)]


FANOUT_CONFIG = """
import queue
from keilib.average import Averager
from keilib.recorder import FileRecorder
from keilib.sql import SqlRecorder
from fixture_workers import CountingReader

record_que = queue.Queue(50)
aggregate_que = queue.Queue()
worker_def = [
    {'class': CountingReader, 'args': {'record_que': record_que, 'count': 300}},
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'run'}},
    {'class': Averager, 'args': {'record_que': record_que, 'aggregate_que': aggregate_que}},
    {'class': SqlRecorder, 'args': {'record_que': record_que, 'aggregate_que': aggregate_que}},
]
"""


def test_beside_other_outputs_behind_the_fan_out_with_the_averager(tmp_path):
    (tmp_path / "keiconf.py").write_text(FANOUT_CONFIG)
    proc = subprocess.Popen([PYTHON, str(REPO / "kei.py")], cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "all 300 readings queued" in read_text(tmp_path / "kei.log"), timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.wait()
    stored = rows(tmp_path / "kei.sqlite")
    raw = [line for path in sorted(tmp_path.glob("2*-run.txt")) for line in read_text(path).splitlines()]
    assert len(raw) == 300
    # CountingReader stamps whole seconds: readings within one second are one row
    assert {row[3] for row in stored} <= set(float(n) for n in range(300))
    assert len(stored) == len({line.split(",")[0] for line in raw})
    aggregates = rows(tmp_path / "kei.sqlite", "aggregate")
    assert aggregates and sum(row[6] for row in aggregates) == 300
