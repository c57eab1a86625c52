"""A full disk in the middle of a line, repeated: how many malformed lines remain?

Each round mounts a fresh small tmpfs (needs root), writes a raw file whose
last page has only a few bytes left (3..37: a line is ~40 bytes), fills the
file system, lets a FileRecorder write readings (the kernel takes part of a
line, then ENOSPC), frees the space, and waits until every reading is in the
file.  Then every line of the file is parsed.  Printed: rounds, lines
checked, malformed lines, readings missing or doubled (all should be 0).

    sudo python3 bench/bench_full_disk.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import queue
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keilib.clock import FakeClock  # noqa: E402
from keilib.record import Record  # noqa: E402
from keilib.recorder import FileRecorder  # noqa: E402

D = datetime.datetime


def fill(directory: str) -> None:
    with open(os.path.join(directory, "filler"), "wb", buffering=0) as handle:
        for size in (65536, 4096, 1):
            try:
                while True:
                    handle.write(b"x" * size)
            except OSError:
                pass


def one_round(directory: str, room: int, readings: int) -> tuple:
    raw = os.path.join(directory, "20260520-p.txt")
    target = 4096 - room
    text, number = "", 0
    while target - len(text) > 44:            # leave room for a last line of 30..44 bytes
        line = "2026/05/20 13:00:00,U,pad,%d,x\n" % number
        if target - len(text) - len(line) < 30:
            break
        text += line
        number += 1
    digits = target - len(text) - 29
    text += "2026/05/20 13:00:00,U,pad,%s,x\n" % ("7" * digits if digits < 3 else "7." + "7" * (digits - 2))
    with open(raw, "w") as handle:
        handle.write(text)
    fill(directory)
    clock = FakeClock(D(2026, 5, 20, 14, 0, 0))
    record_que: "queue.Queue" = queue.Queue()
    recorder = FileRecorder(record_que, fname_base="p", directory=directory, clock=clock, retry_seconds=1)
    recorder.start()
    try:
        for second in range(readings):
            record_que.put(Record(D(2026, 5, 20, 14, 0, second % 60), "u1", "seq", 470 + second))
        deadline = time.monotonic() + 5
        while not recorder.write_failing and time.monotonic() < deadline:
            time.sleep(0.005)
        os.unlink(os.path.join(directory, "filler"))
        clock.advance(2)
        deadline = time.monotonic() + 10
        while recorder.pending_lines and time.monotonic() < deadline:
            clock.advance(2)
            time.sleep(0.01)
    finally:
        recorder.stop(5)
    malformed, values = 0, []
    with open(raw) as handle:
        for line in handle:
            try:
                record = Record.parse_raw_line(line)
            except ValueError:
                malformed += 1
                continue
            if record.sensor == "seq":
                values.append(record.value)
    expected = list(range(470, 470 + readings))
    missing = len(set(expected) - set(values))
    doubled = len(values) - len(set(values))
    return text.count("\n") + len(values), malformed, missing, doubled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--readings", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_full_disk: needs root to mount a small tmpfs")
    logging.disable(logging.ERROR)
    totals = [0, 0, 0, 0]
    for round_number in range(args.rounds):
        with tempfile.TemporaryDirectory() as base:
            directory = os.path.join(base, "fs")
            os.mkdir(directory)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", directory], check=True)
            try:
                result = one_round(directory, 3 + round_number * 34 // max(1, args.rounds - 1), args.readings)
            finally:
                subprocess.run(["umount", directory], check=False)
        totals = [a + b for a, b in zip(totals, result)]
    print("%d rounds: %d lines checked, %d malformed, %d readings missing, %d doubled"
          % (args.rounds, *totals))


if __name__ == "__main__":
    main()
