"""Sensors on serial ports: one text line per reading (Arduino, TWELite, XBee).

Wire format (one reading per line, ASCII, LF or CRLF terminated)::

    UNITID,SENSORID,VALUE[,DATAID]<LF>
    e.g.  ar1,temp,23.25,117\\r\\n
          ar1,hum,41\\n

* ``UNITID``, ``SENSORID``, ``DATAID``: one or more letters, digits, ``-``
  or ``_``.  Spaces or tabs around a field are ignored.
* ``VALUE``: a finite decimal number (``-3``, ``23.25``, ``1.5e3``); an
  integer stays an integer in the files.  ``nan``, ``inf``, hex and empty
  values are rejected.
* ``DATAID`` (optional): lets the reader drop a line a radio link resent.
  Without it every line is a reading and the record's data id is ``x``.

Anything else -- missing or extra fields, a bad id, a bad number, bytes that
are not UTF-8, a line longer than ``LINE_LIMIT`` bytes without a newline -- is
logged once (WARNING, with the port and the offending text, truncated and
repr-escaped) and skipped; the next line is read normally.  Blank lines are
ignored silently.  A value out of range (``abs(value) >= 1e15``, see
``keilib.sensorline``) is a bad line too.

Rate limit (``keilib.logutil.LogLimiter``): per port, the first 5 bad lines
are logged in full, then one summary every 10 minutes (``N more bad lines on
<port> in the last 10 minutes (last: ...)``); after 10 quiet minutes the next
one is shown in full again.  Checker rejections and readings dropped on a
full queue are limited the same way, each kind on its own.

What ``SerialReader`` does with each valid line, in order:

1. **Duplicates**: a line with a DATAID whose ``(unit, sensor, value, data id)``
   equals one of the last ``DUP_LINES`` (16) lines that carried a DATAID, and
   arrived less than ``DUP_SECONDS`` (60 s) after it, is a resend: dropped,
   DEBUG log.  Both bounds, so a node whose id counter wraps or restarts
   does not lose a real reading an hour later.
2. **Checker** (optional, ``checker=``): ``checker.check(unit, sensor, value)``
   returning False rejects the reading (WARNING).  ``OutlierChecker`` is the
   built-in one.
3. **Record**: a ``keilib.record.Record`` stamped with ``clock.now()`` at the
   moment the bytes were read, put on ``record_que``.

Module layout: the codec (``parse_line``, ``LineSplitter``) is pure and lives
in ``keilib.sensorline``; ``OutlierChecker`` and ``DuplicateFilter`` hold
per-reader state; ``SerialReader`` is the worker that does the I/O.
"""

from __future__ import annotations

import abc
import collections
import logging
import queue
import threading

import serial  # pyserial (absolute import: this module is keilib.serial)

from keilib import validate
from keilib.clock import Clock
from keilib.errors import ConfigError, ProtocolError
from keilib.logutil import LogLimiter
from keilib.ports import MAX_BAUD, MIN_BAUD, PORT_PATTERN, cancel_read, open_port, port_problem
from keilib.record import Record
# The codec, re-exported: configs and tests written against keilib.serial keep working.
from keilib.sensorline import ID_PATTERN, VALUE_LIMIT, LineSplitter, Reading, parse_line, show  # noqa: F401
from keilib.worker import Backoff, Worker

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Deque, Dict, Optional, Tuple

logger = logging.getLogger(__name__)


# -- checks ---------------------------------------------------------------------

class Checker(abc.ABC):
    """Base of value checkers (keilog's name): subclass and give ``check()``.

    A checker is passed as ``SerialReader(..., checker=MyChecker())``.
    """

    @abc.abstractmethod
    def check(self, unit: str, sensor: str, value: float) -> bool:
        """True to keep the reading, False to reject it."""


