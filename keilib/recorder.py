"""Storage: FileRecorder writes raw daily files and 10-minute averages.

Files, in the work directory (or ``directory=``)::

    YYYYMMDD-<fname_base>.txt       one line per reading (the record's own date)
        YYYY/MM/DD hh:mm:ss,<unit>,<sensor>,<value>,<data_id>
    sumYYYYMMDD-<fname_base>.txt    one line per (unit, sensor) per 10-minute window
        YYYY/MM/DD hh:m0,<unit>,<sensor>,<average>

Values are rounded to 4 decimal places.  A window (hh:m0:00 .. hh:m9:59) is keyed
by the records' own timestamps; it is written once the clock has passed its end
plus ``grace`` seconds (so a reading that arrives a little late still counts),
and at shutdown.  A window with no data writes nothing.  A reading for a window
already written is still in the raw file but not averaged (one INFO line per
window).  If the wall clock steps back by more than 20 minutes (NTP after a
boot without a real-time clock), the repeated time is averaged again.

Each summary block is also put on ``upload_que`` as ``[filename, text]`` when
one is given.  A full upload queue never blocks the recorder: the block is held
and offered again later, so nothing is lost.

Every line is flushed to the OS as it is written (no fsync: the SD card wears,
and a power cut then loses at most the line in flight).  A write error (disk
full, permission) is logged once per episode; the lines are kept in memory and
retried every ``retry_seconds``; the worker does not die.  While lines are held
the recorder stops taking new records once ``max_pending`` lines are waiting,
so the readers feel the back-pressure instead of memory growing without bound.

``worker_def`` entry::

    {'class': FileRecorder,
     'args': {'record_que': record_que,      # readings come from here
              'fname_base': 'mylogfile',     # file names: YYYYMMDD-mylogfile.txt
              'upload_que': upload_que}}     # optional: 10-minute blocks to upload
"""

from __future__ import annotations

import datetime
import logging
import os
import queue
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

from keilib.clock import Clock
from keilib.record import Record, format_value
from keilib.worker import POLL_SECONDS, Worker

logger = logging.getLogger(__name__)

WINDOW = datetime.timedelta(minutes=10)
MAX_PENDING_UPLOADS = 1008      # a week of 10-minute blocks


def window_start(stamp: datetime.datetime) -> datetime.datetime:
    """Start of the 10-minute window that holds ``stamp``."""
    return stamp.replace(minute=stamp.minute - stamp.minute % 10, second=0, microsecond=0)


class TenMinuteAverager:
    """Sums per (unit, sensor) for each open 10-minute window."""

    def __init__(self) -> None:
        # window start -> {(unit, sensor): [sum, count]}, insertion-ordered
        self.windows: Dict[datetime.datetime, Dict[Tuple[str, str], List[float]]] = {}
        self.closed_until: Optional[datetime.datetime] = None

    def add(self, record: Record) -> bool:
        """Count ``record``; False if its window was already written."""
        start = window_start(record.timestamp)
        if self.closed_until is not None and start < self.closed_until:
            return False
        sums = self.windows.setdefault(start, {})
        entry = sums.setdefault((record.unit, record.sensor), [0.0, 0])
        entry[0] += record.value
        entry[1] += 1
        return True

    def pop_closed(self, before: Optional[datetime.datetime]) -> List[Tuple[datetime.datetime, str]]:
        """Remove and format windows that end at or before ``before`` (None: all)."""
        done = sorted(start for start in self.windows
                      if before is None or start + WINDOW <= before)
        blocks = []
        for start in done:
            lines = []
            for (unit, sensor), (total, count) in self.windows.pop(start).items():
                lines.append("%s,%s,%s,%s\n" % (start.strftime("%Y/%m/%d %H:%M"), unit, sensor,
                                                format_value(total / count)))
            blocks.append((start, "".join(lines)))
            if self.closed_until is None or start + WINDOW > self.closed_until:
                self.closed_until = start + WINDOW
        return blocks


