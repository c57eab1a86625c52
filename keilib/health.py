"""Health: each worker's counters and timestamps, in one small registry.

Every worker owns a ``Health`` (``worker.health``) and writes only its own:

* ``count(name, n=1)``: a counter that only grows (records in/out, dropped,
  retries, rejects, restarts, ...);
* ``gauge(name, value)``: a level (spool depth, buffer fill);
* ``stamp(name, when=None)``: a wall-clock moment (epoch seconds), e.g.
  ``last_success``;
* ``state(name, text)``: a word such as the B-route link state (``POLL``);
* ``reading(record)``: the last reading per (unit, sensor) and when it came.

Readers of health (a status command, an exporter, a watchdog) take a
``snapshot()`` through the launcher's ``Registry``; no worker reaches into
another.  Writes are single dictionary stores from the owner's thread and
snapshots copy under a lock, so a reader never sees a half-made entry.

The launcher keeps one ``Health`` per configured worker across restarts, so
counters survive an instance that died and was rebuilt.
"""

from __future__ import annotations

import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Callable, Dict, List, Optional, Tuple


class Health:
    """One worker's counters, gauges, stamps, states and last readings."""

    def __init__(self, name: str, kind: str = "") -> None:
        self.name = name
        self.kind = kind                 # the worker's class name
        self._lock = threading.Lock()
        self.counters: Dict[str, int] = {}
        self.gauges: Dict[str, float] = {}
        self.stamps: Dict[str, float] = {}
        self.states: Dict[str, str] = {}
        self.readings: Dict[Tuple[str, str], Tuple[Any, float, float]] = {}
        # Called when a state changes or a sensor gives its first reading (the
        # launcher wakes its main loop, which rewrites the status file): a link
        # going down, or the first E7 after a join, shows without a poll.
        self.on_state_change: Optional[Callable[[], None]] = None

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def gauge(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def stamp(self, name: str, when: Optional[float] = None) -> None:
        self.stamps[name] = time.time() if when is None else when

    def state(self, name: str, text: str) -> None:
        if self.states.get(name) != text:
            self.states[name] = text
            if self.on_state_change is not None:
                self.on_state_change()

    def reading(self, record: Any) -> None:
        """Remember ``record`` as the last of its (unit, sensor), with its
        own time (epoch seconds, from its naive local timestamp) and the
        moment it was seen."""
        key = (record.unit, record.sensor)
        new = key not in self.readings
        self.readings[key] = (record.value, record.timestamp.timestamp(), time.time())
        if new and self.on_state_change is not None:
            self.on_state_change()          # a sensor's first reading shows at once too

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "kind": self.kind,
                "counters": dict(self.counters),
                "gauges": dict(self.gauges),
                "stamps": dict(self.stamps),
                "states": dict(self.states),
                "readings": [{"unit": unit, "sensor": sensor, "value": value, "time": when,
                              "seen": seen}
                             for (unit, sensor), (value, when, seen) in sorted(self.readings.items())],
            }


class Registry:
    """Every configured worker's Health, in configuration order."""

    def __init__(self) -> None:
        self._items: List[Health] = []

    def add(self, health: Health) -> Health:
        self._items.append(health)
        return health

    def __iter__(self):
        return iter(list(self._items))

    def snapshot(self) -> List[Dict[str, Any]]:
        return [health.snapshot() for health in self._items]
