"""Workers: one thread each, with a stop event and prompt, event-driven waits.

The pattern every worker follows::

    class MyReader(Worker):
        PRODUCES = ("record_que",)          # queue arguments it puts into
        CONSUMES = ()                        # queue arguments it takes from

        def __init__(self, port, record_que=None, clock=None):
            super().__init__(clock=clock)   # no I/O in a constructor
            ...

        def setup(self):                     # optional: runs in the thread
            ...
        def step(self):                      # called until stop is requested
            line = self.port.readline()      # blocks at most ~1 s (port timeout)
            ...
            if self.wait(5):                 # sleep 5 s, or return True at once on stop
                return
        def cleanup(self):                   # optional: always runs, release resources
            ...

Rules: never ``time.sleep()`` -- sleep with ``self.wait(seconds)``; block on a
queue with ``self.get(queue, timeout)``: a stop request puts a wake-up marker
into every queue the worker consumes (its ``CONSUMES`` arguments), so a
consumer may sleep on an empty queue until work or a stop comes
(``timeout=None``) instead of polling; every blocking read of a port has a
timeout of at most about 1 s.

An exception escaping ``step()`` is logged once with its traceback and ends
the thread; the launcher then builds a fresh instance and restarts it with
backoff (see keilib.daemon).

Workers written for keilog that override ``run()`` and test
``self.stopEvent.is_set()`` keep working: ``stopEvent`` is the stop event.
Whichever ``run()`` a worker has, its end wakes the launcher at once
(``_signals_end``): the launcher sleeps until something happens instead of
looking at its threads every few seconds.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time

from keilib import validate                     # issue 17.3
from keilib.clock import SYSTEM_CLOCK, Clock
from keilib.health import Health, Registry

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    import random
    from typing import Any, Iterable, List, Optional, Tuple

logger = logging.getLogger(__name__)

# Longest single block on a port, or on a queue the worker does not own.
POLL_SECONDS = 0.5


# The watchdog's wedge rule (keilib.sdnotify explains the 300 s): a worker
# class whose steps may legitimately take longer sets its own STEP_LIMIT.
DEFAULT_STEP_LIMIT = 300.0


def wedged_workers(supervised: Iterable[Any], now: float) -> List[Tuple[str, float]]:
    """(label, seconds in the current step) of every running worker whose
    step has outlasted its ``STEP_LIMIT``.  ``supervised``: the launcher's
    records, each with ``instance`` (a Worker or None) and ``spec.label``."""
    wedged = []
    for sup in supervised:
        worker = sup.instance
        since = getattr(worker, "step_since", None)
        if worker is None or since is None or not worker.is_alive():
            continue
        limit = getattr(worker, "STEP_LIMIT", DEFAULT_STEP_LIMIT)
        if now - since > limit:
            wedged.append((sup.spec.label, now - since))
    return wedged


class _StopWake:
    """Put into a consumer's queues at stop so that a blocked get() returns."""

    def __repr__(self) -> str:
        return "<stop wake-up>"


STOP_WAKE = _StopWake()


def backoff_delay(failures: int, first: float, cap: float,
                  rng: Optional["random.Random"] = None) -> float:
    """Seconds to wait after ``failures`` (>= 1) failures in a row.

    Doubles from ``first`` up to ``cap``; with ``rng``, a random factor in
    [0.5, 1] (jitter) keeps many boxes from retrying in step after an outage.
    """
    delay = min(cap, first * (2 ** min(failures - 1, 60)))
    return delay * rng.uniform(0.5, 1.0) if rng is not None else delay


class Backoff:
    """Delays for retrying after failures: ``first``, doubling up to ``cap``.

    ``next()`` gives the delay to wait now and doubles the following one;
    ``reset()`` starts again from ``first`` after a success.  With
    ``jitter=True`` each delay is multiplied by a random factor in [0.5, 1],
    so that many boxes do not retry in step after a shared outage.  The one
    back-off rule of the project: readers reopening ports, the B-route
    state machine, delivering outputs and the launcher's restarts use it.
    """

    def __init__(self, first: float, cap: float, jitter: bool = False,
                 rng: Optional["random.Random"] = None) -> None:
        if not 0 < first <= cap:
            raise ValueError("backoff needs 0 < first <= cap, got %r, %r" % (first, cap))
        self.first = float(first)
        self.cap = float(cap)
        self.jitter = jitter
        if rng is None and jitter:
            import random        # only where jitter is used (outputs), not in every reader
            rng = random.Random()
        self.rng = rng
        self.failures = 0          # next() calls since the last reset()

    def next(self) -> float:
        self.failures += 1
        return backoff_delay(self.failures, self.first, self.cap,
                             self.rng if self.jitter else None)

    def peek(self) -> float:
        """The delay ``next()`` would give, without jitter."""
        return backoff_delay(self.failures + 1, self.first, self.cap)

    def reset(self) -> None:
        self.failures = 0


