"""The base of every output that delivers batches somewhere: ``SpooledOutput``.

A subclass says only how to *encode* one queue item and how to *deliver* one
batch; the base owns everything else, the same way for every destination
(HTTP upload today, InfluxDB and databases next):

* **intake**: items taken from the queue are written to a durable spool
  (``keilib.spool``) before anything is sent; with ``batch_seconds`` > 0 they
  first gather in memory for at most that long (or ``batch_bytes``), so a
  reading every few seconds costs one spool write per batch, not one fsync
  each (the SD card wears); a kill -9 then loses at most that many seconds.
  Behind a ``SpoolQueue`` (the launcher's durable hand-off) the producer has
  already spooled the item.
* **batching**: the oldest unit is sealed with the later units of the same
  group key, up to ``batch_bytes``; its bytes and id never change again.
* **delivery**: ``deliver(key, text, batch_id)`` runs in a helper thread; a
  stop abandons it (the batch stays spooled and its stable id makes the
  re-send harmless), and items arriving meanwhile are spooled every 0.1 s.
* **the verdict** (an ``Outcome``): ok -> forget the batch; wait -> the
  server asked for a pause (not a failure); retry -> back off (1 helper for
  the whole project: ``keilib.worker.Backoff``, with jitter) or as long as
  the server said; reject -> the batch goes to ``<spool>/rejected/`` with one
  ERROR, never retried; too large -> cut at line ends (the limit drops for
  the rest of the run), a single line too large is rejected alone.
* **health**: counters ``in``, ``delivered``, ``retries``, ``rejected``; gauge
  ``spool_depth``; stamp ``last_success``; state ``last_error``.

Writing an output::

    class LineFileOutput(SpooledOutput):
        def __init__(self, record_que, path, **options):
            super().__init__(record_que, **options)
            self.path = path
        def encode(self, record):            # one item -> (group key, lines)
            return "all", record.to_raw_line() + "\\n"
        def deliver(self, key, text, batch_id):
            with open(self.path, "a") as handle:
                handle.write(text)
            return Outcome.ok()

Secrets a subclass puts in ``self.secrets`` are replaced by ``***`` in every
line the base logs about a delivery.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from keilib.clock import Clock
from keilib.errors import ConfigError
from keilib.spool import DEFAULT_MAX_BATCH_BYTES, Batch, Spool, SpoolQueue
from keilib.worker import POLL_SECONDS, Backoff, Worker

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, List, Optional, Tuple

logger = logging.getLogger(__name__)

INTAKE_DURING_DELIVERY = 0.1   # seconds between looks at the queue while a delivery is in flight
_NOTHING = object()             # "the queue gave nothing" (None is an item like any other)


class Outcome:
    """What one delivery attempt gave (see the module docstring)."""

    OK, WAIT, RETRY, REJECT, TOO_LARGE = "ok", "wait", "retry", "reject", "too large"

    def __init__(self, kind: str, reason: str = "", after: Optional[float] = None,
                 loud: bool = False, limit: Optional[int] = None) -> None:
        self.kind = kind
        self.reason = reason
        self.after = after
        self.loud = loud
        self.limit = limit

    @classmethod
    def ok(cls) -> "Outcome":
        return cls(cls.OK)

    @classmethod
    def wait(cls, reason: str, after: float) -> "Outcome":
        """The server asks for a pause (a rate limit): not a failure."""
        return cls(cls.WAIT, reason, after=after)

    @classmethod
    def retry(cls, reason: str, after: Optional[float] = None, loud: bool = False) -> "Outcome":
        """A failed attempt: kept, retried after ``after`` s or the backoff;
        ``loud``: an ERROR every time (a bad token needs a human)."""
        return cls(cls.RETRY, reason, after=after, loud=loud)

    @classmethod
    def reject(cls, reason: str) -> "Outcome":
        return cls(cls.REJECT, reason)

    @classmethod
    def too_large(cls, reason: str, limit: Optional[int] = None) -> "Outcome":
        return cls(cls.TOO_LARGE, reason, limit=limit)

    def __repr__(self) -> str:
        return "Outcome(%s, %r)" % (self.kind, self.reason)


def positive(name: str, value: Any, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not (value >= 0 if allow_zero else value > 0) or value > 10 ** 9:
        raise ConfigError("argument '%s' must be a %s number up to 1e9, got %r"
                          % (name, "non-negative" if allow_zero else "positive", value))
    return float(value)


class SpooledOutput(Worker):
    """Delivers batches of text lines somewhere; never drops (module doc)."""

    CONSUMES = ("record_que",)
    ACTION = "delivery"          # the word log lines use ("upload" for the HTTP uploader)

    def __init__(self, source: Any, spool_dir: Any = None, batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
                 batch_seconds: float = 0.0, retry_min: float = 5.0, retry_max: float = 600.0,
                 clock: Optional[Clock] = None, name: Optional[str] = None) -> None:
        super().__init__(clock=clock, name=name)
        batch_bytes = int(positive("batch_bytes", batch_bytes))
        self.batch_seconds = positive("batch_seconds", batch_seconds, allow_zero=True)
        retry_min = positive("retry_min", retry_min)
        retry_max = positive("retry_max", retry_max)
        if retry_max < retry_min:
            raise ConfigError("argument 'retry_max' must be >= retry_min")
        if spool_dir is not None and not isinstance(spool_dir, (str, Path)):
            raise ConfigError("argument 'spool_dir' must be a directory path, got %r" % (spool_dir,))
        self.source = source
        setattr(self, self.CONSUMES[0], source)   # as the config names it (a stop wakes it there)
        if isinstance(source, SpoolQueue):
            self.spool = source.spool            # the producer spools (durable hand-off)
        else:
            self.spool = Spool(self.spool_path(spool_dir), batch_bytes)
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.backoff = Backoff(retry_min, retry_max, jitter=True)
        self.secrets: List[str] = []
        self._inbox: List[Tuple[str, str]] = []   # taken off the queue, not yet spooled
        self._inbox_bytes = 0
        self._inbox_since = 0.0
        self._spool_failing = False
        self._next_attempt = 0.0                  # clock.monotonic() of the next send
        # Counters for tests and status displays (health has them too).
        self.sent_batches = 0
        self.failed_attempts = 0
        self.rate_limited = 0
        self.rejected_batches = 0

    @classmethod
    def spool_path(cls, spool_dir: Any) -> Path:
        """Where the spool lives: ``spool_dir``, else ``<cwd>/spool-<ClassName>``."""
        return Path(spool_dir) if spool_dir is not None else Path.cwd() / ("spool-" + cls.__name__)

    @classmethod
    def claims(cls, args: dict) -> List[str]:
        """What no two configured workers may share (the launcher checks)."""
        return ["spool directory %s" % cls.spool_path(args.get("spool_dir")).resolve()]

    # -- what a subclass implements -------------------------------------
    def encode(self, item: Any) -> Optional[Tuple[str, str]]:
        """One queue item -> (group key, whole lines); None: skip it."""
        raise NotImplementedError

    def deliver(self, key: str, text: str, batch_id: str) -> Outcome:
        """Send one batch; runs in a helper thread."""
        raise NotImplementedError

    def describe_target(self) -> str:
        """Where batches go, for log lines (no secrets)."""
        return type(self).__name__

    # -- worker hooks -----------------------------------------------------
    def setup(self) -> None:
        self.spool.open()
        self.health.gauge("spool_depth", len(self.spool))
        logger.info("%s: delivering to %s; spool %s holds %d unit(s)",
                    self.name, self.describe_target(), self.spool.directory, len(self.spool))

    def step(self) -> None:
        self._take_in()
        if len(self.spool):
            delay = self._next_attempt - self.clock.monotonic()
            if delay <= 0:
                self._send_oldest()
                return
            self.wait(self._slice(delay))
            return
        item = self.get(self.source, timeout=self._intake_timeout(), default=_NOTHING)
        if item is not _NOTHING:
            self._accept(item)
        self._spool_inbox()

    def cleanup(self) -> None:
        # Nothing accepted is lost: what is still queued goes to the spool.
        try:
            if self.spool.opened:
                self._take_in(force=True)
        finally:
            if self._inbox:
                logger.error("%s: %d item(s) could not be spooled at stop and are lost",
                             self.name, len(self._inbox))
            logger.info("%s: %d unit(s) left in the spool", self.name, len(self.spool))

    # -- intake -------------------------------------------------------------
    def _intake_timeout(self) -> Optional[float]:
        """Real seconds to block on an empty queue: until the inbox is due, or a retry."""
        if self._spool_failing and self._inbox:
            return self.clock.to_real(self.retry_min)
        if self._inbox:
            due = self._inbox_since + self.batch_seconds - self.clock.monotonic()
            return self.clock.to_real(max(0.0, due))
        return None                               # sleep until an item or a stop

    def _take_in(self, force: bool = False) -> None:
        """Spool everything waiting in the queue, without blocking."""
        while True:
            item = self.get(self.source, timeout=0, default=_NOTHING)
            if item is _NOTHING:
                break
            self._accept(item)
        self._spool_inbox(force)

    def _accept(self, item: Any) -> None:
        self.health.count("in")
        if item is SpoolQueue.SPOOLED:
            self.health.gauge("spool_depth", len(self.spool))
            return                                 # already on disk
        unit = self.encode(item)
        if unit is None:
            return
        if not self._inbox:
            self._inbox_since = self.clock.monotonic()
        self._inbox.append(unit)
        self._inbox_bytes += len(unit[1])

    def _spool_inbox(self, force: bool = False) -> None:
        if not self._inbox:
            return
        due = (force or self.batch_seconds == 0 or self._inbox_bytes >= self.spool.max_batch_bytes
               or self.clock.monotonic() - self._inbox_since >= self.batch_seconds)
        if not due:
            return
        while self._inbox:
            # When batching, consecutive items of one key become one unit (one fsync).
            key = self._inbox[0][0]
            run = 1
            while self.batch_seconds and run < len(self._inbox) and self._inbox[run][0] == key:
                run += 1
            try:
                self.spool.add(key, "".join(text for _, text in self._inbox[:run]))
            except OSError as exc:
                if not self._spool_failing:
                    logger.error("%s: cannot write the spool %s: %s; holding %d item(s) in memory",
                                 self.name, self.spool.directory, exc, len(self._inbox))
                self._spool_failing = True
                return
            self._inbox_bytes -= sum(len(text) for _, text in self._inbox[:run])
            del self._inbox[:run]
            if self._spool_failing:
                logger.info("%s: spool writable again", self.name)
                self._spool_failing = False
        self.health.gauge("spool_depth", len(self.spool))

    # -- sending ----------------------------------------------------------
    def _slice(self, seconds: float) -> float:
        """Part of ``seconds`` (clock time) that lasts at most POLL_SECONDS of
        real time, so that queued items are spooled during a long backoff."""
        real = self.clock.to_real(seconds)
        return seconds if real <= POLL_SECONDS else seconds * POLL_SECONDS / real

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _send_oldest(self) -> None:
        try:
            batch = self.spool.next_batch()
        except OSError as exc:
            logger.error("%s: cannot seal a batch in %s: %s", self.name, self.spool.directory, exc)
            self._failed(None)
            return
        if batch is None:
            return
        part_id, data = batch.parts[0]
        outcome = self._deliver_in_thread(batch.fname, data, part_id)
        if outcome is None:                      # stop requested while in flight
            return
        target = self.describe_target()
        reason = self.redact(outcome.reason)
        if outcome.kind == Outcome.OK:
            try:
                self.spool.confirm_part(batch)
            except OSError as exc:
                # The server has it; the re-send carries the same id and is a no-op.
                logger.error("%s: cannot update the spool %s after a confirmed delivery: %s",
                             self.name, self.spool.directory, exc)
                self._failed(None)
                return
            self.sent_batches += 1
            self.health.count("delivered")
            self.health.stamp("last_success")
            if self.backoff.failures:
                logger.info("%s: %s accepts %ss again (after %d failed attempt(s))",
                            self.name, target, self.ACTION, self.backoff.failures)
            self.backoff.reset()
            self._next_attempt = 0.0
            logger.debug("%s: delivered %s part %s (%d bytes, %d item(s)) for %s",
                         self.name, batch.name, part_id, len(data.encode("utf-8")),
                         batch.items, batch.fname)
        elif outcome.kind == Outcome.REJECT:
            self._reject(batch, reason, whole=True)
        elif outcome.kind == Outcome.TOO_LARGE:
            self._too_large(batch, outcome.limit, reason)
        elif outcome.kind == Outcome.WAIT:
            # A rate limit: normal while a backlog drains, not a failure.
            self.rate_limited += 1
            delay = min(self.retry_max, outcome.after or self.retry_min)
            self._next_attempt = self.clock.monotonic() + delay
            logger.info("%s: %s asks to wait %.0f s (%s); %d unit(s) spooled",
                        self.name, target, delay, reason, len(self.spool))
        else:
            self._failed(reason, outcome.after, outcome.loud)
        self.health.gauge("spool_depth", len(self.spool))

    def _reject(self, batch: Batch, reason: str, whole: bool) -> None:
        part_id, data = batch.parts[0]
        try:
            moved = self.spool.reject(batch) if whole else self.spool.reject_part(batch)
        except OSError as exc:
            logger.error("%s: %s refused %s (%s), and moving it to rejected/ failed: %s",
                         self.name, self.describe_target(), batch.name, reason, exc)
            self._failed(None)
            return
        self.rejected_batches += 1
        self.health.count("rejected")
        self.health.state("last_error", reason[:200])
        if whole:
            logger.error("%s: %s refused %s for %s (%s); moved to %s, not retried",
                         self.name, self.describe_target(), batch.name, batch.fname, reason, moved)
        else:
            logger.error("%s: %s refused a single line of %d bytes in %s for %s as too large "
                         "(%s); moved to %s, not retried", self.name, self.describe_target(),
                         len(data.encode("utf-8")), batch.name, batch.fname, reason, moved)

    def _too_large(self, batch: Batch, stated: Optional[int], reason: str) -> None:
        """``batch.parts[0]`` was refused as too large: cut it smaller, or set a single line aside."""
        part_id, data = batch.parts[0]
        size = len(data.encode("utf-8"))
        lines = len(data.splitlines())
        if lines <= 1:
            self._reject(batch, reason, whole=False)
            return
        limit = stated if stated is not None and 0 < stated < size else max(1, size // 2)
        if limit < self.spool.max_batch_bytes:
            self.spool.max_batch_bytes = limit
            logger.warning("%s: %s refused %d bytes as too large (%s); merging and sending at "
                           "most %d bytes per batch for the rest of this run",
                           self.name, self.describe_target(), size, reason, limit)
        limit = min(limit, self.spool.max_batch_bytes)
        try:
            pieces = self.spool.split_head(batch, limit)
        except OSError as exc:
            logger.error("%s: cannot split %s in %s: %s", self.name, batch.name, self.spool.directory, exc)
            self._failed(None)
            return
        logger.info("%s: split part %s of %s (%d bytes, %d lines) into %d parts of at most %d bytes",
                    self.name, part_id, batch.name, size, lines, pieces, limit)

    def _failed(self, reason: Optional[str], after: Optional[float] = None, loud: bool = False) -> None:
        self.failed_attempts += 1
        self.health.count("retries")
        delay = self.backoff.next()
        if after is not None:
            delay = min(self.retry_max, max(after, 0.0))
        self._next_attempt = self.clock.monotonic() + delay
        if reason is not None:
            self.health.state("last_error", reason[:200])
            logger.log(logging.ERROR if loud else logging.WARNING,
                       "%s: %s to %s failed (%s); %d unit(s) spooled, retry in %.1f s",
                       self.name, self.ACTION, self.describe_target(), reason, len(self.spool), delay)

    def _deliver_in_thread(self, key: str, text: str, batch_id: str) -> Optional[Outcome]:
        """``deliver()`` in a helper thread, so that a hanging server cannot
        hold up a stop; None if a stop came first (the batch stays spooled)."""
        outcome: List[Outcome] = []
        done = threading.Event()

        def call() -> None:
            try:
                outcome.append(self.deliver(key, text, batch_id))
            except Exception as exc:  # noqa: BLE001 - a delivery error is a failed attempt
                outcome.append(Outcome.retry("%s: %s" % (type(exc).__name__, self.explain(exc))))
            finally:
                done.set()

        threading.Thread(target=call, name=self.name + "-deliver", daemon=True).start()
        while not done.wait(INTAKE_DURING_DELIVERY):
            # Items handed over meanwhile go to disk now, not after the
            # delivery: a crash must not find them only in memory.
            if not self._spool_failing:
                self._take_in()
            if self.stopping:
                logger.info("%s: stop requested; abandoned a delivery in flight "
                            "(it stays spooled)", self.name)
                return None
        return outcome[0]

    def explain(self, exc: Exception) -> str:
        """The useful part of an exception raised by ``deliver``."""
        return str(exc)
