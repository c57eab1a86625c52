"""Storage: FileRecorder writes raw daily files and 10-minute averages.

Files, in the work directory (or ``directory=``)::

    YYYYMMDD-<fname_base>.txt       one line per reading (the record's own date)
        YYYY/MM/DD hh:mm:ss,<unit>,<sensor>,<value>,<data_id>
    sumYYYYMMDD-<fname_base>.txt    one line per (unit, sensor) per 10-minute window
        YYYY/MM/DD hh:m0,<unit>,<sensor>,<average>

Values are rounded to 4 decimal places.  The averages come from the
averaging stage (``keilib.average.WindowAverager``): a window (hh:m0:00 ..
hh:m9:59) is keyed by the records' own timestamps; it is written once the
clock has passed its end plus ``grace`` seconds (so a reading that arrives a
little late still counts), and at shutdown.  A window with no data writes
nothing.  A reading for a window already written is still in the raw file
but not averaged (one INFO line per window).  If the wall clock steps back
behind a window already written (NTP after a boot without a real-time
clock), the repeated time is averaged again: the summary file then has
those windows twice, each line the average of its own readings.

Each summary block is also put on ``upload_que`` as ``[filename, text]`` when
one is given, *before* it is written to the summary file: behind the
launcher's durable hand-off (``keilib.spool.SpoolQueue``) the block is then
in the uploader's spool before it is in the file, so a kill -9 at any
instant loses no block from the server.  A full upload queue never blocks
the recorder: the block is held and offered again later, so nothing is lost.

Lines are written with one ``write`` system call per batch of readings taken
off the queue together, and reach the storage within ``sync_seconds`` (0.5 s
by default) of their write: a written file is fdatasync'ed at once when the
last sync is older than that, else when it falls due, so a steady stream costs
at most two syncs a second and a reading every 10 s one sync each (the SD card
is spared the rest).  With the reader's hold (at most 0.2 s), a power cut
costs at most the last 0.7 s of readings.  ``sync_seconds=None`` leaves it to
the kernel's write-back (about 30 s), as keilog did.  A write error
(disk full, permission) is logged once per episode; the lines are kept in
memory and retried every ``retry_seconds``; the worker does not die.  A
write the kernel completed only in part (a disk that filled up in the middle
of a line) is resumed where it stopped, never repeated, so every line in
the files stays whole; a file that ends in an incomplete line left by a
crash is cut back to its last whole line when it is opened.  While lines are
held the recorder stops taking new records once ``max_pending`` lines are
waiting, so the readers feel the back-pressure instead of memory growing
without bound.

``worker_def`` entry::

    {'class': FileRecorder,
     'args': {'record_que': record_que,      # readings come from here
              'fname_base': 'mylogfile',     # file names: YYYYMMDD-mylogfile.txt
              'upload_que': upload_que,      # optional: 10-minute blocks to upload
              'sync_seconds': 0.5}}          # optional: written lines on storage within this
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import queue
from collections import deque

from keilib.average import Aggregate, WindowAverager
from keilib.clock import Clock
from keilib import validate
from keilib.logutil import LogLimiter
from keilib.record import Record, format_value
from keilib.worker import Worker

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Deque, Dict, List, Optional

logger = logging.getLogger(__name__)

MAX_PENDING_UPLOADS = 1008      # a week of 10-minute blocks
TAKE_AT_ONCE = 256              # readings taken off the queue per write


def summary_text(block: List[Aggregate]) -> str:
    """A window's aggregates as summary lines (keilog's format)."""
    return "".join("%s,%s,%s,%s\n" % (aggregate.timestamp.strftime("%Y/%m/%d %H:%M"), aggregate.unit,
                                      aggregate.sensor, format_value(aggregate.value))
                   for aggregate in block)


class AppendFiles:
    """Append-only files kept open (a few), written with ``os.write``.

    ``write`` returns how many bytes the kernel took, which may be fewer than
    given (a disk filling up); the caller keeps the rest and resumes there.
    """

    KEEP_OPEN = 4        # only today's and yesterday's files are written

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.fds: Dict[str, int] = {}
        self.dirty: Dict[str, int] = {}     # written since their last sync: name -> fd
        self.sync_failing = False

    def write(self, name: str, data: bytes, resuming: bool = False) -> int:
        fd = self.fds.get(name)
        if fd is None:
            if len(self.fds) >= self.KEEP_OPEN:
                self.close()
            fd = self._open(name, resuming)
            self.fds[name] = fd
        try:
            written = os.write(fd, data)
        except OSError:
            # Reopen next time: the file may be writable again after a reopen.
            self.fds.pop(name, None)
            self._sync_one(name)       # what was written before the error
            os.close(fd)
            raise
        if written == 0:
            raise OSError(errno.ENOSPC, "the kernel took no bytes", name)
        self.dirty[name] = fd
        return written

    def sync(self) -> None:
        """Put what was written since the last sync on the storage."""
        for name in list(self.dirty):
            self._sync_one(name)

    def _sync_one(self, name: str) -> None:
        fd = self.dirty.pop(name, None)
        if fd is None:
            return
        try:
            os.fdatasync(fd)
            self.sync_failing = False
        except OSError as exc:
            if not self.sync_failing:       # once per episode (a full disk fails every retry)
                logger.warning("cannot sync %s to storage: %s", os.path.join(self.directory, name), exc)
            self.sync_failing = True

    def _open(self, name: str, resuming: bool) -> int:
        path = os.path.join(self.directory, name)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)   # read: to check its end
        if not resuming:
            try:
                self._cut_incomplete_tail(fd, path)
            except OSError as exc:
                logger.warning("cannot check the end of %s: %s", path, exc)
        return fd

    @staticmethod
    def _cut_incomplete_tail(fd: int, path: str) -> None:
        """A file not ending in a newline holds half a line from a crash
        during a write: cut it, so the next line starts on its own."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        tail = os.pread(fd, min(size, 4096), max(0, size - 4096))
        cut = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else max(0, size - len(tail))
        os.ftruncate(fd, cut)
        logger.warning("%s ended in an incomplete line (%d bytes, from a crash or a full disk); "
                       "cut back to its last whole line", path, size - cut)

    def close(self) -> None:
        self.sync()
        for name, fd in self.fds.items():
            try:
                os.close(fd)
            except OSError as exc:
                logger.error("closing %s failed: %s", name, exc)
        self.fds.clear()


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
                 sync_seconds: Optional[float] = 0.5, clock: Optional[Clock] = None) -> None:
        super().__init__(clock=clock)
        if disp_def or disp_que is not None:
            # keilog's FileRecorder took these for a display feature it never built.
            logger.warning("FileRecorder: 'disp_def'/'disp_que' (keilog's unimplemented display) are ignored")
        # What the upload endpoint and the graph page accept in a file name.
        validate.file_name_part("fname_base", fname_base)
        if directory is not None:
            validate.text("directory", directory, r"[^\0]+", "a directory path")
        validate.number("grace", grace, 0, 3600)
        validate.number("retry_seconds", retry_seconds, 0.01, 86400)
        validate.number("max_pending", max_pending, 1, 10 ** 7, integer=True)
        if sync_seconds is not None:
            validate.number("sync_seconds", sync_seconds, 0, 60)
        validate.a_queue("record_que", record_que)
        validate.a_queue("upload_que", upload_que, required=False)
        self.record_que = record_que
        self.upload_que = upload_que
        self.fname_base = fname_base
        self.directory = os.path.abspath(directory or os.getcwd())
        self.grace = datetime.timedelta(seconds=grace)
        self.retry_seconds = retry_seconds
        self.max_pending = max_pending
        self.averager = WindowAverager(600)
        self.files = AppendFiles(self.directory)
        self.sync_seconds = sync_seconds
        # Real monotonic time of the last sync: durability is about real
        # seconds, also under the demo's faster clock.
        self.synced_at = float("-inf")
        # Bytes accepted but not yet written, in order: [file name, bytearray].
        # Consecutive lines for one file share an entry (one write call).
        self.pending: Deque[List[Any]] = deque()
        self.pending_lines = 0
        # Summary blocks not yet accepted by upload_que (bounded: about a week).
        self.pending_uploads: Deque[List[str]] = deque()
        self.late_window: Optional[datetime.datetime] = None
        self.write_failing = False
        self.next_retry = 0.0
        self.log_limit = LogLimiter(logger, self.clock.monotonic)

    @classmethod
    def claims(cls, args: dict) -> List[str]:
        """Two recorders must not write the same files (the launcher checks)."""
        directory = os.path.abspath(args.get("directory") or os.getcwd())
        return ["files %s" % os.path.join(directory, "*-%s.txt" % args.get("fname_base", "data"))]

    # -- file names -------------------------------------------------------
    def raw_name(self, day: datetime.datetime) -> str:
        return "%s-%s.txt" % (day.strftime("%Y%m%d"), self.fname_base)

    def sum_name(self, day: datetime.datetime) -> str:
        return "sum%s-%s.txt" % (day.strftime("%Y%m%d"), self.fname_base)

    # -- the loop ---------------------------------------------------------
    def step(self) -> None:
        if self.pending_lines < self.max_pending:
            item = self.get(self.record_que, timeout=self._idle_timeout())
            if item is not None:
                self.accept(item)
                # Whatever else is waiting goes out in the same write.
                for _ in range(TAKE_AT_ONCE):
                    if self.pending_lines >= self.max_pending or self.stopping:
                        break
                    item = self.get(self.record_que, timeout=0)
                    if item is None:
                        break
                    self.accept(item)
        else:
            self.wait(self.retry_seconds)
        self.close_windows(self.clock.now() - self.grace)
        self.flush_pending()
        self.sync_if_due()
        self.offer_uploads()
        self.log_limit.flush()

    def sync_if_due(self) -> None:
        """Sync written files if the last sync is ``sync_seconds`` old (see the module doc)."""
        if self.sync_seconds is None or not self.files.dirty:
            return
        now = self.clock.real_monotonic()
        if now - self.synced_at >= self.sync_seconds:
            self.files.sync()
            self.synced_at = now

    def _idle_timeout(self) -> Optional[float]:
        """Real seconds to sleep on an empty queue: until the oldest open
        window is due, a held write or upload is retried, a sync is due, or a
        record comes."""
        waits = []
        due = self.averager.next_due()
        if due is not None:
            waits.append((due + self.grace - self.clock.now()).total_seconds())
        if self.pending:
            waits.append(self.next_retry - self.clock.monotonic())
        if self.pending_uploads:
            waits.append(self.retry_seconds)
        timeout = self.clock.to_real(max(0.0, min(waits))) if waits else None
        if self.sync_seconds is not None and self.files.dirty:       # real seconds already
            sync_wait = max(0.0, self.synced_at + self.sync_seconds - self.clock.real_monotonic())
            timeout = sync_wait if timeout is None else min(timeout, sync_wait)
        return timeout                # None: nothing to do until a record (or a stop) comes

    def accept(self, item: Any) -> None:
        """Queue one reading (a Record or a legacy list) for writing."""
        now = self.clock.now()
        if isinstance(item, Record):
            record = item
        else:
            try:
                record = Record.from_legacy(item, now)
            except (TypeError, ValueError) as exc:
                self.log_limit.warning(self.name, "unusable items", "%s: skipped an unusable item %.80r: %s",
                                       self.name, item, exc)
                return
        self.health.count("in")
        self._queue_text(self.raw_name(record.timestamp), record.to_raw_line() + "\n")
        stepped = self.averager.notice_clock(now)
        if stepped is not None:
            logger.warning("%s: the clock went back from about %s to %s; averaging the repeated "
                           "time again", self.name, stepped.strftime("%Y/%m/%d %H:%M"),
                           now.strftime("%Y/%m/%d %H:%M:%S"))
        if not self.averager.add(record):
            start = self.averager.window_start(record.timestamp)
            if start != self.late_window:       # one line per window, not per reading
                self.late_window = start
                logger.info("%s: late reading %s not averaged (its 10-minute window was written)",
                            self.name, record.to_raw_line())

    def _queue_text(self, name: str, text: str) -> None:
        data = text.encode("utf-8")
        if self.pending and self.pending[-1][0] == name:
            self.pending[-1][1] += data
        else:
            self.pending.append([name, bytearray(data)])
        self.pending_lines += text.count("\n")

    def close_windows(self, before: Optional[datetime.datetime]) -> None:
        for block in self.averager.pop_closed(before):
            name = self.sum_name(block[0].timestamp)
            text = summary_text(block)
            # The upload first: behind a durable hand-off the block is then
            # in the uploader's spool before it is in the summary file.
            if self.upload_que is not None:
                if self.pending_uploads or not self._offer([name, text]):
                    if len(self.pending_uploads) >= MAX_PENDING_UPLOADS:
                        dropped = self.pending_uploads.popleft()
                        logger.error("%s: the upload queue has taken nothing for a long time; oldest "
                                     "block for %s not uploaded (it is in the file)", self.name, dropped[0])
                    self.pending_uploads.append([name, text])
            self._queue_text(name, text)
            self.health.count("windows")

    def _offer(self, block: List[str]) -> bool:
        try:
            self.upload_que.put_nowait(block)  # type: ignore[union-attr]
        except queue.Full:
            return False
        except OSError as exc:                  # a spool that cannot be written
            logger.error("%s: cannot hand a block for %s to the uploader: %s; holding it",
                         self.name, block[0], exc)
            return False
        return True

    def flush_pending(self) -> None:
        """Write held bytes in order; on failure keep the rest for a later retry."""
        if self.write_failing and self.clock.monotonic() < self.next_retry:
            return
        while self.pending:
            entry = self.pending[0]
            name, data = entry[0], entry[1]
            try:
                while data:
                    written = self.files.write(name, bytes(data), resuming=bool(entry[2:]))
                    self.pending_lines -= data[:written].count(b"\n")
                    del data[:written]
                    if data:
                        entry[2:] = [True]     # a line was cut: finish it, never restart it
            except OSError as exc:
                if not self.write_failing:
                    logger.error("%s: cannot write %s: %s; %d line(s) held, retrying every %g s",
                                 self.name, os.path.join(self.directory, name), exc,
                                 self.pending_lines, self.retry_seconds)
                self.write_failing = True
                self.next_retry = self.clock.monotonic() + self.retry_seconds
                return
            self.pending.popleft()
        if self.write_failing:
            logger.warning("%s: writing works again; held lines written", self.name)
            self.write_failing = False

    def offer_uploads(self) -> None:
        while self.pending_uploads and self._offer(self.pending_uploads[0]):
            self.pending_uploads.popleft()

    def cleanup(self) -> None:
        """At stop: drain the queue, write the open windows, hand over uploads."""
        drained = 0
        while True:
            item = self.get(self.record_que, timeout=0)
            if item is None:
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
                         self.name, self.pending_lines,
                         b"".join(bytes(data) for _, data, *_ in self.pending)[:2000].decode("utf-8", "replace"))
        while self.pending_uploads:
            try:
                # The uploader is still running at this point (stop order), so
                # a short blocking put normally succeeds.
                self.upload_que.put(self.pending_uploads[0], timeout=2)  # type: ignore[union-attr]
            except (queue.Full, OSError):
                logger.error("%s: upload queue full at shutdown; %d block(s) not handed over",
                             self.name, len(self.pending_uploads))
                break
            self.pending_uploads.popleft()
        self.files.close()
        self.log_limit.flush(final=True)
