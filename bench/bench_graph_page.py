"""How long php/index.php takes to draw one day, and how big the page is.

    python3 bench/bench_graph_page.py [--repeat N]

Writes a realistic day (tests/test_graph_page.py's generator: E7 every 10 s =
8,640 raw points, E8R/E8T every 30 s, E0/E3, EA/EB, a serial temperature
every 60 s, and the 10-minute files) to a temporary directory, serves php/
with ``php -S`` on 127.0.0.1 and requests the page N times per case.  Prints
the median and the slowest request time (HTTP round trip on this machine,
which is nearly all PHP), the page size and the points read vs. vertices
drawn.  A stress case has every sensor at 1-second readings (86,400 points).
The target box (Raspberry Pi class) is roughly ten times slower.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import requests  # noqa: E402

from phpserver import PhpServer  # noqa: E402
from test_graph_page import DAY, raw_text, sum_text, write_meter_days  # noqa: E402


def dense_day(directory: Path) -> None:
    """Every sensor once a second: 4 x 86,400 raw lines."""
    start = datetime.datetime.combine(DAY, datetime.time())
    readings = []
    for second in range(86400):
        stamp = start + datetime.timedelta(seconds=second)
        readings.append((stamp, "BR", "E7", 400 + second % 700))
        readings.append((stamp, "BR", "E8R", (second % 90) / 10))
        readings.append((stamp, "BR", "E8T", (second % 70) / 10))
        readings.append((stamp, "A", "T1", 20 + (second % 600) / 100))
    (directory / ("%s-dense.txt" % DAY.strftime("%Y%m%d"))).write_text(raw_text(readings))
    (directory / ("sum%s-dense.txt" % DAY.strftime("%Y%m%d"))).write_text(sum_text(readings))


def measure(url: str, params: dict, repeat: int) -> dict:
    times = []
    body = ""
    for _ in range(repeat):
        started = time.perf_counter()
        response = requests.get(url, params=params, timeout=60)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
        body = response.text
    points = sum(int(n) for n in re.findall(r'data-points="(\d+)"', body))
    vertices = sum(int(n) for n in re.findall(r'data-vertices="(\d+)"', body))
    return {"median_ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000,
            "kib": len(body.encode()) / 1024, "points": points, "vertices": vertices}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        write_meter_days(data)
        dense_day(data)
        sizes = {p.name: p.stat().st_size for p in data.iterdir()}
        cases = [
            ("10 s day, raw + averages", {"date": "20260520", "base": "home"}),
            ("10 s day, averages only", {"date": "20260520", "base": "home", "raw": "0"}),
            ("1 s day (stress), raw + averages", {"date": "20260520", "base": "dense"}),
        ]
        with PhpServer(REPO / "php", env={"KEI_DATA_DIR": str(data)}) as server:
            requests.get(server.url(""), timeout=30)          # warm up (opcache)
            print("files: " + ", ".join("%s %.0f KiB" % (n, s / 1024) for n, s in sorted(sizes.items())))
            print("%-34s %9s %9s %9s %9s %9s" % ("case", "median ms", "max ms", "page KiB",
                                                 "points", "vertices"))
            for name, params in cases:
                result = measure(server.url(""), params, args.repeat)
                print("%-34s %9.1f %9.1f %9.0f %9d %9d" % (
                    name, result["median_ms"], result["max_ms"], result["kib"],
                    result["points"], result["vertices"]))


if __name__ == "__main__":
    main()
