"""Log bytes per hour for a serial sensor port that carries pure noise.

A real pseudo-terminal is fed random bytes at the rate of a saturated
115200-baud 8N1 line (11,520 bytes per second) while a SerialReader reads it;
its warnings go through the launcher's own handler set-up (format and
redaction filter) into a real file.  The reader's clock runs ``--factor``
times faster than real time (``ScaledClock``), so ``--hours`` of simulated
noise take ``hours * 3600 / factor`` real seconds, and the writer sends
``factor`` times the byte rate to match.

Prints the log bytes per simulated hour (the issue's target: under 1 MB/h),
the bad lines seen, and what the log would have been with one WARNING per bad
line (the mean full-warning size times the bad lines).

    python3 bench/bench_log_noise.py [--hours 1] [--factor 120]
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import random
import sys
import tempfile
import threading
import time
import tty

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keilib.clock import ScaledClock  # noqa: E402
from keilib.daemon import LOG_FORMAT  # noqa: E402
from keilib.logutil import install_redaction  # noqa: E402
from keilib.serial import SerialReader  # noqa: E402

BYTES_PER_SECOND = 115200 / 10      # 8N1


def feed_noise(master: int, rate: float, seconds: float, stop: threading.Event) -> int:
    """Write random bytes at ``rate`` bytes per real second for ``seconds``."""
    rng = random.Random(17)
    sent = 0
    started = time.monotonic()
    while not stop.is_set():
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        due = int(rate * elapsed) - sent
        if due > 0:
            chunk = rng.getrandbits(8 * due).to_bytes(due, "little")
            view = memoryview(chunk)
            while view:
                view = view[os.write(master, view):]
            sent += due
        time.sleep(0.01)
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours of noise")
    parser.add_argument("--factor", type=float, default=120.0, help="simulated seconds per real second")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bench-log-noise-")
    log_path = os.path.join(workdir, "kei.log")
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    install_redaction(handler)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    master, slave = os.openpty()
    tty.setraw(slave)
    port = os.ttyname(slave)
    clock = ScaledClock(args.factor)
    reader = SerialReader(port, 115200, record_que=queue.Queue(), clock=clock)
    reader.start()
    real_seconds = args.hours * 3600.0 / args.factor
    stop = threading.Event()
    try:
        time.sleep(0.2)                     # let the reader open the port
        sent = feed_noise(master, BYTES_PER_SECOND * args.factor, real_seconds, stop)
        time.sleep(0.5)                     # let it read the tail
    finally:
        stop.set()
        reader.stop(5)
        handler.flush()
        os.close(master)
        os.close(slave)
    size = os.path.getsize(log_path)
    with open(log_path, encoding="utf-8") as handle:
        full = [line for line in handle if ": skipped " in line and " more bad lines " not in line]
    bad = reader.stats["invalid"]
    mean_full = sum(len(line.encode()) for line in full) / max(1, len(full))
    print("noise: %.1f MB over %.2f simulated hours (%.0f real s at x%g), %d bad lines"
          % (sent / 1e6, args.hours, real_seconds, args.factor, bad))
    print("kei.log: %d bytes = %.0f bytes per simulated hour (%d full warnings, summaries for the rest)"
          % (size, size / args.hours, len(full)))
    print("without the limit (one %.0f-byte WARNING per bad line): about %.1f MB per hour"
          % (mean_full, bad * mean_full / args.hours / 1e6))
    os.remove(log_path)
    os.rmdir(workdir)


if __name__ == "__main__":
    main()
