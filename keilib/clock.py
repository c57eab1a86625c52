"""Injectable time.

Every worker takes a ``clock``.  It gives two kinds of time:

* ``now()``: the local wall-clock time as a naive ``datetime``; used only to
  stamp readings and name files;
* ``monotonic()``: seconds that never jump; used for every interval, schedule
  and timeout, so that an NTP step cannot stall or rush the loops;
* ``real_monotonic()``: real seconds even for a scaled or fake clock, for
  the few things that are about bytes on a wire.

``wait(event, seconds)`` is the only way a worker sleeps: it returns early (True)
when the event is set, so a stop request is honoured at once.

``FakeClock`` lets tests cross a 10-minute window or midnight in milliseconds;
``ScaledClock`` runs time faster than real time for the demo.
"""

from __future__ import annotations

import datetime
import threading
import time


class Clock:
    """Real time (the default clock)."""

    def now(self) -> datetime.datetime:
        return datetime.datetime.now()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        """Sleep up to ``seconds`` (None: forever); True if ``event`` got set."""
        if seconds is not None and seconds < 0:
            seconds = 0
        return event.wait(seconds)

    def to_real(self, seconds: float) -> float:
        """Real seconds that pass while this clock advances ``seconds``."""
        return seconds

    def real_monotonic(self) -> float:
        """Real seconds that never jump, whatever this clock's own pace: for
        what is about bytes on a wire (a port's settle time), which a fast
        or fake clock does not speed up."""
        return time.monotonic()


SYSTEM_CLOCK = Clock()


class ScaledClock(Clock):
    """A clock that runs ``factor`` times faster than real time.

    Starts at ``start`` (default: now).  Used by ``--demo`` so that 10-minute
    averages and half-hourly meter notifications show up within a minute.
    """

    def __init__(self, factor: float, start: datetime.datetime | None = None):
        if factor <= 0:
            raise ValueError("factor must be positive")
        self.factor = float(factor)
        self._real0 = time.monotonic()
        self._start = start or datetime.datetime.now()

    def _elapsed(self) -> float:
        return (time.monotonic() - self._real0) * self.factor

    def now(self) -> datetime.datetime:
        return self._start + datetime.timedelta(seconds=self._elapsed())

    def monotonic(self) -> float:
        return self._elapsed()

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        if seconds is None:
            return event.wait()
        return event.wait(max(0.0, seconds) / self.factor)

    def to_real(self, seconds: float) -> float:
        return seconds / self.factor


class FakeClock(Clock):
    """A clock that moves only when a test calls ``advance()``.

    ``wait()`` returns when the event is set or when enough fake time has been
    advanced; it blocks in short real-time slices so threads stay responsive.
    """

    REAL_TICK = 0.01   # real seconds a waiter sleeps before looking at fake time again

    def __init__(self, start: datetime.datetime | None = None):
        self._lock = threading.Condition()
        self._wall = start or datetime.datetime(2026, 1, 1, 0, 0, 0)
        self._mono = 1000.0

    def now(self) -> datetime.datetime:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._wall += datetime.timedelta(seconds=seconds)
            self._mono += seconds
            self._lock.notify_all()

    def set(self, wall: datetime.datetime) -> None:
        """Jump the wall clock (as NTP would); monotonic time is untouched."""
        with self._lock:
            self._wall = wall
            self._lock.notify_all()

    def wait(self, event: threading.Event, seconds: float | None) -> bool:
        with self._lock:
            deadline = None if seconds is None else self._mono + max(0.0, seconds)
        while True:
            if event.is_set():
                return True
            with self._lock:
                if deadline is not None and self._mono >= deadline:
                    return False
                self._lock.wait(self.REAL_TICK)

    def to_real(self, seconds: float) -> float:
        # Fake time moves only when a test advances it, so no real span
        # matches; a waiter that must look again gets one short tick (not 0,
        # which made every queue wait return at once: a busy loop).
        return self.REAL_TICK if seconds > 0 else 0.0