class OutlierChecker(Checker):
    """Reject values out of range, and sudden jumps that do not persist.

    ``add(unit, sensor, min, max, variation)`` sets the rule of one sensor;
    sensors without a rule pass.  For a sensor with a rule:

    * a value outside ``[min, max]`` is rejected (``None``: no bound) and
      leaves the state untouched;
    * a value that differs from the last accepted one by more than
      ``variation`` is a jump: rejected, unless it is the 3rd consecutive
      jump, which is accepted and becomes the new base (the quantity really
      changed: a heater went on, the sensor was moved).  The first value
      after ``add()`` is always accepted as the base.  ``variation=None``:
      no jump rule.
    """

    PERSIST = 3   # consecutive jumps after which the new level is believed

    def __init__(self) -> None:
        # (unit, sensor) -> rule and state
        self._rules: Dict[Tuple[str, str], Dict[str, Any]] = {}

    def add(self, unit: str, sensor: str, min: Optional[float] = None,  # noqa: A002 - keilog's names
            max: Optional[float] = None, variation: Optional[float] = None) -> None:  # noqa: A002
        where = "OutlierChecker.add(%r, %r)" % (unit, sensor)
        try:
            validate.text("unit", unit, ID_PATTERN, "a unit id: letters, digits, '-' or '_'")
            validate.text("sensor", sensor, ID_PATTERN, "a sensor id: letters, digits, '-' or '_'")
            for name, bound in (("min", min), ("max", max), ("variation", variation)):
                if bound is not None:   # None: no bound; else finite and inside the accepted range
                    validate.number(name, bound, -VALUE_LIMIT, VALUE_LIMIT)
        except ConfigError as exc:
            raise ConfigError("%s: %s" % (where, exc)) from None
        if min is not None and max is not None and min > max:
            raise ConfigError("OutlierChecker.add(%r, %r): min %r is above max %r" % (unit, sensor, min, max))
        if variation is not None and variation < 0:
            raise ConfigError("OutlierChecker.add(%r, %r): variation must be >= 0, got %r"
                              % (unit, sensor, variation))
        self._rules[(unit, sensor)] = {"min": min, "max": max, "variation": variation,
                                       "base": None, "jumps": 0}

    def check(self, unit: str, sensor: str, value: float) -> bool:
        rule = self._rules.get((unit, sensor))
        if rule is None:
            return True
        if (rule["min"] is not None and value < rule["min"]) or (rule["max"] is not None and value > rule["max"]):
            return False
        base, variation = rule["base"], rule["variation"]
        if base is not None and variation is not None and abs(value - base) > variation:
            rule["jumps"] += 1
            if rule["jumps"] < self.PERSIST:
                return False
        rule["base"] = value
        rule["jumps"] = 0
        return True


class DuplicateFilter:
    """Remember recent ``(unit, sensor, value, data_id)`` keys to spot resends.

    A key is a duplicate if it is among the last ``lines`` keys seen and was
    seen less than ``seconds`` ago (``now`` is a monotonic time).
    """

    def __init__(self, lines: int = 16, seconds: float = 60.0):
        self.seconds = seconds
        self._recent: Deque[Tuple[tuple, float]] = collections.deque(maxlen=lines)
        # How often each key is in _recent: most lines are new, and a dict
        # lookup tells so without comparing against every remembered key.
        self._counts: Dict[tuple, int] = {}

    def seen(self, key: tuple, now: float) -> bool:
        """True if ``key`` is a recent duplicate; otherwise remember it."""
        counts = self._counts
        if key in counts:
            for old_key, stamp in self._recent:
                if old_key == key and now - stamp < self.seconds:
                    return True
        recent = self._recent
        if not recent.maxlen:
            return False                        # remembers nothing
        if len(recent) == recent.maxlen:
            oldest = recent[0][0]               # about to fall out of the deque
            left = counts[oldest] - 1
            if left:
                counts[oldest] = left
            else:
                del counts[oldest]
        recent.append((key, now))
        counts[key] = counts.get(key, 0) + 1
        return False


# -- the worker ------------------------------------------------------------------

