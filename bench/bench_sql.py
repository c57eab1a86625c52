#!/usr/bin/env python3
"""How fast does SqlRecorder store, and how long does a one-day query take?

Fills a queue with N Records (4 sensors, one reading each every 10 s: what a
meter plus three serial sensors give), starts a SqlRecorder on a fresh file in
a temporary directory and measures the time until every row is committed.
Then times ``kei query readings E7`` for one day (8640 rows) and
``kei query energy`` for one day, both in-process (the CSV goes to a buffer).
Prints rows/s, the file's size and milliseconds.

    python3 bench/bench_sql.py [--rows 200000] [--batch 500]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import queue
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

from keilib import query  # noqa: E402
from keilib.record import Record  # noqa: E402
from keilib.sql import SqlRecorder  # noqa: E402

START = datetime.datetime(2026, 10, 1)
SENSORS = (("BR", "E7"), ("S1", "TEMP"), ("S1", "HUMI"), ("S2", "TEMP"))


def fill(que: "queue.Queue", rows: int) -> None:
    for index in range(rows):
        unit, sensor = SENSORS[index % len(SENSORS)]
        stamp = START + datetime.timedelta(seconds=10 * (index // len(SENSORS)))
        que.put(Record(stamp, unit, sensor, 300 + index % 997 * 0.5))
    for half in range(0, rows // len(SENSORS) * 10 // 1800 + 1):
        que.put(Record(START + datetime.timedelta(minutes=30 * half), "BR", "EA", 1000 + 0.3 * half))


def store(path: str, rows: int, batch: int) -> float:
    que: "queue.Queue" = queue.Queue()
    fill(que, rows)
    total = que.qsize()
    recorder = SqlRecorder(que, database=path, batch_size=batch)
    started = time.perf_counter()
    recorder.start()
    while not (que.empty() and not recorder.pending):
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    recorder.stop(10)
    return total / elapsed


def timed_query(path: str, *args: str) -> float:
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        query.main(["--db", path, *args])
    elapsed = time.perf_counter() - started
    assert out.getvalue().count("\n") > 1
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kei.sqlite")
        rate = store(path, args.rows, args.batch)
        days = args.rows / len(SENSORS) * 10 / 86400
        print("store: %d rows (%.1f days of 4 sensors every 10 s) at %.0f rows/s (batch %d)"
              % (args.rows, days, rate, args.batch))
        print("file: %.1f MB (%.0f bytes per row)" % (os.path.getsize(path) / 1e6,
                                                      os.path.getsize(path) / args.rows))
        day = START + datetime.timedelta(days=min(2, int(days) - 1) if days >= 2 else 0)
        span = ["--from", day.strftime("%Y-%m-%d"), "--to", (day + datetime.timedelta(days=1)).strftime("%Y-%m-%d")]
        print("query one day of E7 (8640 rows as CSV): %.1f ms" % timed_query(path, "readings", "E7", *span))
        print("query energy of one day: %.1f ms" % timed_query(path, "energy", day.strftime("%Y-%m-%d")))


if __name__ == "__main__":
    main()
