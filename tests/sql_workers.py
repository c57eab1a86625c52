"""A fast producer for the SqlRecorder kill -9 test (imported by a kei.py subprocess)."""

from __future__ import annotations

import datetime
import os

from keilib.record import Record
from keilib.worker import Worker

START = datetime.datetime(2026, 3, 1, 0, 0, 0)


class FloodReader(Worker):
    """Puts Records with values 0, 1, 2, ... one simulated second apart, as fast as
    the queue takes them, and writes how many it has put to ``progress`` (a
    file, rewritten in place after every put, so a kill -9 leaves a true count)."""

    PRODUCES = ("record_que",)

    def __init__(self, record_que, progress="produced.txt", clock=None):
        super().__init__(clock=clock)
        self.record_que = record_que
        self.progress = progress
        self.sent = 0
        self.fd = -1

    def setup(self):
        self.fd = os.open(self.progress, os.O_WRONLY | os.O_CREAT, 0o644)

    def step(self):
        for _ in range(100):
            record = Record(START + datetime.timedelta(seconds=self.sent), "T", "flood", self.sent)
            self.record_que.put(record)
            self.sent += 1
            os.pwrite(self.fd, b"%12d\n" % self.sent, 0)

    def cleanup(self):
        os.close(self.fd)
