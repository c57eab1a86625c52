"""The sensor-line codec: bytes from a serial sensor port -> readings.  Pure: no I/O, no logging.

Wire format (one reading per line, ASCII, LF or CRLF terminated)::

    UNITID,SENSORID,VALUE[,DATAID]<LF>
    e.g.  ar1,temp,23.25,117\\r\\n
          ar1,hum,41\\n

* ``UNITID``, ``SENSORID``, ``DATAID``: one or more letters, digits, ``-``
  or ``_``.  Spaces or tabs around a field are ignored.
* ``VALUE``: a finite decimal number (``-3``, ``23.25``, ``1.5e3``) with
  ``abs(value) < 1e15`` (``VALUE_LIMIT``, = ``keilib.record.VALUE_LIMIT``): an
  integer has at most 15 digits (exact as a float64), and no average of
  readings can overflow.  An integer stays an integer in the files.  ``nan``,
  ``inf``, ``1e999``, ``1.7e308``, a 16-digit integer, hex and empty values
  are rejected (bad lines).
* ``DATAID`` (optional): lets the reader drop a line a radio link resent.

``parse_line`` turns one line into a ``Reading`` or raises ProtocolError with
the reason; ``LineSplitter`` cuts a byte stream into lines with a length cap;
``show`` renders offending bytes safely for a log line.  The worker that does
the I/O and the policy is ``keilib.serial.SerialReader``.
"""

from __future__ import annotations

import functools
import math
import re
from collections import namedtuple

from keilib.errors import ProtocolError
from keilib.record import VALUE_LIMIT

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import List, Optional, Tuple, Union

# The patterns are compiled when first used, not at import: compiling them
# took 1.7 ms of this machine's start-up (a Pi Zero's CPU is about ten times
# slower) before a serial box opened its port.  The field-by-field ones go through re's own cache:
# they only run for invalid lines.
ID_PATTERN = r"[A-Za-z0-9_-]+\Z"
# A plain decimal number; float() alone would also take "nan", "1_0", "infinity".
NUMBER_PATTERN = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z"
INTEGER_PATTERN = r"[+-]?[0-9]+\Z"

# Longest VALUE text: a sign, 15 digits, a point and 15 more decimals, with
# room for an exponent ("-123456789012345.123456789012345e-10").
VALUE_TEXT_LIMIT = 40
# The whole of a valid line in one match (the common case, decoded as latin-1
# so that it cannot fail): the per-field checks below only run to name what
# is wrong with a line this does not match.  It accepts exactly the lines the
# field-by-field rules accept: ASCII ids, a plain decimal number, blanks
# around fields, at most one CR at the end.
LINE_PATTERN = (r"[ \t]*([A-Za-z0-9_-]+)[ \t]*,[ \t]*([A-Za-z0-9_-]+)[ \t]*,"
                r"[ \t]*([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)[ \t]*"
                r"(?:,[ \t]*([A-Za-z0-9_-]+)[ \t]*)?\r?")


@functools.lru_cache(maxsize=None)
def _line_re() -> re.Pattern:
    """LINE_PATTERN compiled, once, by the first line (1.4 ms here)."""
    return re.compile(LINE_PATTERN)

SHOW_BYTES = 80   # how much of an offending line a log message shows


def show(raw: bytes) -> str:
    """``raw`` as a short, safe, repr-escaped text for a log line."""
    if len(raw) > SHOW_BYTES:
        return "%r...(%d bytes)" % (bytes(raw[:SHOW_BYTES]), len(raw))
    return repr(bytes(raw))


# -- the codec (pure) ---------------------------------------------------------

class Reading(namedtuple("Reading", "unit sensor value data_id")):
    """One parsed line.  ``data_id`` is None when the line had no DATAID."""

    __slots__ = ()
    unit: str
    sensor: str
    value: Union[int, float]
    data_id: Optional[str]


