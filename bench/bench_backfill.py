#!/usr/bin/env python3
"""Airtime of a 7-day back-fill: what kei transmits to fill a week of missed half hours.

A simulated meter (x600 clock) and the real BrouteReader: kei runs until the
meter's first half-hour value, is stopped, 7 days pass, and it restarts; the
back-fill then reads 336 half hours from the meter's history.  Run once with
a meter that has EC/ED (12 half hours per request) and once with one that has
not (E5 + E2/E4, a day per request).  Prints the history frames sent, their
estimated airtime (TxBudget's 100 kb/s model, as the reader counts it), that
airtime against the 360 s/hour Route-B budget, and the real time taken.

    python3 bench/bench_backfill.py [--days 7]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from keilib.broute import TxBudget  # noqa: E402
from support import wait_for  # noqa: E402
from test_backfill import Station, held_stamp  # noqa: E402


def run(days: int, history2: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        station = Station(Path(tmp), start=datetime.datetime(2026, 11, 24, 9, 10), history2=history2, reverse=True)
        try:
            station.start_reader(backfill_days=days)
            first = wait_for(lambda: held_stamp(station), timeout=30)
            station.stop_reader()
            station.leap(days * 86400)
            reader = station.start_reader(backfill_days=days)
            started = time.perf_counter()
            wait_for(lambda: (held_stamp(station) or first) > first + datetime.timedelta(days=days - 1)
                     and station.checkpoint().get("gaps") == [], timeout=120)
            elapsed = time.perf_counter() - started
            counters = reader.health.snapshot()["counters"]
            frames = counters.get("history_frames", 0)
            airtime_s = counters.get("history_airtime_us", 0) / 1e6
            filled = len([row for row in station.series("EA") if row[2] == "hist"])
        finally:
            station.stop()
        print("%s: %d half hours filled with %d history frames, airtime %.2f s = %.2f %% of the 360 s/hour "
              "budget (simulated %.0f s, real %.1f s)"
              % ("EC/ED   " if history2 else "E5+E2/E4", filled, frames, airtime_s,
                 100 * airtime_s / (TxBudget.LIMIT_MS / 1000), elapsed * 600, elapsed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run(args.days, history2=True)
    run(args.days, history2=False)


if __name__ == "__main__":
    main()