class SerialReader(Worker):
    """Read sensor lines from a serial port and put Records on ``record_que``.

    ``port``: a device path (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``) or any
    pyserial URL (``socket://host:port``, ``rfc2217://...``, ``sim://sensor``);
    opened with ``serial.serial_for_url`` in the worker's thread, 8N1, no flow
    control.  ``baudrate``: e.g. 9600 or 115200.  ``record_que``: where the
    Records go (required).  ``checker``: an object with
    ``check(unit, sensor, value) -> bool`` (e.g. ``OutlierChecker``), or None.

    Lines are parsed, de-duplicated and checked as the module docstring says.

    Hot-plug: if the port cannot be opened (not there yet, USB stick pulled)
    or a read fails, that is logged once (WARNING), the port is closed and
    reopened after 1 s, 2 s, 4 s ... up to 30 s; when it is back that is logged
    (WARNING) and reading goes on.  A partial line from before is discarded.
    The delay starts again from 1 s only once data has been read, so a port
    that opens but fails at once is retried at most every 30 s, not in a loop.

    Opening mid-line: a device that streams while the port is opened delivers
    the tail of a line first, and a tail often parses (``nit1,temp,22.5,7``
    from ``unit1,...``) into a reading of a unit that does not exist.  So if
    bytes arrive within ``SETTLE_SECONDS`` (0.05 s) of the open, everything up
    to the first newline is discarded (INFO log); a line that starts later is
    whole and kept.  ``connected`` turns True once that time has passed.

    Full ``record_que``: the reader waits for room (the bytes meanwhile wait
    in the port's buffer) and logs a WARNING once if that lasts
    ``QUEUE_WARN_SECONDS`` (5 s).  A reading that could not be queued within
    ``QUEUE_GIVE_UP_SECONDS`` (60 s) is dropped with an ERROR naming it, and
    from then on, until the queue takes a reading again, each reading gets
    one more short try and is dropped with an ERROR -- so the port keeps being
    read and a stalled recorder does not turn into minutes-old data later.
    ``stats`` counts what happened (lines, records, invalid, duplicates,
    rejected, dropped).

    Idle cost: a quiet port is waited on, not polled.  Where the port can be
    woken (pyserial's ``cancel_read``: a local device, ``sim://``) a read
    blocks up to ``IDLE_READ_TIMEOUT`` (5 s) and ``stop()`` ends it at once;
    other ports (``socket://``, ``rfc2217://``) are read ``READ_TIMEOUT`` at a
    time.  Lines are taken in batches: after the first byte of a quiet spell
    the reader lets ``GATHER_BYTES`` (2 KB) of line time pass, at most 0.2 s,
    and reads everything then, so a reading reaches ``record_que`` at most
    about 0.2 s after its last byte arrived, stamped with the moment its
    batch was read.

    A stop request is honoured within about ``READ_TIMEOUT`` (0.2 s) in every
    state.

    ``worker_def`` entry::

        {'class': SerialReader,
         'args': {'port': '/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_XXXX-if00-port0',
                  'baudrate': 115200,
                  'record_que': record_que,        # FileRecorder takes from it
                  'checker': checker}}             # optional: an OutlierChecker
    """

    PRODUCES = ("record_que",)

    LINE_LIMIT = 256             # bytes; a longer line is discarded
    READ_TIMEOUT = 0.2           # seconds a read blocks: bounds the stop latency
    IDLE_READ_TIMEOUT = 5.0      # the same where stop() can end a read (cancel_read)
    # After the first byte of a quiet spell, let the line fill for the time
    # GATHER_BYTES take on the wire (at most GATHER_MAX_SECONDS, real time)
    # and read it all at once: one wake-up and one hand-off per batch of lines
    # instead of one per USB packet (an FTDI at a full 115200 baud delivers
    # every 5.4 ms).  Each batch costs about as much CPU as 25 lines (wake-ups,
    # syscalls), so batches of ~80 lines at 115200 baud halve the cost of
    # batches of 20.  Bounded in bytes: half the kernel's 4 KB tty buffer, at
    # any baud rate; bounded in time: a reading is handed on at most 0.2 s
    # after its last byte came (stamped when its batch was read).
    GATHER_BYTES = 2048
    GATHER_MAX_SECONDS = 0.2
    SETTLE_SECONDS = 0.05        # bytes this soon after an open may be a line's tail
    DUP_LINES = 16
    DUP_SECONDS = 60.0
    REOPEN_FIRST = 1.0
    REOPEN_MAX = 30.0
    QUEUE_SLICE = 0.1            # real seconds per put attempt
    QUEUE_WARN_SECONDS = 5.0
    QUEUE_GIVE_UP_SECONDS = 60.0
    CONSOLE_AFTER = 60.0         # a port missing this long is said on the terminal too

    def __init__(self, port: str, baudrate: int, record_que: "Optional[queue.Queue[Any]]" = None,
                 checker: Optional[Any] = None, clock: Optional[Clock] = None):
        validate.text("port", port, PORT_PATTERN, "a device path or pyserial URL string")
        validate.number("baudrate", baudrate, MIN_BAUD, MAX_BAUD, integer=True)
        if record_que is None:
            raise ConfigError("record_que is required (the queue FileRecorder takes from)")
        if not isinstance(record_que, queue.Queue):
            raise ConfigError("record_que must be a queue.Queue, got %s" % type(record_que).__name__)
        if checker is not None and not callable(getattr(checker, "check", None)):
            raise ConfigError("checker must have a check(unit, sensor, value) method, got %r" % (checker,))
        super().__init__(clock=clock, name="SerialReader(%s)" % port)
        self.port = port
        self.baudrate = baudrate
        self.record_que = record_que
        self.checker = checker
        self.stats: Dict[str, int] = dict.fromkeys(
            ("lines", "records", "invalid", "duplicates", "rejected", "dropped"), 0)
        self._serial: Optional[Any] = None
        self._port_lock = threading.Lock()    # _wake() runs in the thread that asks for a stop
        # Real time (like the port timeout): it is about bytes on the wire, not the clock's
        # (possibly faked or scaled) time.
        self._settle_until = 0.0
        self._skip_partial = False      # discard up to the next newline
        self._first_data = False        # nothing read since the port was opened
        self._splitter = LineSplitter(self.LINE_LIMIT)
        self._gather_seconds = min(self.GATHER_MAX_SECONDS, self.GATHER_BYTES * 10.0 / baudrate)
        self._duplicates = DuplicateFilter(self.DUP_LINES, self.DUP_SECONDS)
        self._reopen = Backoff(self.REOPEN_FIRST, self.REOPEN_MAX)
        self._down_since: Optional[float] = None   # monotonic time the port went away
        self._ever_opened = False
        self._said_on_console = False
        self._queue_stuck_since: Optional[float] = None
        self._queue_warned = False
        self._queue_gave_up = False
        self._queue_dropped = 0         # in this episode
        # Bad input is logged rate-limited: a noisy line must not fill the disk.
        self.log_limit = LogLimiter(logger, self.clock.monotonic)

    @classmethod
    def config_warnings(cls, args: dict) -> list:
        problem = port_problem(args.get("port"))
        return [problem] if problem else []

    @property
    def connected(self) -> bool:
        """True while the port is open and past its settle time (see the class doc)."""
        return self._serial is not None and self.clock.real_monotonic() >= self._settle_until

    # -- the loop ---------------------------------------------------------
    def step(self) -> None:
        self.log_limit.flush()
        if self._serial is None:
            self._try_open()
            return
        port = self._serial
        try:
            data = port.read(1)     # blocks until bytes come, a stop, or the read timeout
            if not data:
                return
            if self._first_data:
                # Only the first bytes after an open can start inside a line.
                self._first_data = False
                self._skip_partial = self.clock.real_monotonic() < self._settle_until
                # The port really works: the next loss starts the back-off afresh.  (Not
                # at the open: a port that opens and then fails at once would flap.)
                self._reopen.reset()
            waiting = port.in_waiting
            if waiting < self.GATHER_BYTES:
                # Let a batch arrive (see GATHER_BYTES): wait for the bytes still
                # missing, so the buffer holds about GATHER_BYTES, not more.
                # Real time, like the port's timeout; a stop ends it at once.
                self._stopping.wait(self._gather_seconds * (self.GATHER_BYTES - waiting) / self.GATHER_BYTES)
                waiting = port.in_waiting
            if waiting:
                data += port.read(waiting)
        except (serial.SerialException, OSError) as exc:
            self._lost(exc)
            return
        now = self.clock.now()
        monotonic = self.clock.monotonic()
        for raw, overlong in self._splitter.feed(data):
            if self._skip_partial:
                self._skip_partial = False
                logger.info("port %s: discarded the first line after opening, maybe a line's tail: %s",
                            self.port, show(raw))
                continue
            self._handle_line(raw, overlong, now, monotonic)

    def cleanup(self) -> None:
        self.log_limit.flush(final=True)
        self._close()

    # -- port handling ----------------------------------------------------
    def _try_open(self) -> None:
        try:
            port = open_port(self.port, baudrate=self.baudrate, timeout=self.READ_TIMEOUT)
            if hasattr(port, "cancel_read"):
                try:
                    port.timeout = self.IDLE_READ_TIMEOUT    # stop() wakes the read (see _wake)
                except (serial.SerialException, OSError, ValueError):
                    port.close()
                    raise
            with self._port_lock:
                self._serial = port
        except (serial.SerialException, OSError, ValueError) as exc:
            if self._down_since is None:
                self._down_since = self.clock.monotonic()
                logger.warning("port %s: cannot open (%s); retrying every %g..%g s until it appears",
                               self.port, exc, self.REOPEN_FIRST, self.REOPEN_MAX)
            elif not self._said_on_console and self.clock.monotonic() - self._down_since >= self.CONSOLE_AFTER:
                self._said_on_console = True      # once: a person at the terminal should know
                logger.info("port %s: still cannot open it after %.0f s (%s); kei keeps trying",
                               self.port, self.clock.monotonic() - self._down_since, exc,
                               extra={"console": True})
            else:
                logger.debug("port %s: still not there (%s)", self.port, exc)
            self.wait(self._reopen.next())
            return
        self._splitter.reset()
        self._settle_until = self.clock.real_monotonic() + self.SETTLE_SECONDS
        self._skip_partial = False
        self._first_data = True
        if self._down_since is not None and self._ever_opened:
            logger.warning("port %s: back after %.0f s; reading again", self.port,
                           self.clock.monotonic() - self._down_since)
        elif self._down_since is not None:
            logger.warning("port %s: appeared after %.0f s; opened at %d baud", self.port,
                           self.clock.monotonic() - self._down_since, self.baudrate)
        else:
            logger.info("port %s: opened at %d baud", self.port, self.baudrate)
        self._down_since = None
        self._ever_opened = True

    def _lost(self, exc: BaseException) -> None:
        logger.warning("port %s: lost (%s); closing it and reopening when it is back", self.port, exc)
        self._close()
        self._down_since = self.clock.monotonic()
        # Wait before the first reopen: a vanished device node needs a moment to go.
        self.wait(self._reopen.next())

    def request_stop(self) -> None:
        super().request_stop()
        self._wake()

    def stop(self, timeout: float = 10.0) -> bool:
        self.request_stop()
        return super().stop(timeout)

    def _wake(self) -> None:
        """End a blocked read now (from the thread asking for a stop)."""
        with self._port_lock:
            cancel_read(self._serial)

    def _close(self) -> None:
        with self._port_lock:       # not while _wake() uses it
            port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as exc:
                logger.debug("port %s: error while closing (%s)", self.port, exc)

    # -- lines --------------------------------------------------------------
    def _handle_line(self, raw: bytes, overlong: bool, now: Any, monotonic: float) -> None:
        if overlong:
            self.stats["invalid"] += 1
            self.log_limit.warning(self.port, "bad lines", "port %s: skipped a line longer than %d bytes: %s",
                                   self.port, self.LINE_LIMIT, show(raw))
            return
        stats = self.stats
        try:
            reading = parse_line(raw)       # takes a trailing CR (CRLF)
        except ProtocolError as exc:
            if raw.endswith(b"\r"):
                raw = raw[:-1]   # CRLF: the CR is part of the terminator, not of the text shown
            if not raw.strip(b" \t"):
                return   # blank line
            stats["lines"] += 1
            stats["invalid"] += 1
            self.log_limit.warning(self.port, "bad lines", "port %s: skipped invalid line %s: %s",
                                   self.port, show(raw), exc)
            return
        stats["lines"] += 1
        if reading.data_id is not None and self._duplicates.seen(reading, monotonic):
            stats["duplicates"] += 1
            logger.debug("port %s: dropped a resent line %s", self.port, show(raw.rstrip(b"\r")))
            return
        if self.checker is not None and not self._check(reading):
            stats["rejected"] += 1
            self.log_limit.warning(self.port, "rejected readings", "port %s: %s,%s value %r rejected by the "
                                   "checker", self.port, reading.unit, reading.sensor, reading.value)
            return
        record = Record(now, reading.unit, reading.sensor, reading.value, reading.data_id or "x")
        self._put(record)

    def _check(self, reading: Reading) -> bool:
        try:
            return bool(self.checker.check(reading.unit, reading.sensor, reading.value))  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - a user checker's bug must not stop the reader
            logger.error("port %s: checker failed on %s,%s,%r (%s: %s); reading kept", self.port,
                         reading.unit, reading.sensor, reading.value, type(exc).__name__, exc)
            return True

    def _put(self, record: Record) -> None:
        """Queue ``record``, waiting for room; see the class docstring."""
        if self._queue_stuck_since is None:
            try:
                self.record_que.put_nowait(record)       # the common case: there is room
            except queue.Full:
                pass
            else:
                self.stats["records"] += 1
                self.health.reading(record)
                return
        started = self.clock.monotonic()
        while True:
            try:
                if self._queue_gave_up or self.stopping:
                    self.record_que.put_nowait(record)    # one short try, then drop
                else:
                    self.record_que.put(record, timeout=self.QUEUE_SLICE)
            except queue.Full:
                pass
            else:
                self.stats["records"] += 1
                self.health.count("out")
                self.health.reading(record)
                if self._queue_stuck_since is not None:
                    if self._queue_warned or self._queue_gave_up:
                        logger.warning("port %s: record_que takes readings again after %.0f s (%d dropped)",
                                       self.port, self.clock.monotonic() - self._queue_stuck_since,
                                       self._queue_dropped)
                    self._queue_stuck_since = None
                    self._queue_dropped = 0
                    self._queue_warned = self._queue_gave_up = False
                return
            now = self.clock.monotonic()
            if self._queue_stuck_since is None:
                self._queue_stuck_since = started
            stuck = now - self._queue_stuck_since
            if not self._queue_warned and stuck >= self.QUEUE_WARN_SECONDS:
                self._queue_warned = True
                logger.warning("port %s: record_que has been full for %.0f s; waiting (is the recorder "
                               "running?)", self.port, stuck)
            if self._queue_gave_up or self.stopping or stuck >= self.QUEUE_GIVE_UP_SECONDS:
                self._queue_gave_up = True
                self.stats["dropped"] += 1
                self.health.count("dropped")
                self._queue_dropped += 1
                self.log_limit.message(logging.ERROR, self.port, "dropped readings",
                                       "port %s: record_que full for %.0f s%s; dropped reading %s", self.port,
                                       stuck, " at stop" if self.stopping else "", record.to_raw_line())
                return
