"""The averaging stage: readings -> one aggregate per (unit, sensor) and window.

An ``Aggregate`` is a ``Record`` too (any output that takes Records takes
aggregates): its ``timestamp`` is the window start, its ``value`` the mean,
and it adds ``count``, ``minimum``, ``maximum`` and ``window`` (seconds).
Its data id is ``avg``.

``WindowAverager`` is the pure part (no I/O, no clock of its own):

* a window is keyed by the records' own timestamps: the window of ``hh:mm:ss``
  starts at the ``window``-aligned minute (10 minutes: ``hh:m0:00``), aligned
  to local midnight, so windows never straddle a day;
* ``pop_closed(before)`` hands back, oldest first, every window that ends at
  or before ``before`` (the caller passes its clock minus a grace period; at
  stop, None: all of them);
* a record for a window already handed back is *late*: ``add`` returns False
  and it is not averaged (the raw file still has it);
* ``notice_clock(now)``: a wall clock that went back before the end of a
  window already handed back (NTP stepping a Pi without an RTC back at
  boot) means the repeated time is new time: those windows open again, and
  their records are averaged again (a summary file then holds the repeated
  windows twice, one line per episode, rather than losing them).

The mean is ``sum / count`` in arrival order, so the FileRecorder's summary
lines are byte-identical to keilog's.  Values are bounded by the record
type (finite, sane magnitude), so a sum cannot overflow to infinity.

``Averager`` is the stage as a worker: it takes Records from ``record_que``
and puts Aggregates on ``aggregate_que`` for any output (InfluxDB, SQL...).

``worker_def`` entry::

    {'class': Averager,
     'args': {'record_que': record_que,          # readings in
              'aggregate_que': aggregate_que,    # 10-minute aggregates out
              'window': 600}}                    # optional: seconds (divides a day)
"""

from __future__ import annotations

import datetime
import logging
import queue

from keilib.clock import Clock
from keilib.errors import ConfigError
from keilib.record import Record
from keilib.worker import Worker

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

AGGREGATE_DATA_ID = "avg"
DAY_SECONDS = 86400


class Aggregate(Record):
    """The mean of ``count`` readings of one (unit, sensor) in one window."""

    __slots__ = ("count", "minimum", "maximum", "window")

    def __init__(self, timestamp: datetime.datetime, unit: str, sensor: str, value: float,
                 data_id: str = AGGREGATE_DATA_ID, count: int = 1, minimum: float = 0.0,
                 maximum: float = 0.0, window: int = 600) -> None:
        setter = object.__setattr__
        setter(self, "count", count)
        setter(self, "minimum", minimum)
        setter(self, "maximum", maximum)
        setter(self, "window", window)
        super().__init__(timestamp, unit, sensor, value, data_id)

    @property
    def mean(self) -> float:
        return self.value

    @property
    def end(self) -> datetime.datetime:
        return self.timestamp + datetime.timedelta(seconds=self.window)


