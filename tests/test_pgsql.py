"""PgRecorder against a real PostgreSQL started by the test (tests/pgserver.py)."""

from __future__ import annotations

import datetime
import logging
import queue
import subprocess

import pytest

from keilib.average import Aggregate
from keilib.errors import ConfigError
from keilib.record import HISTORY_DATA_ID, Record
from pgserver import PgServer
from support import PYTHON, REPO, subprocess_env, wait_for

import psycopg  # noqa: E402  (requirements-dev.txt)

from keilib.pgsql import PgRecorder  # noqa: E402

T0 = datetime.datetime(2026, 5, 20, 14, 0, 0)
SECRET = "s3cr3t-Pa55"


@pytest.fixture
def pg():
    server = PgServer()
    if not server.available:
        pytest.skip("PostgreSQL is not installed (.ci/run installs the Debian package postgresql)")
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


def table(server: PgServer, sql: str) -> list:
    with psycopg.connect(server.conninfo()) as db:
        return db.execute(sql).fetchall()


def readings(server: PgServer) -> list:
    return table(server, "SELECT s.sensor, extract(epoch FROM r.ts)::bigint, r.value, r.data_id FROM reading r "
                         "JOIN sensor s ON s.id = r.sensor_id ORDER BY s.sensor, r.ts")


def test_records_and_aggregates_are_upserted_once(pg, fake_clock, caplog):
    caplog.set_level(logging.DEBUG)
    que: "queue.Queue" = queue.Queue()
    aggregates: "queue.Queue" = queue.Queue()
    for item in (Record(T0, "BR", "E7", 512), Record(T0, "BR", "E7", 512),
                 Record(T0, "BR", "EA", 1314.5), Record(T0, "BR", "EA", 1314.5, HISTORY_DATA_ID)):
        que.put(item)
    aggregates.put(Aggregate(T0, "BR", "E7", 505.25, count=2, minimum=498.5, maximum=512, window=600))
    recorder = PgRecorder(que, conninfo=pg.conninfo(SECRET), aggregate_que=aggregates, clock=fake_clock)
    recorder.start()
    try:
        wait_for(lambda: que.empty() and aggregates.empty())
    finally:
        assert recorder.stop(10)
    epoch = int(T0.timestamp())
    assert readings(pg) == [("E7", epoch, 512.0, "x"), ("EA", epoch, 1314.5, HISTORY_DATA_ID)]
    assert table(pg, "SELECT window_s, mean, minimum, maximum, count FROM aggregate") == [(600, 505.25, 498.5, 512.0, 2)]
    assert table(pg, "SELECT version FROM kei_schema") == [(2,)]
    assert SECRET not in caplog.text


def test_a_server_that_is_down_is_held_for_and_reconnected(pg, fake_clock, caplog):
    caplog.set_level(logging.DEBUG)
    pg.stop()
    que: "queue.Queue" = queue.Queue()
    recorder = PgRecorder(que, conninfo=pg.conninfo(SECRET), clock=fake_clock, retry_seconds=10)
    recorder.start()
    try:
        for n in range(100):
            que.put(Record(T0 + datetime.timedelta(seconds=n), "T", "S", n))
        wait_for(lambda: len(recorder.pending) == 100)
        fake_clock.advance(1)
        wait_for(lambda: recorder.failing_since is not None, timeout=15)
        fake_clock.advance(10)
        wait_for(lambda: recorder.health.snapshot()["counters"].get("write_errors", 0) >= 2, timeout=15)
        pg.start()
        fake_clock.advance(10)
        wait_for(lambda: not recorder.pending, timeout=15)
        # the server restarts under a live connection: the next batch reconnects
        pg.stop()
        pg.start()
        for n in range(100, 150):
            que.put(Record(T0 + datetime.timedelta(seconds=n), "T", "S", n))

        def stored() -> bool:
            fake_clock.advance(10)
            return not recorder.pending and que.empty()

        wait_for(stored, timeout=20, interval=0.1)
    finally:
        assert recorder.stop(10)
    assert [row[2] for row in readings(pg)] == [float(n) for n in range(150)]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all("cannot write PostgreSQL" in e for e in errors) and len(errors) <= 2
    assert SECRET not in caplog.text


def test_kei_check_names_the_commands_when_psycopg_is_missing(tmp_path):
    (tmp_path / "keiconf.py").write_text(
        "import queue\nfrom keilib.pgsql import PgRecorder\nq = queue.Queue()\n"
        "worker_def = [{'class': PgRecorder, 'args': {'record_que': q, 'conninfo': 'dbname=kei'}}]\n")
    # psycopg made unimportable for this process only
    code = ("import sys; sys.modules['psycopg'] = None; sys.argv = ['kei', '--check']; "
            "from keilib.daemon import main; sys.exit(main())")
    done = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, env=subprocess_env(), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode != 0
    assert "pip install 'kei[postgres]'" in done.stderr and "sudo apt install python3-psycopg" in done.stderr


def test_a_bad_connection_string_is_a_config_error_without_the_password():
    for bad in ("host=db password=%s 'unterminated" % SECRET, "", "host=db\x00password=%s" % SECRET):
        with pytest.raises(ConfigError) as caught:
            PgRecorder(queue.Queue(), conninfo=bad)
        assert SECRET not in str(caught.value)