def parse_line(raw: bytes) -> Reading:
    """Parse one line (without its LF; a trailing CR is allowed).

    Raises ProtocolError with the reason; the caller logs it.
    """
    match = _line_re().fullmatch(raw.decode("latin-1"))
    if match is not None:
        unit, sensor, value_text, data_id = match.groups()
        if len(value_text) <= VALUE_TEXT_LIMIT:   # before int(): no 250-digit integer is built
            value: Union[int, float] = (float(value_text) if "." in value_text or "e" in value_text
                                        or "E" in value_text else int(value_text))
            if -VALUE_LIMIT < value < VALUE_LIMIT:    # False for inf and nan too
                return Reading(unit, sensor, value, data_id)
        # out of range (1e999, 1.7e308, 250 digits): the checks below say so
    return _parse_fields(raw)


def _parse_fields(raw: bytes) -> Reading:
    """parse_line field by field: the reason a line is invalid."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("not UTF-8 (byte 0x%02x at %d)" % (raw[exc.start], exc.start)) from None
    fields = [field.strip(" \t") for field in text.split(",")]
    if not 3 <= len(fields) <= 4:
        raise ProtocolError("expected UNITID,SENSORID,VALUE[,DATAID], got %d field(s)" % len(fields))
    unit, sensor, value_text = fields[0], fields[1], fields[2]
    data_id = fields[3] if len(fields) == 4 else None
    for name, ident in (("unit id", unit), ("sensor id", sensor), ("data id", data_id)):
        if ident is not None and not re.match(ID_PATTERN, ident):
            raise ProtocolError("bad %s %r (letters, digits, '-', '_')" % (name, ident))
    if not re.match(NUMBER_PATTERN, value_text):
        raise ProtocolError("value %r is not a number" % value_text)
    if len(value_text) > VALUE_TEXT_LIMIT:   # before int(): no 250-digit integer is built
        raise ProtocolError("value %s... (%d characters) is out of range (|value| < 1e15)"
                            % (value_text[:20], len(value_text)))
    if re.match(INTEGER_PATTERN, value_text):
        value = int(value_text)
    else:
        value = float(value_text)
    if not (math.isfinite(value) and -VALUE_LIMIT < value < VALUE_LIMIT):   # e.g. 1e999, 1.7e308
        raise ProtocolError("value %r is out of range (|value| < 1e15)" % value_text)
    return Reading(unit, sensor, value, data_id)


class LineSplitter:
    """Cut a byte stream into lines at LF, with a length limit.

    ``feed(data)`` returns a list of ``(line, overlong)`` pairs: ``line`` is the
    line without its LF (a CR before it is kept; ``parse_line`` drops it).  A
    line that reaches ``limit`` bytes with no LF is reported once as
    ``(its first limit bytes, True)``; the rest of it, up to the next LF, is
    discarded, so one runaway line costs one log message and bounded memory.
    """

    def __init__(self, limit: int = 256):
        self.limit = limit
        self._buffer = bytearray()
        self._discarding = False   # inside an over-long line, waiting for its LF

    def reset(self) -> None:
        """Forget a partial line (the port was reopened)."""
        self._buffer.clear()
        self._discarding = False

    def feed(self, data: bytes) -> List[Tuple[bytes, bool]]:
        out: List[Tuple[bytes, bool]] = []
        buffer = self._buffer
        buffer += data
        if b"\n" in data:
            # One split for the whole batch (a read holds tens of lines).
            lines = bytes(buffer).split(b"\n")
            buffer[:] = lines.pop()                 # the unfinished rest
            limit = self.limit
            for line in lines:
                if self._discarding:
                    self._discarding = False        # the tail of a line already reported
                elif len(line) > limit:
                    out.append((line[:limit], True))
                else:
                    out.append((line, False))
        if len(buffer) > self.limit:
            if not self._discarding:
                out.append((bytes(buffer[:self.limit]), True))
                self._discarding = True
            buffer.clear()
        return out