def check_window(window: Any) -> int:
    """A window length in seconds: a whole number of minutes dividing a day."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 60 \
            or window % 60 or DAY_SECONDS % window:
        raise ConfigError("argument 'window' must be whole minutes in seconds that divide a day "
                          "(60, 300, 600, 900, 1800, 3600 ...), got %r" % (window,))
    return window


class WindowAverager:
    """Sums per (unit, sensor) for each open window (see the module doc)."""

    def __init__(self, window: int = 600) -> None:
        self.window = window
        self.span = datetime.timedelta(seconds=window)
        # window start -> {(unit, sensor): [sum, count, min, max]}, insertion-ordered
        self.windows: Dict[datetime.datetime, Dict[Tuple[str, str], List[Any]]] = {}
        self.closed_until: Optional[datetime.datetime] = None

    def window_start(self, stamp: datetime.datetime) -> datetime.datetime:
        midnight = stamp.replace(hour=0, minute=0, second=0, microsecond=0)
        offset = int((stamp - midnight).total_seconds()) // self.window * self.window
        return midnight + datetime.timedelta(seconds=offset)

    def add(self, record: Record) -> bool:
        """Count ``record``; False if its window was already handed back."""
        start = self.window_start(record.timestamp)
        if self.closed_until is not None and start < self.closed_until:
            return False
        sums = self.windows.setdefault(start, {})
        value = record.value
        entry = sums.get((record.unit, record.sensor))
        if entry is None:
            sums[(record.unit, record.sensor)] = [value, 1, value, value]
        else:
            entry[0] += value
            entry[1] += 1
            if value < entry[2]:
                entry[2] = value
            if value > entry[3]:
                entry[3] = value
        return True

    def notice_clock(self, now: datetime.datetime) -> Optional[datetime.datetime]:
        """Reopen windows if the wall clock went back before the end of one
        already handed back; returns the old end when it did."""
        closed = self.closed_until
        if closed is None or now >= closed:
            return None
        self.closed_until = self.window_start(now)
        return closed

    def next_due(self) -> Optional[datetime.datetime]:
        """The end of the oldest open window (None: nothing open)."""
        return min(self.windows) + self.span if self.windows else None

    def pop_closed(self, before: Optional[datetime.datetime]) -> List[List[Aggregate]]:
        """Remove the windows that end at or before ``before`` (None: all),
        oldest first; one list of aggregates per window, in arrival order."""
        done = sorted(start for start in self.windows
                      if before is None or start + self.span <= before)
        blocks = []
        for start in done:
            block = [Aggregate(start, unit, sensor, total / count, count=count, minimum=low,
                               maximum=high, window=self.window)
                     for (unit, sensor), (total, count, low, high) in self.windows.pop(start).items()]
            blocks.append(block)
            if self.closed_until is None or start + self.span > self.closed_until:
                self.closed_until = start + self.span
        return blocks


class Averager(Worker):
    """Turn Records into Aggregates, one per (unit, sensor) and window.

    Windows close ``grace`` seconds after they end by the clock (so a reading
    that comes a little late still counts), and at stop.  See the module
    docstring for the rules and the ``worker_def`` entry.
    """

    CONSUMES = ("record_que",)
    PRODUCES = ("aggregate_que",)

    def __init__(self, record_que: "queue.Queue[Any]", aggregate_que: "queue.Queue[Any]",
                 window: int = 600, grace: float = 30.0, clock: Optional[Clock] = None) -> None:
        super().__init__(clock=clock)
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 <= grace <= 3600:
            raise ConfigError("argument 'grace' must be seconds from 0 to 3600, got %r" % (grace,))
        self.record_que = record_que
        self.aggregate_que = aggregate_que
        self.averager = WindowAverager(check_window(window))
        self.grace = datetime.timedelta(seconds=grace)

    def step(self) -> None:
        item = self.get(self.record_que, timeout=self._timeout())
        now = self.clock.now()
        if item is not None:
            record = item if isinstance(item, Record) else self._from_legacy(item, now)
            if record is not None and not isinstance(record, Aggregate):
                self.averager.notice_clock(now)
                self.averager.add(record)
                self.health.count("in")
        self._emit(self.averager.pop_closed(now - self.grace))

    def _timeout(self) -> Optional[float]:
        due = self.averager.next_due()
        if due is None:
            return None                       # nothing open: sleep until a record comes
        left = (due + self.grace - self.clock.now()).total_seconds()
        return self.clock.to_real(max(0.0, left))

    def _from_legacy(self, item: Any, now: datetime.datetime) -> Optional[Record]:
        try:
            return Record.from_legacy(item, now)
        except (TypeError, ValueError) as exc:
            logger.warning("%s: skipped an unusable item %.80r: %s", self.name, item, exc)
            return None

    def _emit(self, blocks: List[List[Aggregate]]) -> None:
        for block in blocks:
            for aggregate in block:
                try:
                    self.aggregate_que.put(aggregate, timeout=5)
                    self.health.count("out")
                except queue.Full:
                    self.health.count("dropped")
                    logger.error("%s: aggregate queue full for 5 s; %s lost", self.name,
                                 aggregate.to_raw_line())

    def cleanup(self) -> None:
        while True:
            item = self.get(self.record_que, timeout=0)
            if item is None:
                break
            if isinstance(item, Record) and not isinstance(item, Aggregate):
                self.averager.add(item)
        self._emit(self.averager.pop_closed(None))
