"""InfluxDB line protocol for Records and Aggregates: a pure codec (no I/O).

The layout (stable: dashboards and queries depend on it; README "InfluxDB /
VictoriaMetrics")::

    kei,sensor=E7,site=home,unit=BR value=1852.0 1779256800
    kei_10min,sensor=E7,site=home,unit=BR count=60i,max=2400.0,mean=1852.5,min=310.0 1779256800

* measurement ``kei`` for readings; ``kei_<N>min`` for aggregates of an
  N-minute window (``kei_10min`` for the averaging stage's default);
* tags ``site`` (one per kei box: the host name unless configured),
  ``unit`` and ``sensor`` (the Record's ids), sorted by key as InfluxDB
  prefers;
* field ``value`` is always a float (``1852.0``): an integer after a float in
  one field is refused by InfluxDB as a "field type conflict"; aggregates
  carry ``mean``, ``min``, ``max`` (floats) and ``count`` (an integer);
* the timestamp is the Record's own (meter time for EA/EB; the window start
  for an aggregate).  A Record holds naive *local* time; it is converted to
  UTC epoch with the box's time zone rules for that date (DST included), so
  the same instant is written whatever zone the box runs in.  Precision is
  whole seconds, or milliseconds for a record with a sub-second time; the
  precision is returned with the line because a write request has one.

VictoriaMetrics stores ``kei`` field ``value`` as the metric ``kei_value``
and aggregates as ``kei_10min_mean`` etc., with the tags as labels.
"""

from __future__ import annotations

import datetime
import re

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Tuple

READING_MEASUREMENT = "kei"
SECONDS = "s"
MILLISECONDS = "ms"

# No backslash: servers disagree on it in tag values (VictoriaMetrics keeps an
# escaped one as two characters, InfluxDB 1.6 refuses a trailing one: found by
# tests/test_lineprotocol.py), so such a name could not be read back as written.
_SITE_RE = re.compile(r"^[^\n\r\t\\\\]+$")


def check_site(site: Any) -> str:
    """A site tag value: text without line breaks, tabs or backslashes."""
    if not isinstance(site, str) or not _SITE_RE.match(site) or site != site.strip():
        raise ValueError("site must be non-empty text without line breaks, tabs, backslashes or "
                         "surrounding spaces, got %r" % (site,))
    return site


def escape_key(text: str) -> str:
    """Escape a tag key or value (commas, '=', spaces); kei's never hold a backslash."""
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_measurement(text: str) -> str:
    """Escape a measurement name (commas, spaces)."""
    return text.replace(",", "\\,").replace(" ", "\\ ")


def format_float(value: float) -> str:
    """A float field: always with a decimal point or exponent (never an integer)."""
    return repr(float(value))


def epoch(stamp: datetime.datetime) -> Tuple[int, str]:
    """(UTC epoch, precision) for a naive local time: seconds, or ms if it has a fraction.

    A naive datetime's ``timestamp()`` applies the local zone's rules for
    that date (the C library's mktime), so a summer time in a DST zone gets
    the summer offset.  Whole seconds are converted on their own so that the
    millisecond part is exact (no float rounding)."""
    whole = int(stamp.replace(microsecond=0).timestamp())
    if stamp.microsecond // 1000 == 0:
        return whole, SECONDS
    return whole * 1000 + stamp.microsecond // 1000, MILLISECONDS


def aggregate_measurement(window: int) -> str:
    """``kei_10min`` for a 600-second window (windows are whole minutes)."""
    if window % 60 == 0:
        return "%s_%dmin" % (READING_MEASUREMENT, window // 60)
    return "%s_%ds" % (READING_MEASUREMENT, window)


def is_aggregate(record: Any) -> bool:
    """An ``Aggregate`` (keilib.average) carries count/min/max and its window."""
    return all(hasattr(record, name) for name in ("count", "minimum", "maximum", "window"))


def encode(record: Any, site: str) -> Tuple[str, str]:
    """One Record or Aggregate -> (precision, one line ending in '\\n')."""
    tags = "sensor=%s,site=%s,unit=%s" % (escape_key(record.sensor), escape_key(site),
                                          escape_key(record.unit))
    if is_aggregate(record):
        measurement = aggregate_measurement(int(record.window))
        fields = "count=%di,max=%s,mean=%s,min=%s" % (
            int(record.count), format_float(record.maximum), format_float(record.value),
            format_float(record.minimum))
    else:
        measurement = READING_MEASUREMENT
        fields = "value=" + format_float(record.value)
    stamp, precision = epoch(record.timestamp)
    return precision, "%s,%s %s %d\n" % (escape_measurement(measurement), tags, fields, stamp)
