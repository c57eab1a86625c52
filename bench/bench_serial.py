"""Serial sensor throughput: pty -> SerialReader -> record_que -> FileRecorder -> raw file.

Two runs, each over a real pseudo-terminal and into a real file in a temp dir:

* paced: the writer sends lines at the byte rate of a saturated 115200-baud
  8N1 line (11520 bytes/s) for ``--seconds``; shows that the reader keeps up
  with a full-speed UART, with no loss;
* unpaced: ``--lines`` lines as fast as the pty takes them (a pty blocks the
  writer when the reader is behind, so this measures the reader's ceiling).

Each run checks that the raw file holds every line once, in order, and prints
lines per second and the CPU seconds spent per 1000 lines by the process
(minus the writer thread's own CPU time).

    python3 bench/bench_serial.py [--seconds 5] [--lines 50000]
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile
import threading
import time
import tty
from typing import Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keilib.recorder import FileRecorder  # noqa: E402
from keilib.serial import SerialReader  # noqa: E402

BAUD = 115200
BYTES_PER_SECOND = BAUD / 10      # 8N1: 10 bit times per byte


def line(index: int) -> bytes:
    # A realistic line (24-26 bytes): unit, sensor, a changing value, a data id.
    return b"unit%d,temp,%d.%02d,%d\r\n" % (index % 4 + 1, 20 + index % 7, index % 100, index)


def write_paced(master: int, seconds: float, sent: list, cpu: list) -> None:
    """Send lines no faster than the UART's byte rate, for ``seconds``."""
    cpu0 = time.thread_time()
    start = time.monotonic()
    written = 0
    index = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        chunk = bytearray()
        while written + len(chunk) + len(line(index)) <= elapsed * BYTES_PER_SECOND:
            chunk += line(index)
            index += 1
        if chunk:
            os.write(master, bytes(chunk))
            written += len(chunk)
        time.sleep(0.005)
    sent.append(-index)
    cpu.append(time.thread_time() - cpu0)


def write_unpaced(master: int, lines: int, sent: list, cpu: list) -> None:
    cpu0 = time.thread_time()
    batch = 200
    for first in range(0, lines, batch):
        data = b"".join(line(i) for i in range(first, min(lines, first + batch)))
        view = memoryview(data)
        while view:
            view = view[os.write(master, view):]
    sent.append(-lines)
    cpu.append(time.thread_time() - cpu0)


def run(mode: str, amount: float) -> Tuple[int, float, float, int]:
    """One run; returns (lines, seconds, CPU seconds per 1000 lines, lines lost)."""
    with tempfile.TemporaryDirectory() as workdir:
        master, slave = os.openpty()
        tty.setraw(slave)
        link = os.path.join(workdir, "usb-bench")
        os.symlink(os.ttyname(slave), link)
        record_que: "queue.Queue" = queue.Queue(50)
        recorder = FileRecorder(record_que, fname_base="bench", directory=workdir)
        reader = SerialReader(link, BAUD, record_que=record_que)
        recorder.start()
        reader.start()
        while not reader.connected:
            time.sleep(0.01)
        sent: list = []
        writer_cpu: list = []
        target = write_paced if mode == "paced" else write_unpaced
        writer = threading.Thread(target=target, args=(master, amount if mode == "paced" else int(amount),
                                                         sent, writer_cpu))
        cpu0, t0 = time.process_time(), time.monotonic()
        writer.start()
        writer.join()
        count = -sent[-1]
        while reader.stats["records"] + reader.stats["invalid"] + reader.stats["duplicates"] < count:
            time.sleep(0.01)
            if time.monotonic() - t0 > 600:
                break
        while not record_que.empty():
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        reader.stop()
        recorder.stop()
        cpu = time.process_time() - cpu0 - writer_cpu[0]
        os.close(master)
        os.close(slave)
        raw = [name for name in os.listdir(workdir) if name.endswith("-bench.txt") and not name.startswith("sum")]
        ids = []
        for name in raw:
            with open(os.path.join(workdir, name)) as handle:
                ids += [int(text.rsplit(",", 1)[1]) for text in handle]
        lost = count - len(ids)
        if ids != list(range(count)):
            print("  MISMATCH: %d lines in the file, %d sent, in order: %s" % (
                len(ids), count, ids == sorted(ids)))
        return count, elapsed, cpu * 1000.0 / max(1, count), lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="paced run length (default 5)")
    parser.add_argument("--lines", type=int, default=50000, help="unpaced run size (default 50000)")
    args = parser.parse_args()
    print("python %s, %s" % (sys.version.split()[0], os.uname().machine))
    count, elapsed, cpu_k, lost = run("paced", args.seconds)
    print("paced at %d baud:  %6d lines in %5.2f s = %7.0f lines/s, lost %d, CPU %.3f s per 1000 lines"
          % (BAUD, count, elapsed, count / elapsed, lost, cpu_k))
    count, elapsed, cpu_k, lost = run("unpaced", args.lines)
    print("unpaced (ceiling): %6d lines in %5.2f s = %7.0f lines/s, lost %d, CPU %.3f s per 1000 lines"
          % (count, elapsed, count / elapsed, lost, cpu_k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
