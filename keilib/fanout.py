"""Fan-out: every consumer of a shared queue gets every item, through its own buffer.

A config shares ``queue.Queue`` objects between workers, as keilog's did.
keilog gave each item to *one* consumer, so two outputs on one ``record_que``
silently split the readings between them.  The launcher rewires such a
queue before any thread starts (``wire``):

* each consumer gets its own ``Inbox``: a buffer that never blocks the
  producer.  Its class says what happens when the buffer is full
  (``BUFFER_POLICY``): ``"hold"`` (the default: keep going up to a hard cap,
  so a spooled output or a file never loses a reading to a short stall) or
  ``"drop_oldest"`` (latest-value outputs such as MQTT or Prometheus: the
  oldest item makes room, counted as ``dropped`` in the worker's health);
* the producers get a ``FanOutQueue`` whose ``put`` offers the item to every
  inbox and returns at once: a slow, stuck or dead output never stalls the
  readers or the other outputs.  A legacy list ``[unit, sensor, value,
  data_id]`` is stamped once, here, so every consumer sees the same time.

A queue with a single consumer is left as it is (keilog's back-pressure: a
full queue makes the reader wait), unless that consumer wants a durable
hand-off (``DURABLE_INTAKE``, the HTTP uploader): then its producers get a
``keilib.spool.SpoolQueue`` that writes each item into the consumer's spool
before ``put`` returns.
"""

from __future__ import annotations

import logging
import queue

from keilib.clock import SYSTEM_CLOCK, Clock
from keilib.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Callable, List, Optional

logger = logging.getLogger(__name__)

HOLD = "hold"
DROP_OLDEST = "drop_oldest"
POLICIES = (HOLD, DROP_OLDEST)
DEFAULT_BUFFER = 1000          # items, when the shared queue has no maxsize
HOLD_LIMIT = 50000             # items a "hold" inbox keeps past its size before it drops
SLOW_LOG_EVERY = 600.0         # seconds between two "is slow" warnings of one inbox


class Inbox(queue.Queue):
    """One consumer's buffer behind a fan-out (see the module docstring)."""

    def __init__(self, label: str, size: int, policy: str = HOLD,
                 on_drop: Optional[Callable[[int], None]] = None, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__()             # unbounded underneath: ``offer`` applies the policy
        if policy not in POLICIES:
            raise ValueError("BUFFER_POLICY must be one of %s, got %r" % (", ".join(POLICIES), policy))
        self.label = label
        self.size = size
        self.policy = policy
        self.on_drop = on_drop
        self.dropped = 0
        self.clock = clock
        self._slow_logged_at: Optional[float] = None

    def offer(self, item: Any) -> None:
        """Add ``item`` without ever blocking; apply the policy when full."""
        dropped = 0
        with self.mutex:
            length = self._qsize()
            if length >= self.size and self.policy == DROP_OLDEST:
                self.queue.popleft()
                self.unfinished_tasks -= 1
                dropped = 1
            elif length >= self.size + HOLD_LIMIT:
                self.dropped += 1
                if self.on_drop is not None:
                    self.on_drop(1)
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    logger.error("%s is not taking anything: its buffer holds %d items; %d dropped "
                                 "so far", self.label, length, self.dropped)
                return
            elif length >= self.size and self.policy == HOLD:
                now = self.clock.monotonic()
                if self._slow_logged_at is None or now - self._slow_logged_at >= SLOW_LOG_EVERY:
                    self._slow_logged_at = now      # at most one line per episode of minutes
                    logger.warning("%s is slow: its buffer of %d items is full; holding more in "
                                   "memory (up to %d) so the readers and other outputs go on",
                                   self.label, self.size, HOLD_LIMIT)
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()
        if dropped:
            self.dropped += dropped
            if self.on_drop is not None:
                self.on_drop(dropped)

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        self.offer(item)

    def put_nowait(self, item: Any) -> None:
        self.offer(item)


class FanOutQueue(queue.Queue):
    """What the producers of a shared queue put into: a copy to every inbox."""

    def __init__(self, inboxes: List[Any], stamp_legacy: bool = True,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__()
        self.inboxes = inboxes
        self.stamp_legacy = stamp_legacy
        self.clock = clock

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        if self.stamp_legacy and not isinstance(item, Record):
            try:
                item = Record.from_legacy(item, self.clock.now())
            except (TypeError, ValueError):
                pass                 # each consumer logs what it cannot use
        for inbox in self.inboxes:
            try:
                inbox.put_nowait(item)      # an Inbox, or a SpoolQueue: never blocks
            except OSError as exc:          # a spool that cannot be written
                logger.error("cannot hand an item to %s: %s; it is lost for that output",
                             getattr(inbox, "label", "an output"), exc)

    def put_nowait(self, item: Any) -> None:
        self.put(item)

    def qsize(self) -> int:
        return max((inbox.qsize() for inbox in self.inboxes), default=0)

    def empty(self) -> bool:
        return all(inbox.empty() for inbox in self.inboxes)

    def full(self) -> bool:
        return False
