"""The Record: one reading, stamped by the reader at the moment of measurement.

Timestamps are **naive local wall-clock datetimes**: exactly what the files show
(``YYYY/MM/DD hh:mm:ss``) and what a smart meter reports in EA/EB.  No later
stage re-stamps a Record.  Legacy 4-item lists ``[unit, sensor, value, data_id]``
(keilog readers) get their time once, when they are taken off the queue
(``Record.from_legacy``).

Raw line (one per reading)::

    YYYY/MM/DD hh:mm:ss,<unit>,<sensor>,<value>,<data_id>

The value is rounded to 4 decimal places; an integer value stays an integer
(``1852``), a float keeps Python's shortest form (``1314.0``, ``0.1``).

Accepted values: finite numbers with ``abs(value) < VALUE_LIMIT`` (10**15),
so an integer has at most 15 digits and is exact as a float64 (below 2**53),
and a sum of up to 10**290 values -- any average -- stays finite.  A Record
refuses anything else (ValueError), so no stage after it sees ``nan``,
``inf`` or a 250-digit integer.
"""

from __future__ import annotations

import datetime
import math
import re

from keilib.frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Sequence

TIME_FORMAT = "%Y/%m/%d %H:%M:%S"
# The data id of readings taken from a meter's history (back-fill), not live:
# outputs that only show the latest value skip them.
HISTORY_DATA_ID = "hist"
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
# Largest magnitude a reading may have (exclusive); see the module doc.
VALUE_LIMIT = 10 ** 15


def _short(value: float) -> str:
    """A huge int (250 digits) as a short text for a message."""
    text = repr(value)
    return text if len(text) <= 40 else "%s...(%d digits)" % (text[:20], len(text.lstrip("-")))


def format_value(value: float) -> str:
    """Format a numeric value as kei writes it: rounded to 4 places."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    return repr(round(float(value), 4))


class Record(Frozen):
    """One reading.  ``timestamp`` is naive local time (see module doc).

    Immutable, compared and hashed by its fields (``keilib.frozen``: no
    dataclass, whose import would be the heaviest of a serial-only box).
    Its own constructor: one is made per reading, and each is checked.
    """

    __slots__ = ("timestamp", "unit", "sensor", "value", "data_id")

    def __init__(self, timestamp: datetime.datetime, unit: str, sensor: str, value: float,
                 data_id: str = "x") -> None:
        setter = object.__setattr__
        setter(self, "timestamp", timestamp)
        setter(self, "unit", unit)
        setter(self, "sensor", sensor)
        setter(self, "value", value)
        setter(self, "data_id", data_id)
        self._check()

    def _check(self) -> None:
        if not isinstance(self.timestamp, datetime.datetime):
            raise TypeError("timestamp must be a datetime, got %r" % (self.timestamp,))
        for field in ("unit", "sensor", "data_id"):
            text = getattr(self, field)
            if not isinstance(text, str) or not _ID_RE.match(text):
                raise ValueError("%s must be a non-empty id of letters, digits, '_', '-' or '.', got %r"
                                 % (field, text))
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise TypeError("value must be a number, got %r" % (self.value,))
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError("value must be finite, got %r" % (self.value,))
        if not -VALUE_LIMIT < self.value < VALUE_LIMIT:
            raise ValueError("value must be within +-1e15 (at most 15 integer digits), got %s"
                             % _short(self.value))

    def to_raw_line(self) -> str:
        """The raw-file line, without the newline."""
        return "%s,%s,%s,%s,%s" % (self.timestamp.strftime(TIME_FORMAT), self.unit,
                                   self.sensor, format_value(self.value), self.data_id)

    @classmethod
    def parse_raw_line(cls, line: str) -> "Record":
        """Inverse of ``to_raw_line`` (raises ValueError on a malformed line)."""
        parts = line.rstrip("\r\n").split(",")
        if len(parts) != 5:
            raise ValueError("expected 5 comma-separated fields, got %d: %r" % (len(parts), line))
        stamp, unit, sensor, value_text, data_id = parts
        timestamp = datetime.datetime.strptime(stamp, TIME_FORMAT)
        value: float
        try:
            value = int(value_text)
        except ValueError:
            value = float(value_text)
        return cls(timestamp, unit, sensor, value, data_id)

    @classmethod
    def from_legacy(cls, item: Sequence[Any], now: datetime.datetime) -> "Record":
        """Build a Record from a keilog list ``[unit, sensor, value, data_id]``.

        ``now`` is the time the item was taken off the queue.  The data id is
        optional (default ``x``), and a numeric string value is accepted.
        """
        if isinstance(item, (str, bytes)) or not isinstance(item, (list, tuple)) or not 3 <= len(item) <= 4:
            raise ValueError("expected [unit, sensor, value, data_id], got %r" % (item,))
        unit, sensor, value = item[0], item[1], item[2]
        data_id = str(item[3]) if len(item) == 4 else "x"
        if isinstance(value, str):
            value = float(value)
        return cls(now.replace(microsecond=0), str(unit), str(sensor), value, data_id)