def _signals_end(run: Any) -> Any:
    """Wrap a ``run()`` so that the thread's end wakes the launcher
    (``exit_event``), whether run() returned, raised or was written for keilog.

    Only the outermost ``run()`` of the instance's class signals: an override
    that calls ``super().run()`` has not ended when the base's run returns.
    """
    @functools.wraps(run)
    def run_then_signal(self: "Worker") -> None:
        try:
            run(self)
        finally:
            if type(self).run is run_then_signal:
                self.ending = True
                if self.exit_event is not None:
                    self.exit_event.set()
    run_then_signal.signals_end = True       # type: ignore[attr-defined]
    return run_then_signal


class Worker(threading.Thread):
    """Base class of every kei worker (see the module docstring)."""

    PRODUCES: tuple = ()
    CONSUMES: tuple = ()

    def __init__(self, clock: Optional[Clock] = None, name: Optional[str] = None):
        super().__init__(name=name or type(self).__name__, daemon=True)
        # -- issue 17.3: a bad 'clock' argument is a config error at --check --
        if clock is not None:
            validate.clock("clock", clock)
        # -- end issue 17.3 --
        self.clock = clock or SYSTEM_CLOCK
        self._stopping = threading.Event()
        # keilog's name for the stop event; subclasses written for it use it.
        self.stopEvent = self._stopping
        # Set by the launcher: signalled when run() ends, however run() is written.
        self.exit_event: Optional[Any] = None      # anything with set()
        self.failure: Optional[BaseException] = None
        # Set just before the thread ends (it signals exit_event while still alive).
        self.ending = False
        # Counters and timestamps (keilib.health); the launcher replaces this
        # with the one kept for the configured worker across restarts.
        self.health = Health(self.name, type(self).__name__)
        # Every worker's health, for the few workers that report on others
        # (an exporter, alerts); set by the launcher before start.
        self.registry: Optional[Registry] = None
        # Watchdog hook (keilib.sdnotify): real monotonic time at which the
        # current setup()/step() began; None outside them.
        self.step_since: Optional[float] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "signals_end", False):
            cls.run = _signals_end(run)       # type: ignore[method-assign]

    @classmethod
    def config_warnings(cls, args: dict) -> list:
        """Things in a valid config that will surely not work as meant (a
        missing port, a placeholder left in), for ``--check`` and the start."""
        return []

    # -- for subclasses -------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait(self, seconds: Optional[float]) -> bool:
        """Sleep ``seconds`` on the worker's clock; True if stop was requested."""
        return self.clock.wait(self._stopping, seconds)

    def get(self, source: "queue.Queue[Any]", timeout: Optional[float] = POLL_SECONDS,
            default: Any = None) -> Any:
        """Take one item from ``source``; ``default`` if none came within
        ``timeout`` (None: wait until an item or a stop request comes)."""
        try:
            item = source.get(timeout=timeout)
        except queue.Empty:
            return default
        return default if item is STOP_WAKE else item

    def setup(self) -> None:
        """Runs first, in the worker's thread."""

    def step(self) -> None:
        """One unit of work; called until a stop is requested."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Runs last, in the worker's thread, even after an exception."""

    # -- the thread -----------------------------------------------------
    @_signals_end
    def run(self) -> None:
        logger.info("%s started", self.name)
        try:
            self.step_since = time.monotonic()     # watchdog hook (keilib.sdnotify)
            self.setup()
            while not self._stopping.is_set():
                self.step_since = time.monotonic()  # watchdog hook: this step began
                self.step()
            self.step_since = None                  # watchdog hook
        except Exception as exc:  # noqa: BLE001 - the launcher restarts us
            self.failure = exc
            logger.exception("%s failed: %s", self.name, exc)
        finally:
            try:
                self.cleanup()
            except Exception:  # noqa: BLE001
                logger.exception("%s: cleanup failed", self.name)
            logger.info("%s stopped", self.name)

    def request_stop(self) -> None:
        """Ask the worker to stop, without waiting."""
        self._stopping.set()
        for name in self.CONSUMES:
            source = getattr(self, name, None)
            if isinstance(source, queue.Queue):
                try:
                    source.put_nowait(STOP_WAKE)
                except queue.Full:
                    pass        # the consumer is busy: it looks at the stop flag next

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the worker to stop and wait up to ``timeout``; True if it ended."""
        self.request_stop()
        if self.is_alive():
            self.join(timeout)
        return not self.is_alive()
