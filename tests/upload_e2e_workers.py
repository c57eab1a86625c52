"""A reader for the upload end-to-end test (imported by kei.py subprocesses).

``PastReader`` puts one reading per clock minute for two sensors, stamped
with its clock, which is a fast ``ScaledClock`` shared with the FileRecorder,
so 10-minute windows close in a fraction of a real second.  It remembers in
``state_path`` how many readings it has put and the last stamp;
``resume_clock()`` starts the next run's clock at the 10-minute window after
that stamp, so a restarted daemon carries on instead of going back in time.
Each run puts ``per_run`` readings, then idles.
"""

from __future__ import annotations

import datetime
import logging
import os

from keilib.clock import ScaledClock
from keilib.record import Record
from keilib.worker import Worker

logger = logging.getLogger(__name__)

STAMP = "%Y-%m-%dT%H:%M:%S"


def read_state(state_path):
    """(readings put so far, last stamp or None)."""
    if not os.path.exists(state_path):
        return 0, None
    with open(state_path) as handle:
        count, stamp = handle.read().split()
    return int(count), datetime.datetime.strptime(stamp, STAMP)


def resume_clock(state_path, first_start, factor):
    count, last = read_state(state_path)
    start = datetime.datetime.strptime(first_start, STAMP)
    if last is not None:
        start = last.replace(minute=last.minute - last.minute % 10, second=0) + \
            datetime.timedelta(minutes=10)
    return ScaledClock(factor, start=start)


class PastReader(Worker):
    PRODUCES = ("record_que",)

    def __init__(self, record_que, state_path, per_run=20, clock=None):
        super().__init__(clock=clock)
        self.record_que = record_que
        self.state_path = state_path
        self.per_run = per_run
        self.count = 0
        self.put_this_run = 0

    def setup(self):
        self.count, _ = read_state(self.state_path)

    def step(self):
        if self.put_this_run >= self.per_run:
            self.wait(1.0)
            return
        stamp = self.clock.now().replace(microsecond=0)
        for sensor, value in (("T1", 20 + self.count % 7), ("H1", 50.5 + self.count % 3)):
            self.record_que.put(Record(stamp, "E2E", sensor, value))
        self.count += 1
        self.put_this_run += 1
        # Replaced atomically: a kill -9 or a reading test never sees half of it.
        with open(self.state_path + ".tmp", "w") as handle:
            handle.write("%d %s" % (self.count, stamp.strftime(STAMP)))
        os.replace(self.state_path + ".tmp", self.state_path)
        if self.put_this_run == self.per_run:
            logger.info("PastReader: %d readings put in all", self.count)
        self.wait(60)
