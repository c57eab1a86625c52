#!/usr/bin/env python3
"""How fast does a spool backlog drain into php/upload.php?

Fills a fresh spool with N upload items (each a 10-minute summary block of 4
lines, ~120 bytes, spread over 3 files), starts a local ``php -S`` with
php/upload.php (no rate limit) and an HttpPostUploader, and measures the time
until the spool is empty and the server holds every byte.  Prints:

* spool intake: items/s written (each one fsync'd, as the uploader does);
* drain with merging (default max_batch_bytes): items/s and POSTs made;
* drain without merging (one POST per item), on a smaller spool.

    python3 bench/bench_upload_spool.py [--items 10000] [--unmerged-items 1000]
"""

from __future__ import annotations

import argparse
import logging
import queue
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from keilib.uploader import DEFAULT_MAX_BATCH_BYTES, HttpPostUploader, Spool  # noqa: E402
from phpserver import PhpServer  # noqa: E402

KEY = "bench-key-3c2b1a"
FILES = ("sum20261123-power.txt", "sum20261123-room.txt", "sum20261123-garden.txt")


def block(number: int) -> str:
    stamp = "2026/11/%02d %02d:%d0" % (1 + number // 144 % 28, number // 6 % 24, number % 6)
    return "".join("%s,U%d,S%d,%d.%04d\n" % (stamp, unit, unit, number % 1000, number % 9999)
                   for unit in range(4))


def fill(spool_dir: Path, items: int) -> dict:
    spool = Spool(spool_dir)
    spool.open()
    expected = {name: [] for name in FILES}
    started = time.perf_counter()
    for number in range(items):
        name = FILES[number % len(FILES)]
        text = block(number)
        spool.add(name, text)
        expected[name].append(text)
    elapsed = time.perf_counter() - started
    print("spool intake: %d items in %.2f s = %.0f items/s (fsync'd)" % (items, elapsed, items / elapsed))
    return {name: "".join(parts) for name, parts in expected.items()}


def drain(work: Path, items: int, max_batch_bytes: int, label: str) -> None:
    data_dir = work / "data"
    data_dir.mkdir()
    expected = fill(work / "spool", items)
    server = PhpServer(REPO / "php", env={"KEI_DATA_DIR": str(data_dir), "KEI_UPLOAD_KEY": KEY,
                                          "KEI_MIN_INTERVAL": "0",
                                          "KEI_MAX_BYTES": str(DEFAULT_MAX_BATCH_BYTES)})
    uploader = HttpPostUploader(queue.Queue(), server.url("upload.php"), KEY,
                                spool_dir=work / "spool", max_batch_bytes=max_batch_bytes,
                                retry_min=0.05, retry_max=0.5)
    with server:
        started = time.perf_counter()
        uploader.start()
        try:
            while len(list((work / "spool").glob("0*"))) or uploader.sent_batches == 0:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
        finally:
            uploader.stop(5)
    for name, text in expected.items():
        got = (data_dir / name).read_text()
        if got != text:
            raise SystemExit("MISMATCH in %s: %d bytes expected, %d on the server"
                             % (name, len(text), len(got)))
    print("drain %s: %d items in %.2f s = %.0f items/s, %d POSTs, %d failed attempts"
          % (label, items, elapsed, items / elapsed, uploader.sent_batches, uploader.failed_attempts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--unmerged-items", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "merged").mkdir()
        drain(Path(tmp) / "merged", args.items, DEFAULT_MAX_BATCH_BYTES,
              "merged (max_batch_bytes=%d)" % DEFAULT_MAX_BATCH_BYTES)
        if args.unmerged_items:
            (Path(tmp) / "single").mkdir()
            # A limit above one item (~130 bytes) but below two: every item goes alone.
            drain(Path(tmp) / "single", args.unmerged_items, 200, "one POST per item")


if __name__ == "__main__":
    main()
