"""Small workers used by the launcher tests' configs (imported by kei.py subprocesses)."""

from __future__ import annotations

import logging
import os
import threading
import time

from keilib.record import Record
from keilib.recorder import FileRecorder
from keilib.worker import Worker

logger = logging.getLogger(__name__)


class CountingReader(Worker):
    """Puts ``count`` Records (value 0, 1, 2, ...) on record_que, then idles.

    With ``legacy=True`` it puts keilog-style lists instead of Records.
    """

    PRODUCES = ("record_que",)

    def __init__(self, record_que, count=10, unit="T", sensor="S1", legacy=False, clock=None):
        super().__init__(clock=clock)
        self.record_que = record_que
        self.count = count
        self.unit = unit
        self.sensor = sensor
        self.legacy = legacy
        self.sent = 0

    def step(self):
        if self.sent < self.count:
            if self.legacy:
                item = [self.unit, self.sensor, self.sent, str(self.sent)]
            else:
                item = Record(self.clock.now().replace(microsecond=0), self.unit, self.sensor,
                              self.sent, str(self.sent))
            self.record_que.put(item)
            self.sent += 1
            if self.sent == self.count:
                logger.info("CountingReader: all %d readings queued", self.count)
        else:
            logger.debug("CountingReader idle")
            self.wait(0.2)


class FailingWorker(Worker):
    """Raises after ``delay`` seconds, every time it is started."""

    def __init__(self, delay=0.0, marker=None):
        super().__init__()
        self.delay = delay
        self.marker = marker

    def step(self):
        if self.wait(self.delay):
            return
        if self.marker:
            with open(self.marker, "a") as handle:
                handle.write("start\n")
        raise RuntimeError("deliberate failure for the test")


class SlowSink(Worker):
    """Consumes a queue slowly; used to show that a stop drains what was queued."""

    CONSUMES = ("in_que",)

    def __init__(self, in_que, path):
        super().__init__()
        self.in_que = in_que
        self.path = path

    def step(self):
        item = self.get(self.in_que)
        if item is not None:
            with open(self.path, "a") as handle:
                handle.write("%r\n" % (item,))

    def cleanup(self):
        while True:
            item = self.get(self.in_que, timeout=0)
            if item is None:
                break
            with open(self.path, "a") as handle:
                handle.write("%r\n" % (item,))


class EnvPrinter(Worker):
    """Writes its pid so a test can find the process; does nothing else."""

    def __init__(self, path=None):
        super().__init__()
        self.path = path

    def setup(self):
        if self.path:
            with open(self.path, "w") as handle:
                handle.write(str(os.getpid()))

    def step(self):
        self.wait(1.0)


class SlowFileRecorder(FileRecorder):
    """A FileRecorder that takes 10 ms per reading, so that readings are
    still queued when a stop signal comes (as on a slow SD card)."""

    def accept(self, item):
        time.sleep(0.01)
        super().accept(item)


class LegacyRunWorker(Worker):
    """A keilog-style worker that overrides run() and dies in it."""

    def __init__(self, marker):
        super().__init__()
        self.marker = marker

    def run(self):
        with open(self.marker, "a") as handle:
            handle.write("start\n")
        raise RuntimeError("legacy run() failed")


class QuietLegacyRunWorker(LegacyRunWorker):
    """A keilog-style worker whose run() returns at once without an error."""

    def run(self):
        with open(self.marker, "a") as handle:
            handle.write("start\n")


class WedgedWorker(Worker):
    """Its first step hangs ``hang`` seconds without looking at the stop
    event (as a driver stuck in a read with no timeout would), then it idles.
    ``STEP_LIMIT`` is 1 s, so the systemd watchdog counts it as wedged soon."""

    STEP_LIMIT = 1.0

    def __init__(self, hang=5.0, marker=None):
        super().__init__()
        self.hang = hang
        self.marker = marker
        self.hung = False

    def step(self):
        if not self.hung:
            self.hung = True
            # CLOCK_MONOTONIC is one clock for every process: the test compares.
            if self.marker:
                with open(self.marker, "w") as handle:
                    handle.write("hanging %r\n" % time.monotonic())
            threading.Event().wait(self.hang)    # deaf to the stop event on purpose
            if self.marker:
                with open(self.marker, "a") as handle:
                    handle.write("back %r\n" % time.monotonic())
        self.wait(0.2)


class NeedsMissingPackage(Worker):
    """Declares an optional package that is not installed anywhere."""

    REQUIRES = [("kei_no_such_package", "pip install kei-no-such-package", "sudo apt install python3-none")]

    def step(self):
        self.wait(1)


class NeedsBrokenPackage(NeedsMissingPackage):
    """Declares a package that is present but fails to import."""

    REQUIRES = [("kei_broken_package", "pip install kei-broken-package", "sudo apt install python3-none")]
