"""kei query: CSV from a SQLite file written by the real SqlRecorder, through the real kei.py."""

from __future__ import annotations

import csv
import datetime
import io
import queue
import subprocess

import pytest

from keilib.average import Aggregate
from keilib.record import HISTORY_DATA_ID, Record
from keilib.sql import SqlRecorder
from support import PYTHON, REPO, subprocess_env, wait_for

DAY = datetime.datetime(2026, 11, 24)          # a Tuesday
HALF = datetime.timedelta(minutes=30)


def kei_query(workdir, *args):
    done = subprocess.run([PYTHON, str(REPO / "kei.py"), "query", *args], cwd=workdir, env=subprocess_env(),
                          capture_output=True, text=True, timeout=30)
    return done.returncode, list(csv.reader(io.StringIO(done.stdout))), done.stderr


@pytest.fixture
def store(tmp_path, fake_clock):
    que: "queue.Queue" = queue.Queue()
    # Two days of half-hour cumulative import (EA) rising 0.5 kWh per half hour,
    # export (EB) 0.1; power every minute on the Tuesday; two 10-minute averages.
    for index in range(97):
        stamp = DAY - datetime.timedelta(days=1) + index * HALF
        que.put(Record(stamp, "BR", "EA", round(1000 + 0.5 * index, 1), HISTORY_DATA_ID if index % 3 else "x"))
        que.put(Record(stamp, "BR", "EB", round(200 + 0.1 * index, 1)))
    for minute in range(24 * 60):
        que.put(Record(DAY + datetime.timedelta(minutes=minute), "BR", "E7", 300 + minute % 7))
    que.put(Aggregate(DAY, "BR", "E7", 303.5, count=10, minimum=300, maximum=306, window=600))
    que.put(Aggregate(DAY + datetime.timedelta(minutes=10), "BR", "E7", 302.0, count=10, minimum=300,
                      maximum=306, window=600))
    recorder = SqlRecorder(que, database=str(tmp_path / "kei.sqlite"), clock=fake_clock)
    recorder.start()
    wait_for(que.empty, timeout=10)
    assert recorder.stop(5)
    return tmp_path


def test_readings_for_a_time_range(store):
    status, rows, _ = kei_query(store, "readings", "E7", "--from", "2026-11-24 06:00", "--to", "2026-11-24 06:03")
    assert status == 0
    assert rows == [["time", "unit", "sensor", "value", "data_id"],
                    ["2026/11/24 06:00:00", "BR", "E7", str(300 + 360 % 7), "x"],
                    ["2026/11/24 06:01:00", "BR", "E7", str(300 + 361 % 7), "x"],
                    ["2026/11/24 06:02:00", "BR", "E7", str(300 + 362 % 7), "x"]]


def test_averages_and_sensors(store):
    status, rows, _ = kei_query(store, "averages", "E7", "--from", "2026-11-24")
    assert status == 0 and rows[1:] == [["2026/11/24 00:00:00", "BR", "E7", "303.5", "300", "306", "10"],
                                        ["2026/11/24 00:10:00", "BR", "E7", "302", "300", "306", "10"]]
    status, rows, _ = kei_query(store, "sensors")
    assert status == 0
    assert [row[:3] for row in rows[1:]] == [["BR", "E7", "1440"], ["BR", "EA", "97"], ["BR", "EB", "97"]]


def test_energy_of_last_tuesday_and_of_each_day(store):
    status, rows, _ = kei_query(store, "energy", "tuesday", "--today", "2026-11-26")
    assert status == 0
    assert rows == [["date", "import_kwh", "export_kwh", "source"], ["2026-11-24", "24", "4.8", "EA"]]
    status, rows, _ = kei_query(store, "energy", "2026-11-23", "--days", "3")
    assert rows[1:3] == [["2026-11-23", "24", "4.8", "EA"], ["2026-11-24", "24", "4.8", "EA"]]
    assert rows[3][:3] == ["2026-11-25", "", ""] and status == 1     # no value at the next midnight


def test_a_missing_database_or_sensor_is_one_clear_line(tmp_path, store):
    status, _, err = kei_query(tmp_path / "..", "--db", str(tmp_path / "none.sqlite"), "sensors")
    assert status != 0 and "no database" in err
    status, _, err = kei_query(store, "readings", "XX")
    assert status == 1 and "no sensor BR/XX" in err


def test_energy_across_the_counter_wrap_needs_and_uses_wrap(tmp_path, fake_clock):
    que: "queue.Queue" = queue.Queue()
    que.put(Record(DAY, "BR", "EA", 99990.5))                        # 6 digits of 0.1 kWh: wraps at 100000
    que.put(Record(DAY + datetime.timedelta(days=1), "BR", "EA", 7.5, HISTORY_DATA_ID))
    recorder = SqlRecorder(que, database=str(tmp_path / "kei.sqlite"), clock=fake_clock)
    recorder.start()
    wait_for(que.empty, timeout=10)
    assert recorder.stop(5)
    status, rows, _ = kei_query(tmp_path, "energy", "2026-11-24")
    assert status == 1 and rows[1][:3] == ["2026-11-24", "", ""] and "give --wrap" in rows[1][3]
    status, rows, _ = kei_query(tmp_path, "energy", "2026-11-24", "--wrap", "100000")
    assert status == 0 and rows[1] == ["2026-11-24", "17", "", "EA"]
