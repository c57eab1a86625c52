"""An emulated serial sensor receiver: N units x M sensors, one line per reading.

It stands for an Arduino on USB, or the USB end of a TWELite / XBee radio
link that forwards the lines of battery-powered sensor nodes.  It speaks the
format ``keilib.serial`` reads::

    <unit>,<sensor>,<value>[,<data id>]\\r\\n      e.g.  unit2,hum,48.31,17

Units are ``unit1 .. unitN``; sensors are ``temp``, ``hum``, ``pres``,
``lux`` and then ``s5``, ``s6`` ...; each value is a seeded random walk
around a plausible level, printed with 2 decimals.  Readings go round-robin
(unit1/temp, unit1/hum, ..., unit2/temp, ...) at ``rate`` lines per second
in total, paced on the device's clock (a ``FakeClock`` steps it in tests):
reading k goes out at (k + 1) / rate seconds after the device was made.
The data id is a per-unit counter 0..65535, as a radio node's frame counter;
it keeps counting over ``reset()`` (the nodes are not powered by the USB
port) so a reader never mistakes a new reading for a resend.

The same seed gives the same readings and the same faults, whatever the
rate or the clock.  Faults (probabilities per reading, from their own seeded
generator so they do not change the values):

* ``dup``: the line is sent twice (a radio resend: same data id);
* ``garbage``: one bad item is sent before the line, one of: bytes that are
  not UTF-8, a line with a missing field, one with an extra field, a bad id,
  ``nan``, ``inf``, an over-long line (300-600 bytes);
* ``unplug_every`` / ``unplug_for``: seconds between disconnects and their
  length; acted on when the device is bound to a transport that can unplug
  (``bind_transport``, done by ``python3 -m keilib.sim sensor``).  With a
  ``sim://sensor?name=x`` port, tests call
  ``keilib.sim.protocol_sim.unplug('x')`` / ``replug('x')`` instead.

What was sent is kept for tests: ``sent`` (the valid readings, once each, as
``keilib.serial.Reading``: value a float, data id None without ids),
``duplicates_sent`` and ``garbage_sent`` (counts by kind).  Lines produced
while no host is attached are not sent and not counted.

Reachable as ``sim://sensor?units=2&sensors=2&rate=5&seed=1&dup=0.1&garbage=0.05``
(see ``URL_GRAMMAR``) and ``python3 -m keilib.sim sensor --units 2 ... --link PATH``.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from keilib.clock import SYSTEM_CLOCK, Clock
from keilib.serial import Reading
from keilib.sim.transport import Scheduler

logger = logging.getLogger(__name__)

SENT_KEPT = 100000      # valid readings remembered for tests

# name, starting level, step of the random walk, lowest, highest
SENSOR_KINDS: List[Tuple[str, float, float, float, float]] = [
    ("temp", 22.0, 0.05, -20.0, 50.0),
    ("hum", 50.0, 0.2, 5.0, 95.0),
    ("pres", 1013.0, 0.1, 950.0, 1060.0),
    ("lux", 300.0, 5.0, 0.0, 20000.0),
]
GARBAGE_KINDS = ("not_utf8", "missing_field", "extra_field", "bad_id", "nan", "inf", "overlong")
MIN_TICK = 0.01      # seconds: at high rates several lines go out per wake-up
TAG_LINES = "lines"
TAG_PLUG = "plug"


def sensor_name(index: int) -> str:
    return SENSOR_KINDS[index][0] if index < len(SENSOR_KINDS) else "s%d" % (index + 1)


class SensorNode:
    """The emulated device (interface: ``keilib.sim.transport``)."""

    def __init__(self, units: int = 1, sensors: int = 1, rate: float = 1.0, seed: int = 1,
                 dup: float = 0.0, garbage: float = 0.0, ids: bool = True, count: int = 0,
                 unplug_every: float = 0.0, unplug_for: float = 1.0, eol: bytes = b"\r\n",
                 clock: Optional[Clock] = None):
        for name, value, low in (("units", units, 1), ("sensors", sensors, 1), ("count", count, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError("%s must be an integer >= %d, got %r" % (name, low, value))
        if not rate > 0:
            raise ValueError("rate must be positive, got %r" % (rate,))
        for name, value in (("dup", dup), ("garbage", garbage)):
            if not 0.0 <= value <= 1.0:
                raise ValueError("%s must be a probability 0..1, got %r" % (name, value))
        if unplug_every < 0 or unplug_for <= 0:
            raise ValueError("unplug_every must be >= 0 and unplug_for > 0")
        self.units, self.sensors, self.rate, self.count = units, sensors, float(rate), count
        self.dup, self.garbage, self.ids, self.eol = dup, garbage, ids, eol
        self.unplug_every, self.unplug_for = unplug_every, unplug_for
        self.clock = clock or SYSTEM_CLOCK
        self._values_rng = random.Random(seed)
        self._faults_rng = random.Random(seed * 1000003 + 7)
        # (unit index, sensor index) -> current value of its random walk
        self._levels = {(u, s): SENSOR_KINDS[s][1] if s < len(SENSOR_KINDS) else 10.0 * (s + 1)
                        for u in range(units) for s in range(sensors)}
        self._frame = [0] * units            # per-unit data id counter
        self._lock = threading.Lock()
        self._sink: Optional[Callable[[bytes], None]] = None
        self._produced = 0                   # readings made (sent or not)
        # Bounded (trimmed by half past SENT_KEPT): a demo or CLI may run for days.
        self.sent: List[Reading] = []
        self.duplicates_sent = 0
        self.garbage_sent: Dict[str, int] = collections.Counter()
        self.received = 0                    # bytes the host wrote (ignored)
        self._closed = False
        self._scheduler = Scheduler(self.clock, name="sim-sensor")
        self._start = self.clock.monotonic()
        self._scheduler.call_later(1.0 / self.rate, self._tick, tag=TAG_LINES)

    # -- the device interface ----------------------------------------------
    def attach(self, write: Optional[Callable[[bytes], None]]) -> None:
        with self._lock:
            self._sink = write

    def receive(self, data: bytes) -> None:
        self.received += len(data)           # a sensor takes no commands

    def reset(self) -> None:
        """Power-up of the USB side: nothing volatile to lose (see module doc)."""

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sink = None
        self._scheduler.close()

    def bind_transport(self, transport: Any) -> None:
        """Pull and re-plug ``transport`` (``unplug()``/``replug()``) as configured."""
        if self.unplug_every > 0:
            self._scheduler.call_later(self.unplug_every, self._unplug, transport, tag=TAG_PLUG)

    # -- for tests ----------------------------------------------------------
    def sent_readings(self) -> List[Reading]:
        with self._lock:
            return list(self.sent)

    def lines_for(self, readings: List[Reading]) -> bytes:
        """The bytes a list of readings was sent as (no faults)."""
        return b"".join(self._format(r) for r in readings)

    # -- internals ----------------------------------------------------------
    def _unplug(self, transport: Any) -> None:
        logger.info("sensor: unplugging for %g s", self.unplug_for)
        transport.unplug()
        self._scheduler.call_later(self.unplug_for, self._replug, transport, tag=TAG_PLUG)

    def _replug(self, transport: Any) -> None:
        transport.replug()
        logger.info("sensor: plugged back in")
        self._scheduler.call_later(self.unplug_every, self._unplug, transport, tag=TAG_PLUG)

    def _tick(self) -> None:
        elapsed = self.clock.monotonic() - self._start
        due = int(elapsed * self.rate + 1e-9)   # reading k is due at (k + 1) / rate
        if self.count:
            due = min(due, self.count)
        out = bytearray()
        with self._lock:
            if self._closed:
                return
            sink = self._sink
            while self._produced < due:
                reading = self._next_reading()
                if sink is None:
                    continue                 # nobody listens: the line is lost on the wire
                out += self._faulty_line(reading)
        if out and sink is not None:
            sink(bytes(out))
        if self.count and self._produced >= self.count:
            return
        next_due = ((self._produced + 1) / self.rate) - (self.clock.monotonic() - self._start)
        self._scheduler.call_later(max(MIN_TICK, next_due), self._tick, tag=TAG_LINES)

    def _next_reading(self) -> Reading:
        index = self._produced % (self.units * self.sensors)
        self._produced += 1
        unit, sensor = divmod(index, self.sensors)
        name, _, step, low, high = SENSOR_KINDS[sensor] if sensor < len(SENSOR_KINDS) else \
            (sensor_name(sensor), 0.0, 0.5, -1e6, 1e6)
        level = self._levels[(unit, sensor)] + self._values_rng.gauss(0.0, step)
        level = min(high, max(low, level))
        self._levels[(unit, sensor)] = level
        data_id = None
        if self.ids:
            data_id = str(self._frame[unit])
            self._frame[unit] = (self._frame[unit] + 1) % 65536
        return Reading("unit%d" % (unit + 1), name, float("%.2f" % level), data_id)

    def _format(self, reading: Reading) -> bytes:
        text = "%s,%s,%.2f" % (reading.unit, reading.sensor, reading.value)
        if reading.data_id is not None:
            text += "," + reading.data_id
        return text.encode("ascii") + self.eol

    def _faulty_line(self, reading: Reading) -> bytes:
        """The line for ``reading``, with the faults drawn for it (lock held)."""
        rng = self._faults_rng
        out = b""
        if self.garbage and rng.random() < self.garbage:
            kind = rng.choice(GARBAGE_KINDS)
            self.garbage_sent[kind] += 1
            out += self._garbage(kind, reading, rng)
        line = self._format(reading)
        out += line
        self.sent.append(reading)
        if len(self.sent) > SENT_KEPT:
            del self.sent[:SENT_KEPT // 2]
        if self.dup and reading.data_id is not None and rng.random() < self.dup:
            self.duplicates_sent += 1
            out += line
        return out

    def _garbage(self, kind: str, reading: Reading, rng: random.Random) -> bytes:
        unit, sensor = reading.unit.encode(), reading.sensor.encode()
        if kind == "not_utf8":
            body = bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(3, 20)))
        elif kind == "missing_field":
            body = unit + b"," + sensor
        elif kind == "extra_field":
            body = unit + b"," + sensor + b",1.0,1,2"
        elif kind == "bad_id":
            body = b"un it," + sensor + b",1.0"
        elif kind == "nan":
            body = unit + b"," + sensor + b",nan,1"
        elif kind == "inf":
            body = unit + b"," + sensor + b",-inf"
        else:  # overlong
            body = b"X" * rng.randrange(300, 600)
        return body + self.eol


# -- options shared by sim://sensor?... and python3 -m keilib.sim sensor -----------

def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return text == "1"


def _eol(text: str) -> bytes:
    table = {"crlf": b"\r\n", "lf": b"\n"}
    if text not in table:
        raise ValueError("expected crlf or lf")
    return table[text]


# option -> (converter, constructor keyword, help)
SENSOR_OPTIONS: Dict[str, Tuple[Callable[[str], Any], str, str]] = {
    "units": (int, "units", "number of units, default 1"),
    "sensors": (int, "sensors", "sensors per unit, default 1"),
    "rate": (float, "rate", "lines per second in total, default 1"),
    "seed": (int, "seed", "seed of values and faults, default 1"),
    "dup": (_probability, "dup", "probability a line is resent, 0..1"),
    "garbage": (_probability, "garbage", "probability of a bad item before a line, 0..1"),
    "ids": (_flag, "ids", "1: lines carry a data id (default), 0: no data id"),
    "count": (int, "count", "stop after this many readings, 0 = never"),
    "eol": (_eol, "eol", "crlf (default) or lf"),
    "unplug_every": (float, "unplug_every", "seconds between disconnects (pty only), 0 = never"),
    "unplug_for": (float, "unplug_for", "seconds a disconnect lasts, default 1"),
}

URL_GRAMMAR = "sim://sensor?" + "&".join("%s=<%s>" % (name, spec[2]) for name, spec in SENSOR_OPTIONS.items())


def from_options(options: Mapping[str, str]) -> SensorNode:
    """Build a SensorNode from string options (sim:// URL or command line)."""
    unknown = sorted(set(options) - set(SENSOR_OPTIONS))
    if unknown:
        raise ValueError("unknown option(s) %s; expected %s" % (", ".join(unknown), URL_GRAMMAR))
    kwargs: Dict[str, Any] = {}
    for name, text in options.items():
        converter, keyword, _ = SENSOR_OPTIONS[name]
        try:
            kwargs[keyword] = converter(text)
        except ValueError as exc:
            raise ValueError("bad value %r for option %r (%s); expected %s"
                             % (text, name, exc, URL_GRAMMAR)) from None
    return SensorNode(**kwargs)
