"""Log hygiene: rate-limited warnings for outside input, and secret redaction.

``LogLimiter``: a sensor port carrying noise, a garbled radio link or a
server answering nonsense can produce a warning per line, thousands an hour,
and fill an SD card.  A limiter keeps, per ``(source, kind)``, an *episode*:

* the first ``burst`` (5) messages are logged in full (the last of them says
  that the rest will be counted);
* the rest are counted, and once per ``period`` (600 s) one summary line is
  logged: ``37 more bad lines on /dev/ttyUSB0 in the last 10 minutes (last:
  ...)``;
* after a whole ``period`` without any, the episode ends: the next message is
  logged in full again.

Time is the owner's injected clock (a ``monotonic`` callable), so a test with
a FakeClock crosses a period in no real time.  Memory is one small entry per
(source, kind) with messages pending.  Call pattern in a worker::

    self.bad_lines = LogLimiter(logger, self.clock.monotonic)   # in __init__
    self.bad_lines.warning(self.port, "bad lines",               # per bad line
                           "port %s: skipped invalid line %s: %s", self.port, shown, exc)
    self.bad_lines.flush()                                        # in step(): due summaries
    self.bad_lines.flush(final=True)                              # in cleanup()

``RedactFilter``: a ``logging.Filter`` for handlers that rewrites every record
(message, arguments, traceback) so that no URL query string, URL user info or
``key=``/``token=``/``password=`` value reaches a log line, at any level and
from any library (urllib3 logs ``POST /upload.php?token=... HTTP/1.1`` at
DEBUG).  ``keilib.daemon.setup_logging`` installs it on its handler.

``DailyLogFile``: the log file, renamed at local midnight, the newest few
kept (module-level doc on the class).
"""

from __future__ import annotations

import logging
import os
import re
import time

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Callable, Dict, Optional, Tuple

# -- rate limiting ---------------------------------------------------------------


class _Episode:
    __slots__ = ("level", "shown", "suppressed", "since", "last_at", "last_msg", "last_args")

    def __init__(self, level: int, now: float) -> None:
        self.level = level
        self.shown = 0              # messages logged in full in this episode
        self.suppressed = 0         # counted since the last summary
        self.since = now            # start of the current summary period
        self.last_at = now
        self.last_msg = ""
        self.last_args: Tuple[Any, ...] = ()


class LogLimiter:
    """Rate-limit repeated messages per (source, kind); see the module doc."""

    BURST = 5
    PERIOD = 600.0
    EXAMPLE_CHARS = 160     # how much of the last suppressed message a summary shows

    def __init__(self, log: logging.Logger, monotonic: Callable[[], float],
                 burst: int = BURST, period: float = PERIOD) -> None:
        self.log = log
        self.monotonic = monotonic
        self.burst = burst
        self.period = period
        self._episodes: Dict[Tuple[str, str], _Episode] = {}
        self.suppressed_total = 0   # for tests and health counters

    def warning(self, source: str, kind: str, msg: str, *args: Any) -> None:
        self.message(logging.WARNING, source, kind, msg, *args)

    def message(self, level: int, source: str, kind: str, msg: str, *args: Any) -> None:
        """Log ``msg % args`` at ``level`` unless the (source, kind) episode is past its burst."""
        if not self.log.isEnabledFor(level):
            return
        now = self.monotonic()
        key = (str(source), kind)
        episode = self._episodes.get(key)
        if episode is not None:
            self._settle(key, episode, now)
            episode = self._episodes.get(key)
        if episode is None:
            episode = self._episodes[key] = _Episode(level, now)
        episode.last_at = now
        if episode.shown < self.burst:
            episode.shown += 1
            if episode.shown == self.burst:
                msg += " (more %s on %s are counted and summarized every %s)" % (
                    kind, source, _minutes(self.period))
            self.log.log(level, msg, *args)
            return
        episode.suppressed += 1
        self.suppressed_total += 1
        episode.last_msg, episode.last_args = msg, args

    def flush(self, final: bool = False) -> None:
        """Log the summaries that are due (all pending ones with ``final``)."""
        if not self._episodes:
            return
        now = self.monotonic()
        for key, episode in list(self._episodes.items()):
            self._settle(key, episode, now, final)

    def _settle(self, key: Tuple[str, str], episode: _Episode, now: float, final: bool = False) -> None:
        if episode.suppressed and (final or now - episode.since >= self.period):
            try:
                example = episode.last_msg % episode.last_args
            except (TypeError, ValueError):
                example = episode.last_msg
            if len(example) > self.EXAMPLE_CHARS:
                example = example[:self.EXAMPLE_CHARS] + "..."
            self.log.log(episode.level, "%d more %s on %s in the last %s (last: %s)",
                         episode.suppressed, key[1], key[0], _minutes(now - episode.since), example)
            episode.suppressed = 0
            episode.since = now
        elif now - episode.since >= self.period:
            episode.since = now
        if final or (not episode.suppressed and now - episode.last_at >= self.period):
            del self._episodes[key]     # quiet for a whole period: the next one is shown in full


def _minutes(seconds: float) -> str:
    minutes = max(1, int(round(seconds / 60.0)))
    return "%d minute%s" % (minutes, "" if minutes == 1 else "s")