class AppendFiles:
    """Append-only text files kept open, flushed line by line."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.handles: Dict[str, Any] = {}

    def append(self, name: str, text: str) -> None:
        handle = self.handles.get(name)
        if handle is None:
            # Only today's and yesterday's files are written; keep few handles.
            if len(self.handles) >= 4:
                self.close()
            handle = open(os.path.join(self.directory, name), "a", encoding="utf-8")
            self.handles[name] = handle
        try:
            handle.write(text)
            handle.flush()
        except OSError:
            # Drop the handle: a failed buffered write must not be replayed
            # twice, and the file may be writable again after a reopen.
            self.handles.pop(name, None)
            try:
                handle.close()
            except OSError:
                pass
            raise

    def close(self) -> None:
        for handle in self.handles.values():
            try:
                handle.close()
            except OSError as exc:
                logger.error("closing %s failed: %s", handle.name, exc)
        self.handles.clear()


class FileRecorder(Worker):
    """Take readings from ``record_que`` and write raw and 10-minute files.

    See the module docstring for the formats and the ``worker_def`` entry.
    """

    CONSUMES = ("record_que",)
    PRODUCES = ("upload_que",)

    def __init__(self, record_que: "queue.Queue[Any]", fname_base: str = "data",
                 upload_que: "Optional[queue.Queue[Any]]" = None, disp_def: Any = None,
                 disp_que: Any = None, directory: Optional[str] = None, grace: float = 30.0,
                 retry_seconds: float = 10.0, max_pending: int = 10000,
                 clock: Optional[Clock] = None) -> None:
        super().__init__(clock=clock)
        if disp_def or disp_que is not None:
            # keilog's FileRecorder took these for a display feature it never built.
            logger.warning("FileRecorder: 'disp_def'/'disp_que' (keilog's unimplemented display) are ignored")
        if not isinstance(fname_base, str) or not fname_base or os.sep in fname_base:
            raise ValueError("fname_base must be a plain file name part, got %r" % (fname_base,))
        self.record_que = record_que
        self.upload_que = upload_que
        self.fname_base = fname_base
        self.directory = os.path.abspath(directory or os.getcwd())
        self.grace = grace
        self.retry_seconds = retry_seconds
        self.max_pending = max_pending
        self.averager = TenMinuteAverager()
        self.files = AppendFiles(self.directory)
        # Lines accepted but not yet written: (file name, text), in order.
        self.pending: Deque[Tuple[str, str]] = deque()
        # Summary blocks not yet accepted by upload_que (bounded: about a week).
        self.pending_uploads: Deque[List[str]] = deque()
        self.late_window: Optional[datetime.datetime] = None
        self.write_failing = False
        self.next_retry = 0.0

    # -- file names -------------------------------------------------------
    def raw_name(self, day: datetime.datetime) -> str:
        return "%s-%s.txt" % (day.strftime("%Y%m%d"), self.fname_base)

    def sum_name(self, day: datetime.datetime) -> str:
        return "sum%s-%s.txt" % (day.strftime("%Y%m%d"), self.fname_base)

    # -- the loop ---------------------------------------------------------
    def step(self) -> None:
        if len(self.pending) < self.max_pending:
            item = self.get(self.record_que, timeout=self._idle_timeout())
            if item is not None:
                self.accept(item)
        else:
            self.wait(POLL_SECONDS)
        now = self.clock.now()
        self.notice_clock_step(now)
        self.close_windows(now - datetime.timedelta(seconds=self.grace))
        self.flush_pending()
        self.offer_uploads()

    def _idle_timeout(self) -> float:
        # Real seconds until the oldest open window is due, capped by POLL_SECONDS.
        if not self.averager.windows:
            return POLL_SECONDS
        due = min(self.averager.windows) + WINDOW + datetime.timedelta(seconds=self.grace)
        left = (due - self.clock.now()).total_seconds()
        return min(POLL_SECONDS, max(0.0, self.clock.to_real(left)))

    def accept(self, item: Any) -> None:
        """Queue one reading (a Record or a legacy list) for writing."""
        if isinstance(item, Record):
            record = item
        else:
            try:
                record = Record.from_legacy(item, self.clock.now())
            except (TypeError, ValueError) as exc:
                logger.warning("%s: skipped an unusable item %r: %s", self.name, item, exc)
                return
        self.pending.append((self.raw_name(record.timestamp), record.to_raw_line() + "\n"))
        if not self.averager.add(record):
            start = window_start(record.timestamp)
            if start != self.late_window:       # one line per window, not per reading
                self.late_window = start
                logger.info("%s: late reading %s not averaged (its 10-minute window was written)",
                            self.name, record.to_raw_line())

    def notice_clock_step(self, now: datetime.datetime) -> None:
        """After the wall clock stepped back (NTP, an RTC-less boot), average again."""
        closed = self.averager.closed_until
        if closed is not None and now < closed - 2 * WINDOW:
            logger.warning("%s: the clock went back from about %s to %s; averaging the repeated "
                           "time again", self.name, closed.strftime("%Y/%m/%d %H:%M"),
                           now.strftime("%Y/%m/%d %H:%M:%S"))
            self.averager.closed_until = window_start(now)

    def close_windows(self, before: Optional[datetime.datetime]) -> None:
        for start, text in self.averager.pop_closed(before):
            name = self.sum_name(start)
            self.pending.append((name, text))
            if self.upload_que is not None:
                if len(self.pending_uploads) >= MAX_PENDING_UPLOADS:
                    dropped = self.pending_uploads.popleft()
                    logger.error("%s: the upload queue has taken nothing for a long time; oldest "
                                 "block for %s not uploaded (it is in the file)", self.name, dropped[0])
                self.pending_uploads.append([name, text])

    def flush_pending(self) -> None:
        """Write held lines in order; on failure keep them for a later retry."""
        if self.write_failing and self.clock.monotonic() < self.next_retry:
            return
        while self.pending:
            name, text = self.pending[0]
            try:
                self.files.append(name, text)
            except OSError as exc:
                if not self.write_failing:
                    logger.error("%s: cannot write %s: %s; %d line(s) held, retrying every %g s",
                                 self.name, os.path.join(self.directory, name), exc,
                                 len(self.pending), self.retry_seconds)
                self.write_failing = True
                self.next_retry = self.clock.monotonic() + self.retry_seconds
                return
            self.pending.popleft()
        if self.write_failing:
            logger.warning("%s: writing works again; held lines written", self.name)
            self.write_failing = False

    def offer_uploads(self) -> None:
        while self.pending_uploads:
            try:
                self.upload_que.put_nowait(self.pending_uploads[0])  # type: ignore[union-attr]
            except queue.Full:
                return
            self.pending_uploads.popleft()

    def cleanup(self) -> None:
        """At stop: drain the queue, write the open windows, hand over uploads."""
        drained = 0
        while True:
            try:
                item = self.record_que.get_nowait()
            except queue.Empty:
                break
            self.accept(item)
            drained += 1
        if drained:
            logger.info("%s: %d queued reading(s) taken at stop", self.name, drained)
        self.close_windows(None)
        self.write_failing = False
        self.flush_pending()
        if self.pending:
            logger.error("%s: %d line(s) could not be written at shutdown and are lost: %s",
                         self.name, len(self.pending), "".join(text for _, text in self.pending)[:2000])
        while self.pending_uploads:
            try:
                # The uploader is still running at this point (stop order), so
                # a short blocking put normally succeeds.
                self.upload_que.put(self.pending_uploads[0], timeout=2)  # type: ignore[union-attr]
            except queue.Full:
                logger.error("%s: upload queue full at shutdown; %d block(s) not handed over",
                             self.name, len(self.pending_uploads))
                break
            self.pending_uploads.popleft()
        self.files.close()
