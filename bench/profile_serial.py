"""Profile the serial path: a paced pty -> SerialReader -> record_que -> FileRecorder.

    python3 bench/profile_serial.py [--seconds 10] [--top 15] [--sort tottime]

The same paced stream as bench_vs_keilog.py (every 5 ms the bytes a saturated
115200-baud line carries), into a real file in a temp dir.  Each worker thread
runs under its own cProfile (cProfile sees one thread only); the top entries
of each are printed with the thread's CPU time per 1,000 lines.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import queue
import sys
import tempfile
import threading
import time
import tty

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keilib.recorder import FileRecorder  # noqa: E402
from keilib.serial import SerialReader  # noqa: E402

BYTES_PER_SECOND = 11520.0
CHUNK_SECONDS = 0.005


def line(seq: int) -> bytes:
    return b"unit%d,temp,%d.%02d,%d\r\n" % (seq % 4 + 1, 20 + seq % 7, seq % 100, seq)


def profiled(worker: threading.Thread, profiles: dict, cpu: dict, enabled: bool = True) -> None:
    """Run ``worker.run`` under a profiler of its own, in its own thread."""
    plain_run = worker.run

    def run() -> None:
        profile = cProfile.Profile(time.thread_time)   # CPU, not the time spent blocked
        start = time.thread_time()
        if enabled:
            profile.enable()
        try:
            plain_run()
        finally:
            profile.disable()
            cpu[worker.name] = time.thread_time() - start
            profiles[worker.name] = profile
    worker.run = run  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--no-profile", action="store_true", help="only the threads' CPU time")
    args = parser.parse_args()
    profiles: dict = {}
    cpu: dict = {}
    with tempfile.TemporaryDirectory() as workdir:
        master, slave = os.openpty()
        tty.setraw(slave)
        record_que: "queue.Queue" = queue.Queue(50)
        recorder = FileRecorder(record_que, fname_base="bench", directory=workdir)
        reader = SerialReader(os.ttyname(slave), 115200, record_que=record_que)
        profiled(recorder, profiles, cpu, not args.no_profile)
        profiled(reader, profiles, cpu, not args.no_profile)
        recorder.start()
        reader.start()
        while not reader.connected:
            time.sleep(0.01)
        time.sleep(0.2)
        seq = sent = 0
        t0 = time.monotonic()
        index = 0
        while time.monotonic() - t0 < args.seconds:
            index += 1
            chunk = bytearray()
            while sent + len(chunk) + len(line(seq)) <= index * CHUNK_SECONDS * BYTES_PER_SECOND:
                chunk += line(seq)
                seq += 1
            os.write(master, bytes(chunk))
            sent += len(chunk)
            delay = t0 + index * CHUNK_SECONDS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        while reader.stats["records"] < seq and time.monotonic() - t0 < args.seconds + 30:
            time.sleep(0.01)
        while not record_que.empty():
            time.sleep(0.01)
        time.sleep(0.2)
        reader.stop()
        recorder.stop()
        os.close(master)
        os.close(slave)
    print("%d lines paced over %.0f s" % (seq, args.seconds))
    for name, profile in profiles.items():
        print("== %s: %.3f CPU s per 1,000 lines (thread time%s)" % (
            name, cpu[name] * 1000 / max(1, seq), "" if args.no_profile else ", profiler on"))
        if args.no_profile:
            continue
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(args.sort).print_stats(args.top)
        text = out.getvalue()
        print(text[text.index("   ncalls"):] if "   ncalls" in text else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
