"""The middle of the data path: reader -> (fan-out) -> FileRecorder (+ other outputs).

A producer thread (standing in for a reader) puts ``--records`` Records as
fast as the queue takes them; the run ends when the FileRecorder's raw file
holds all of them (and every other consumer has taken all of them).  Printed:
records per second and the process's CPU seconds per 1,000 records, for

* ``1 consumer``: FileRecorder alone (keilog's shape; the queue is not rewired);
* ``3 consumers``: FileRecorder plus two counting outputs on the same queue,
  wired by the launcher's fan-out (each gets every record).

Run it on a checkout from before the fan-out too (only the first case exists
there) to compare: ``PYTHONPATH=/path/to/old/checkout python3 bench/bench_pipeline.py``.

    python3 bench/bench_pipeline.py [--records 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import queue
import sys
import tempfile
import time
import types

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keilib.record import Record  # noqa: E402
from keilib.recorder import FileRecorder  # noqa: E402
from keilib.worker import Worker  # noqa: E402


class Counter(Worker):
    """An output that only counts what it takes (the cost of the fan-out itself)."""

    CONSUMES = ("record_que",)

    def __init__(self, record_que):
        super().__init__()
        self.record_que = record_que
        self.taken = 0

    def step(self):
        if self.get(self.record_que) is not None:
            self.taken += 1


class Producer(Worker):
    PRODUCES = ("record_que",)

    def __init__(self, record_que):
        super().__init__()
        self.record_que = record_que

    def step(self):
        self.wait(None)


def build(consumers: int, directory: str, record_que: "queue.Queue") -> tuple:
    worker_def = [{"class": Producer, "args": {"record_que": record_que}},
                  {"class": FileRecorder, "args": {"record_que": record_que, "fname_base": "bench",
                                                   "directory": directory}}]
    worker_def += [{"class": Counter, "args": {"record_que": record_que}} for _ in range(consumers - 1)]
    try:
        from keilib.daemon import prepare, wire  # noqa: F401 - the launcher's wiring (after the fan-out)
    except ImportError:
        if consumers > 1:
            return None
        return record_que, [FileRecorder(record_que, fname_base="bench", directory=directory)]
    _, instances, _ = prepare(types.SimpleNamespace(worker_def=worker_def), "bench")
    producer = instances[0]
    return producer.record_que, instances[1:]


def run(consumers: int, records: int) -> tuple:
    with tempfile.TemporaryDirectory() as directory:
        built = build(consumers, directory, queue.Queue(200))
        if built is None:
            return None
        put_into, workers = built
        for worker in workers:
            worker.start()
        stamp = datetime.datetime(2026, 5, 20, 14, 0, 0)
        items = [Record(stamp + datetime.timedelta(seconds=n // 10), "unit1", "temp", n % 1000 / 10.0, str(n))
                 for n in range(records)]
        raw = os.path.join(directory, "20260520-bench.txt")
        cpu0, wall0 = time.process_time(), time.monotonic()
        for item in items:
            put_into.put(item)
        while True:
            size = os.path.getsize(raw) if os.path.exists(raw) else 0
            done = size and open(raw, "rb").read().count(b"\n") == records
            if done and all(getattr(w, "taken", records) == records for w in workers):
                break
            time.sleep(0.005)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        for worker in workers:
            worker.stop(10)
        return records / wall, cpu / records * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)      # "buffer full" is the point here, not news
    print("python %s, %s" % (sys.version.split()[0], os.uname().machine))
    for consumers in (1, 3):
        results = [run(consumers, args.records) for _ in range(args.repeat)]
        if results[0] is None:
            print("%d consumers: not possible on this checkout (no fan-out)" % consumers)
            continue
        best = max(results)
        print("%d consumer%s: %8.0f records/s, %.3f CPU s per 1000 records (best of %d, %d records)"
              % (consumers, "" if consumers == 1 else "s", best[0], min(r[1] for r in results),
                 args.repeat, args.records))


if __name__ == "__main__":
    main()
