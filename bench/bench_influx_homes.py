#!/usr/bin/env python3
"""Many homes writing to one local VictoriaMetrics through the real InfluxWriter.

Each simulated home is one InfluxWriter (its own spool, its own ``site``
tag), as each kei box would be.  Time is compressed: every home's readings
for ``--hours`` hours (one power reading per 10 s, as a meter polled that
often) are queued at once and delivered as fast as the writers and the
server allow.  Prints:

* accepted points per second (until VictoriaMetrics holds every sample);
* writer-side CPU seconds per 1,000 points (this process: encoding, spool
  writes with fsync, HTTP), and VictoriaMetrics' own CPU per 1,000 points;
* what 1,000 real homes at one reading per 10 s (100 points/s) would need;
* that a retried batch (delivered twice, as after a timeout that hid a
  success) adds no sample with ``-dedup.minScrapeInterval=1ms``, and how
  many it adds without.

    python3 bench/bench_influx_homes.py [--homes 50] [--hours 2] [--batch-bytes 100]

Needs the Debian package victoria-metrics (as the tests do).
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from keilib.influx import InfluxWriter  # noqa: E402
from keilib.output import Outcome  # noqa: E402
from keilib.record import Record  # noqa: E402
from servers import VictoriaMetrics  # noqa: E402

READING_EVERY = 10     # seconds, simulated


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def readings(home: int, start: datetime.datetime, count: int):
    for i in range(count):
        yield Record(start + datetime.timedelta(seconds=READING_EVERY * i), "BR", "E7",
                     200 + (home * 7 + i * 13) % 3000)


def count_samples(vm: VictoriaMetrics) -> int:
    return sum(len(series["values"]) for series in vm.export('{__name__="kei_value"}'))


def retried_batch(vm: VictoriaMetrics, work: Path, start: datetime.datetime) -> int:
    """Deliver one 100-line batch twice; the samples the server then holds for it."""
    writer = InfluxWriter(queue.Queue(), vm.url, database="kei", site="retry-check",
                          spool_dir=work / "spool-retry")
    text = "".join(writer.encode(r)[1] for r in readings(0, start, 100))
    for _ in range(2):
        assert writer.deliver("s", text, "retry").kind == Outcome.OK
    return sum(len(s["values"]) for s in vm.export('{__name__="kei_value",site="retry-check"}'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--homes", type=int, default=50)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--batch-bytes", type=int, default=256 * 1024,
                        help="largest POST; 100 = one line per POST, as a live kei sends them")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    per_home = int(args.hours * 3600 / READING_EVERY)
    total = per_home * args.homes
    start = datetime.datetime(2026, 11, 1, 0, 0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with VictoriaMetrics(work / "vm") as vm:
            writers = []
            for home in range(args.homes):
                que: queue.Queue = queue.Queue()
                for record in readings(home, start, per_home):
                    que.put(record)
                writers.append(InfluxWriter(que, vm.url, database="kei", site="home-%04d" % home,
                                            spool_dir=work / ("spool-%04d" % home),
                                            batch_seconds=1.0, retry_min=0.5, retry_max=5,
                                            batch_bytes=args.batch_bytes))
            cpu0, vm_cpu0, wall0 = time.process_time(), process_cpu(vm.process.pid), time.monotonic()
            for writer in writers:
                writer.start()
            while True:
                done = all(w.record_que.empty() and len(w.spool) == 0 for w in writers)
                if done and count_samples(vm) >= total:
                    break
                if time.monotonic() - wall0 > 600:
                    sys.exit("gave up after 600 s: %d of %d samples stored" % (count_samples(vm), total))
                time.sleep(0.2)
            wall = time.monotonic() - wall0
            cpu = time.process_time() - cpu0
            vm_cpu = process_cpu(vm.process.pid) - vm_cpu0
            for writer in writers:
                writer.stop(10)
            stored = count_samples(vm)
            posts = sum(w.sent_batches for w in writers)
            print("homes %d x %d readings (%g simulated hours at one per %d s): %d points in %d POSTs"
                  % (args.homes, per_home, args.hours, READING_EVERY, total, posts))
            print("accepted: %.0f points/s (%.1f s wall); stored %d samples (expected %d)"
                  % (total / wall, wall, stored, total))
            print("CPU per 1,000 points: writers %.3f s, VictoriaMetrics %.3f s"
                  % (cpu * 1000 / total, vm_cpu * 1000 / total))
            print("1,000 homes at one reading per 10 s = 100 points/s: about %.2f%% of one core "
                  "for VictoriaMetrics" % (vm_cpu / total * 100 * 100))
            print("retried batch (100 lines sent twice), dedup on: %d samples" % retried_batch(vm, work, start))
        with VictoriaMetrics(work / "vm-nodedup", dedup=False) as plain:
            print("retried batch (100 lines sent twice), dedup off: %d samples"
                  % retried_batch(plain, work, start))


if __name__ == "__main__":
    main()