# -- redaction ---------------------------------------------------------------------

REDACTED = "<redacted>"

# The patterns go through re's own cache, compiled by the first line that
# needs them: most lines need none (the checks in redact() tell), and compiling
# all three took 0.7 ms of every start before a serial box opened its port.
# scheme://user:password@host -> scheme://<redacted>@host
USERINFO_PATTERN = r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@"
# a query string with at least one key=value: ?token=abc&x=1 -> ?<redacted>
QUERY_PATTERN = r"\?[^\s\"'<>#]*=[^\s\"'<>#]*"
# form fields and settings named like secrets, anywhere: key=..., upload_key: ...
SECRET_FIELD_PATTERN = (
    r"(?i)\b([\w-]*(?:key|token|passw(?:or)?d|pwd|secret|auth(?:orization)?|credential)s?)"
    r"(\s*[=:]\s*|['\"]\s*:\s*['\"]?)(?!<redacted>)([^\s&\"',;)}]+)")
# Every match of SECRET_FIELD_PATTERN in an ASCII text holds one of these, in
# any case ("passw" covers passwd and password, "auth" authorization).
_SECRET_WORDS = ("key", "token", "passw", "pwd", "secret", "auth", "credential")


def redact(text: str) -> str:
    """``text`` without URL user info, URL query strings or secret-named values."""
    if not text:
        return text
    # Each pattern runs only where it can match: what it needs is in the text.
    if "@" in text and "://" in text:
        text = re.sub(USERINFO_PATTERN, lambda m: m.group(1) + REDACTED + "@", text)
    if "?" in text and "=" in text:
        text = re.sub(QUERY_PATTERN, "?" + REDACTED, text)
    # Beyond ASCII, case-insensitive matching has other letters ('\u017f' matches 's'): always run.
    if not text.isascii() or any(word in text.lower() for word in _SECRET_WORDS):
        text = re.sub(SECRET_FIELD_PATTERN, lambda m: m.group(1) + m.group(2) + REDACTED, text)
    return text


class RedactFilter(logging.Filter):
    """Rewrite each record so the formatted line holds no secret (module doc).

    Installed on a *handler*, it sees the records of every logger (a filter on
    a logger does not see its children's records).  Never drops a record.
    """

    def __init__(self) -> None:
        super().__init__()
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: let the handler report it
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(handler: Optional[logging.Handler]) -> None:
    """Add one RedactFilter to ``handler`` (idempotent)."""
    if handler is not None and not any(isinstance(f, RedactFilter) for f in handler.filters):
        handler.addFilter(RedactFilter())


# -- the log file ------------------------------------------------------------------


def next_midnight(when: float) -> float:
    """The first local midnight after ``when`` (a time.time() value)."""
    day = time.localtime(when)
    # mktime normalises the 32nd of a month; -1: let it decide about DST
    return time.mktime((day.tm_year, day.tm_mon, day.tm_mday + 1, 0, 0, 0, 0, 0, -1))


class DailyLogFile(logging.FileHandler):
    """``kei.log``, renamed ``kei.log.YYYY-MM-DD`` at local midnight; the newest
    ``keep`` of those stay.

    These are the files and names of the standard library's
    ``TimedRotatingFileHandler(when="midnight")``, so a box that ran keilog or
    an earlier kei goes on rotating the same files.  It is written here because
    ``logging.handlers`` imports socket and pickle for its network handlers:
    0.7 MB for as long as the daemon runs and 6 ms of every start on this
    machine, more than kei's whole difference to keilog (issue 18).

    A record's own time decides: the first record at or after midnight
    rotates the file.  A file left by the previous run is rotated at the first
    midnight after its last line, and named by that day.
    """

    DATED = r"\d{4}-\d\d-\d\d\Z"       # after "kei.log."

    def __init__(self, path: str, keep: int = 3) -> None:
        super().__init__(path, encoding="utf-8")
        self.keep = keep
        self.rollover_at = next_midnight(os.stat(self.baseFilename).st_mtime)

    def emit(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock, as the standard handlers rotate.
        if record.created >= self.rollover_at:
            self.rotate(record)
        super().emit(record)     # reopens the file if rotate closed it

    def rotate(self, record: logging.LogRecord) -> None:
        day = time.strftime("%Y-%m-%d", time.localtime(self.rollover_at - 1))
        # Next midnight first: a rename that fails is tried again tomorrow, not at every line.
        self.rollover_at = next_midnight(record.created)
        if self.stream is not None:
            self.stream.close()
            self.stream = None   # type: ignore[assignment]
        try:
            os.replace(self.baseFilename, self.baseFilename + "." + day)
            self.remove_old()
        except OSError:
            self.handleError(record)     # a traceback on stderr; the line still goes to kei.log

    def remove_old(self) -> None:
        folder, name = os.path.split(self.baseFilename)
        prefix = name + "."
        dated = sorted(entry for entry in os.listdir(folder)
                       if entry.startswith(prefix) and re.match(self.DATED, entry[len(prefix):]))
        for entry in dated[:max(0, len(dated) - self.keep)]:
            os.remove(os.path.join(folder, entry))
