"""HttpPostUploader: POST text blocks to a web endpoint, through a durable spool.

Queue items are ``[filename, text]`` (the FileRecorder puts each block of
10-minute summary lines, for a file such as ``sum20261123-mylogfile.txt``).

Wire format (compatible with keilog's endpoint; php/upload.php is ours)::

    POST <target_url>   application/x-www-form-urlencoded
    type=text  key=<upload key>  fname=<filename>  data=<text>  id=<batch id>

Success is a 2xx answer whose body starts with ``OK``.  ``id`` is unique per
batch and stable across retries; our endpoint answers OK without appending
again for an id it already stored, so a re-sent batch is never duplicated.
Old endpoints ignore it.

Delivery is a transaction (spool first, delete only on confirmation):

* Every item taken off the queue is written to ``<spool>/<seq>.item``
  (temp file, fsync, ``os.replace``, fsync of the directory) before any send.
* Before its first send, the oldest unit is *sealed* into ``<seq>.batch``:
  it may absorb later items of the same file (in order, up to
  ``max_batch_bytes`` of data), and an item larger than that is split at line
  ends into several parts.  The batch file lists its parts with their ids and
  is never regrouped, so every retry sends the same bytes with the same id.
  A crash after the batch file was written but before its member items were
  deleted is repaired at start (members listed in a batch are removed).
* A part is removed from the batch file only after the server confirmed it.
  (The deletion of a finished batch is not fsync'd: should it come back
  after a power cut, its re-send carries the same id and is a no-op.)
  With an old endpoint that ignores ``id``, a crash between the server's
  append and that deletion can duplicate one batch: at-least-once there.
* Connection errors, timeouts, 3xx, 5xx, 408, 429 and 2xx bodies that are not
  ``OK`` (keilog's endpoint answers ``Error: ...`` with 200) keep the batch; it
  is retried with capped exponential backoff and jitter (429: Retry-After).
  Units go out oldest first, so the order per file is kept.
* HTTP 413 (too large) for a part of several lines means the endpoint's limit
  is below ours (the endpoint stored nothing): the uploader lowers its merge
  limit for the rest of the run (to the limit the answer states, as
  php/upload.php's ``data larger than N bytes`` does, else half the part;
  one WARNING per lowering) and cuts the part at line ends into pieces within
  it, and every later part of the batch that is larger too.  The pieces get
  ids derived from the part's id, and the batch file is rewritten atomically
  (the same single ``os.replace`` as a confirmation), so a crash leaves either
  the old part, which nobody stored and which is cut the same way again, or
  the pieces.  A part of a single line that is refused with 413 is set aside
  alone in ``<spool>/rejected/`` (the rest of the batch goes on).
* Any other 4xx (bad key, bad name, wrong method) is permanent: the
  batch moves to ``<spool>/rejected/`` with one error line naming the cause.
* On stop, items still in the queue go to the spool; a request in flight is
  abandoned (its batch stays spooled), so stop returns within about a second
  even if the server hangs.  The next start sends the spool first.

The upload key never appears in logs; the URL is logged without credentials
or query.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import queue
import random
import re
import threading
import urllib.parse
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import requests

from keilib.errors import ConfigError
from keilib.worker import POLL_SECONDS, Worker

logger = logging.getLogger(__name__)

# php/upload.php's default max_bytes: a batch never needs splitting there.
DEFAULT_MAX_BATCH_BYTES = 65536

ITEM = ".item"      # one queue item, not yet sent
BATCH = ".batch"    # sealed: being sent, composition fixed
TEMP_PREFIX = ".tmp-"
INTAKE_DURING_POST = 0.1   # seconds between looks at the queue while a POST is in flight


def _fsync_directory(directory: Path) -> None:
    """Make renames and deletions in ``directory`` durable."""
    fd = os.open(str(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(directory: Path, name: str, payload: bytes, sync_dir: bool = True) -> None:
    """Create or replace ``directory/name`` so that it is complete or absent."""
    temp = directory / (TEMP_PREFIX + name)
    with open(temp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, directory / name)
    if sync_dir:
        _fsync_directory(directory)


def split_lines(text: str, limit: int) -> List[str]:
    """Cut ``text`` at line ends into pieces of at most ``limit`` UTF-8 bytes.

    A single line longer than ``limit`` stays whole (the server will refuse it).
    """
    pieces: List[str] = []
    current: List[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        length = len(line.encode("utf-8"))
        if current and size + length > limit:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        pieces.append("".join(current))
    return pieces


def batch_id(member_ids: List[str], part: int, parts: int) -> str:
    """The id of a batch, derived from the ids of the items it holds."""
    if len(member_ids) == 1 and parts == 1:
        return member_ids[0]
    digest = hashlib.sha256(("\n".join(member_ids) + "\n#%d/%d" % (part, parts)).encode())
    return digest.hexdigest()[:32]


def split_id(part_id: str, number: int, parts: int) -> str:
    """The id of piece ``number`` of ``parts`` of a part refused as too large.

    Derived from the part's id only, so cutting the same part again (after a
    crash) gives the same ids, and distinct from every id ``batch_id`` makes.
    """
    return hashlib.sha256(("%s\n/split %d/%d" % (part_id, number, parts)).encode()).hexdigest()[:32]


def stated_limit(body: str) -> Optional[int]:
    """The byte limit a 413 answer names (php/upload.php: ``data larger than N bytes``)."""
    match = re.search(r"larger than (\d+) bytes", body)
    return int(match.group(1)) if match else None


def backoff_delay(failures: int, retry_min: float, retry_max: float,
                  rng: random.Random) -> float:
    """Seconds to wait after ``failures`` (>= 1) failed attempts in a row.

    Doubles from ``retry_min`` up to ``retry_max``; the jitter (a random
    factor in [0.5, 1]) keeps many boxes from retrying in step after an outage.
    """
    exponent = min(failures - 1, 60)
    return min(retry_max, retry_min * (2 ** exponent)) * rng.uniform(0.5, 1.0)


class Batch:
    """A sealed spool unit: parts ``[(id, data), ...]`` for one file, sent in order."""

    def __init__(self, name: str, fname: str, parts: List[Tuple[str, str]], items: int):
        self.name = name
        self.fname = fname
        self.parts = parts
        self.items = items


class Spool:
    """Upload units on disk, in arrival order (see the module docstring).

    Not thread-safe: one uploader thread owns it.
    """

    def __init__(self, directory, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES):
        self.directory = Path(directory)
        self.rejected_directory = self.directory / "rejected"
        self.max_batch_bytes = max_batch_bytes
        # name -> (fname, data bytes) for every unit, in sequence order.
        self._units: "OrderedDict[str, Tuple[str, int]]" = OrderedDict()
        self._next_seq = 0

    # -- opening and recovery -------------------------------------------
    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rejected_directory.mkdir(exist_ok=True)
        names = []
        for path in self.directory.iterdir():
            if path.name.startswith(TEMP_PREFIX):
                path.unlink()               # an interrupted write: never confirmed
            elif path.suffix in (ITEM, BATCH) and path.stem.isdigit():
                names.append(path.name)
        names.sort(key=self._seq)
        # A batch whose members still exist: the crash came between writing
        # the batch and deleting them; the batch is the truth.
        for name in names:
            if name.endswith(BATCH):
                unit = self._load(name)
                for member in (unit or {}).get("members", []):
                    if member != name and (self.directory / member).exists():
                        (self.directory / member).unlink()
                        logger.info("spool: removed %s, already merged into %s", member, name)
        self._units.clear()
        for name in names:
            if not (self.directory / name).exists():
                continue
            unit = self._load(name)
            if unit is None:
                continue
            size = sum(len(data.encode("utf-8")) for _, data in unit["parts"])
            self._units[name] = (unit["fname"], size)
        self._next_seq = max([self._seq(name) for name in self._units] + [-1]) + 1
        _fsync_directory(self.directory)

    @staticmethod
    def _seq(name: str) -> int:
        return int(name.split(".", 1)[0])

    def _load(self, name: str) -> Optional[Dict[str, Any]]:
        """A unit's content, or None after moving an unreadable file aside."""
        path = self.directory / name
        try:
            unit = json.loads(path.read_text(encoding="utf-8"))
            unit["parts"] = [(str(part_id), str(data)) for part_id, data in unit["parts"]]
            unit["fname"] = str(unit["fname"])
            return unit
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("spool: unreadable unit %s (%s); moved to %s",
                         name, exc, self.rejected_directory)
            self._move_to_rejected(name)
            return None

    # -- the queue side -------------------------------------------------
    def __len__(self) -> int:
        return len(self._units)

    def add(self, fname: str, data: str) -> str:
        """Store one item durably; returns its unit name."""
        name = "%012d%s" % (self._next_seq, ITEM)
        unit = {"fname": fname, "parts": [[uuid.uuid4().hex, data]]}
        write_atomic(self.directory, name, json.dumps(unit, ensure_ascii=False).encode("utf-8"))
        self._next_seq += 1
        self._units[name] = (fname, len(data.encode("utf-8")))
        return name

    # -- the sending side -----------------------------------------------
    def next_batch(self) -> Optional[Batch]:
        """The oldest unit, sealed into a batch if it was not yet; None if empty."""
        while self._units:
            head = next(iter(self._units))
            if head.endswith(BATCH):
                unit = self._load(head)
                if unit is None:
                    del self._units[head]
                    continue
                return Batch(head, unit["fname"], unit["parts"], unit.get("items", 1))
            batch = self._seal(head)
            if batch is not None:
                return batch
        return None

    def _seal(self, head: str) -> Optional[Batch]:
        fname, size = self._units[head]
        members = [head]
        for name, (other_fname, other_size) in itertools.islice(self._units.items(), 1, None):
            if other_fname != fname:
                continue
            if name.endswith(BATCH) or size + other_size > self.max_batch_bytes:
                break                       # taking a later one would reorder
            members.append(name)
            size += other_size
        contents = []
        for name in members:
            unit = self._load(name)
            if unit is None:
                del self._units[name]
                return None                 # start over without it
            contents.append(unit)
        member_ids = [part_id for unit in contents for part_id, _ in unit["parts"]]
        text = "".join(data for unit in contents for _, data in unit["parts"])
        pieces = split_lines(text, self.max_batch_bytes) if size > self.max_batch_bytes else [text]
        parts = [(batch_id(member_ids, number, len(pieces)), piece)
                 for number, piece in enumerate(pieces)]
        name = "%012d%s" % (self._seq(head), BATCH)
        if len(members) == 1 and len(parts) == 1:
            # An item alone is already in batch form: sealing is a rename.
            os.replace(self.directory / head, self.directory / name)
            _fsync_directory(self.directory)
        else:
            sealed = {"fname": fname, "parts": [list(part) for part in parts],
                      "members": members, "items": len(members)}
            write_atomic(self.directory, name,
                         json.dumps(sealed, ensure_ascii=False).encode("utf-8"))
            for member in members:
                (self.directory / member).unlink()
            # Members back after a power cut would be removed by open() (the
            # batch lists them); the fsync keeps that from ever being needed
            # once the batch has been confirmed and deleted.
            _fsync_directory(self.directory)
        for member in members:
            del self._units[member]
        # Same sequence number as the head: still the oldest unit.
        self._units[name] = (fname, size)
        self._units.move_to_end(name, last=False)
        return Batch(name, fname, parts, len(members))

    def confirm_part(self, batch: Batch) -> None:
        """The server confirmed ``batch.parts[0]``: forget it durably."""
        if len(batch.parts) <= 1:
            batch.parts = []
            # No directory fsync: should the batch come back after a power
            # cut, its re-send carries the same id and the server skips it.
            (self.directory / batch.name).unlink()
            del self._units[batch.name]
            return
        self._rewrite(batch, batch.parts[1:])

    def _rewrite(self, batch: Batch, parts: List[Tuple[str, str]]) -> None:
        """Replace the batch's parts on disk (atomically), then in memory.

        Its members were deleted (and that fsync'd) when it was sealed, or
        removed by open(): the list is not needed any more.
        """
        remaining = {"fname": batch.fname, "parts": [list(part) for part in parts],
                     "members": [], "items": batch.items}
        write_atomic(self.directory, batch.name,
                     json.dumps(remaining, ensure_ascii=False).encode("utf-8"))
        batch.parts = parts
        self._units[batch.name] = (batch.fname,
                                   sum(len(data.encode("utf-8")) for _, data in parts))

    def split_head(self, batch: Batch, limit: int) -> int:
        """The server refused ``batch.parts[0]`` as too large, storing nothing.

        Cuts it at line ends into pieces of at most ``limit`` bytes, and every
        later part larger than ``limit`` too (none of them was ever sent: parts
        go out in order).  Each piece's id derives from its part's id
        (``split_id``).  One atomic rewrite of the batch file: after a crash
        either the old parts are still there (cut the same way on their 413)
        or the pieces.  Returns how many pieces the first part became.
        """
        parts: List[Tuple[str, str]] = []
        first = 0
        for number, (part_id, data) in enumerate(batch.parts):
            pieces = [data]
            if number == 0 or len(data.encode("utf-8")) > limit:
                pieces = split_lines(data, limit)
            if len(pieces) == 1:
                parts.append((part_id, data))
            else:
                parts.extend((split_id(part_id, index, len(pieces)), piece)
                             for index, piece in enumerate(pieces))
            if number == 0:
                first = len(pieces)
        if len(parts) != len(batch.parts):
            self._rewrite(batch, parts)
        return first

    def reject_part(self, batch: Batch) -> Path:
        """Set ``batch.parts[0]`` aside in rejected/ and keep the rest of the batch.

        The copy in rejected/ is named after the batch and the part's id and
        written before the part leaves the batch: a crash in between writes
        the same file again, it does not add another.
        """
        if len(batch.parts) <= 1:
            return self.reject(batch)
        part_id, data = batch.parts[0]
        name = "%s.%s%s" % (batch.name[:-len(BATCH)], part_id, BATCH)
        unit = {"fname": batch.fname, "parts": [[part_id, data]], "items": 1}
        write_atomic(self.rejected_directory, name,
                     json.dumps(unit, ensure_ascii=False).encode("utf-8"))
        self._rewrite(batch, batch.parts[1:])
        return self.rejected_directory / name

    def reject(self, batch: Batch) -> Path:
        """Set a batch aside in rejected/ (kept for a human, never retried)."""
        del self._units[batch.name]
        return self._move_to_rejected(batch.name)

    def _move_to_rejected(self, name: str) -> Path:
        target = self.rejected_directory / name
        number = 1
        while target.exists():
            target = self.rejected_directory / ("%s.%d" % (name, number))
            number += 1
        os.replace(self.directory / name, target)
        _fsync_directory(self.directory)
        _fsync_directory(self.rejected_directory)
        return target


def safe_url(url: str) -> str:
    """``url`` without user, password, query and fragment, for logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    if parts.port:
        host += ":%d" % parts.port
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def describe(exc: Exception) -> str:
    """The useful part of a requests exception (urllib3 wraps the cause)."""
    wrapped = exc.args[0] if exc.args else None
    return str(getattr(wrapped, "reason", None) or exc)


def classify(status: int, body: str) -> str:
    """'ok', 'retry' or 'reject' for an HTTP answer."""
    if 200 <= status < 300:
        return "ok" if body.lstrip().startswith("OK") else "retry"
    if 400 <= status < 500 and status not in (408, 429):
        return "reject"
    return "retry"


class HttpPostUploader(Worker):
    """Takes ``[filename, text]`` items from ``upload_que`` and POSTs them (see module doc)."""

    CONSUMES = ("upload_que",)

    def __init__(self, upload_que, target_url, upload_key, spool_dir=None, timeout=30,
                 retry_min=5, retry_max=600, max_batch_bytes=DEFAULT_MAX_BATCH_BYTES,
                 clock=None):
        super().__init__(clock=clock)
        if not isinstance(target_url, str) or \
                urllib.parse.urlsplit(target_url).scheme not in ("http", "https"):
            raise ConfigError("HttpPostUploader: target_url must be an http:// or https:// URL")
        if not isinstance(upload_key, str):
            raise ConfigError("HttpPostUploader: upload_key must be a string")
        for label, value in (("timeout", timeout), ("retry_min", retry_min),
                             ("retry_max", retry_max), ("max_batch_bytes", max_batch_bytes)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError("HttpPostUploader: %s must be a positive number" % label)
        if retry_max < retry_min:
            raise ConfigError("HttpPostUploader: retry_max must be >= retry_min")
        self.upload_que = upload_que
        self.target_url = target_url
        self._key = upload_key
        self.url_for_logs = safe_url(target_url)
        self.spool = Spool(spool_dir if spool_dir is not None else Path.cwd() / "spool",
                           int(max_batch_bytes))
        self.timeout = timeout
        self.retry_min = retry_min
        self.retry_max = retry_max
        self._rng = random.Random()
        self._session: Optional[requests.Session] = None
        self._inbox: List[Tuple[str, str]] = []   # taken off the queue, not yet spooled
        self._spool_open = False
        self._spool_failing = False
        self._failures = 0                        # failed attempts in a row
        self._next_attempt = 0.0                  # clock.monotonic() of the next send
        # Counters for tests and status displays.
        self.sent_batches = 0
        self.failed_attempts = 0
        self.rate_limited = 0
        self.rejected_batches = 0

    # -- worker hooks -----------------------------------------------------
    def setup(self) -> None:
        self.spool.open()
        self._spool_open = True
        self._session = requests.Session()
        logger.info("%s: uploading to %s; spool %s holds %d unit(s)",
                    self.name, self.url_for_logs, self.spool.directory, len(self.spool))

    def step(self) -> None:
        self._take_in()
        if len(self.spool):
            delay = self._next_attempt - self.clock.monotonic()
            if delay <= 0:
                self._send_oldest()
                return
        elif not self._inbox:
            try:                                 # idle: block on the queue
                item = self.upload_que.get(timeout=POLL_SECONDS)
            except queue.Empty:
                return
            self._accept(item)                   # (even None: it gets its log line)
            return
        if self._inbox:                          # the spool could not be written
            delay = min(delay, self.retry_min) if len(self.spool) else self.retry_min
        self.wait(self._slice(delay))

    def cleanup(self) -> None:
        # Nothing accepted is lost: what is still queued goes to the spool.
        # Without a usable spool it stays in the queue, for the instance the
        # launcher starts next.
        try:
            if self._spool_open and not self._spool_failing:
                self._take_in()
        finally:
            if self._inbox:
                logger.error("%s: %d item(s) could not be spooled at stop and are lost",
                             self.name, len(self._inbox))
            if self._session is not None:
                self._session.close()
            logger.info("%s: %d unit(s) left in the spool", self.name, len(self.spool))

    # -- intake -------------------------------------------------------------
    def _take_in(self) -> None:
        """Spool everything that is waiting in the queue, without blocking."""
        while True:
            try:
                item = self.upload_que.get_nowait()
            except queue.Empty:
                break
            self._accept(item)
        self._spool_inbox()

    def _accept(self, item: Any) -> None:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or \
                not isinstance(item[0], str) or not isinstance(item[1], (str, bytes)):
            logger.error("%s: skipped an upload item that is not [filename, text]: %.80r",
                         self.name, item)
            return
        fname, text = item
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if not text:
            logger.debug("%s: skipped an empty upload item for %s", self.name, fname)
            return
        self._inbox.append((fname, text))
        self._spool_inbox()

    def _spool_inbox(self) -> None:
        while self._inbox:
            fname, text = self._inbox[0]
            try:
                self.spool.add(fname, text)
            except OSError as exc:
                if not self._spool_failing:
                    logger.error("%s: cannot write the spool %s: %s; holding %d item(s) in memory",
                                 self.name, self.spool.directory, exc, len(self._inbox))
                self._spool_failing = True
                return
            self._inbox.pop(0)
            if self._spool_failing:
                logger.info("%s: spool writable again", self.name)
                self._spool_failing = False

    # -- sending ----------------------------------------------------------
    def _slice(self, seconds: float) -> float:
        """Part of ``seconds`` (clock time) that lasts at most POLL_SECONDS of
        real time, so that queued items are spooled during a long backoff."""
        real = self.clock.to_real(seconds)
        return seconds if real <= POLL_SECONDS else seconds * POLL_SECONDS / real

    def _redact(self, text: str) -> str:
        if self._key:
            text = text.replace(self._key, "***")
        return text.replace(self.target_url, self.url_for_logs)

    def _send_oldest(self) -> None:
        try:
            batch = self.spool.next_batch()
        except OSError as exc:
            logger.error("%s: cannot seal a batch in %s: %s", self.name, self.spool.directory, exc)
            self._failed(None)
            return
        if batch is None:
            return
        part_id, data = batch.parts[0]
        fields = {"type": "text", "key": self._key, "fname": batch.fname,
                  "data": data, "id": part_id}
        answer = self._post(fields)
        if answer is None:                # stop requested while in flight
            return
        if isinstance(answer, Exception):
            self._failed("%s: %s" % (type(answer).__name__, self._redact(describe(answer))))
            return
        status, body, retry_after = answer
        verdict = classify(status, body)
        reason = "HTTP %d %s" % (status, self._redact(" ".join(body.split())[:200]))
        if status == 413:
            self._too_large(batch, body, reason)
        elif verdict == "ok":
            try:
                self.spool.confirm_part(batch)
            except OSError as exc:
                # The server has it; the re-send carries the same id and is a no-op.
                logger.error("%s: cannot update the spool %s after a confirmed upload: %s",
                             self.name, self.spool.directory, exc)
                self._failed(None)
                return
            self.sent_batches += 1
            if self._failures:
                logger.info("%s: %s accepts uploads again (after %d failed attempt(s))",
                            self.name, self.url_for_logs, self._failures)
            self._failures = 0
            self._next_attempt = 0.0
            logger.debug("%s: sent %s part %s (%d bytes, %d item(s)) for %s",
                         self.name, batch.name, part_id, len(data.encode("utf-8")),
                         batch.items, batch.fname)
        elif verdict == "reject":
            try:
                target = self.spool.reject(batch)
            except OSError as exc:
                logger.error("%s: %s refused %s (%s), and moving it to rejected/ failed: %s",
                             self.name, self.url_for_logs, batch.name, reason, exc)
                self._failed(None)
                return
            self.rejected_batches += 1
            logger.error("%s: %s refused %s for %s (%s); moved to %s, not retried",
                         self.name, self.url_for_logs, batch.name, batch.fname, reason, target)
        elif status == 429 and retry_after is not None:
            # The endpoint's rate limit: normal while a backlog drains, not a failure.
            self.rate_limited += 1
            delay = min(self.retry_max, retry_after)
            self._next_attempt = self.clock.monotonic() + delay
            logger.info("%s: %s asks to wait %.0f s (HTTP 429); %d unit(s) spooled",
                        self.name, self.url_for_logs, delay, len(self.spool))
        else:
            self._failed(reason)

    def _too_large(self, batch: Batch, body: str, reason: str) -> None:
        """HTTP 413 for ``batch.parts[0]``: cut it smaller, or set a single line aside."""
        part_id, data = batch.parts[0]
        size = len(data.encode("utf-8"))
        lines = len(data.splitlines())
        if lines > 1:
            stated = stated_limit(body)
            limit = stated if stated is not None and 0 < stated < size else max(1, size // 2)
            if limit < self.spool.max_batch_bytes:
                self.spool.max_batch_bytes = limit
                logger.warning("%s: %s refused %d bytes as too large (%s); merging and "
                               "sending at most %d bytes per POST for the rest of this run",
                               self.name, self.url_for_logs, size, reason, limit)
            limit = min(limit, self.spool.max_batch_bytes)
            try:
                pieces = self.spool.split_head(batch, limit)
            except OSError as exc:
                logger.error("%s: cannot split %s in %s: %s",
                             self.name, batch.name, self.spool.directory, exc)
                self._failed(None)
                return
            logger.info("%s: split part %s of %s (%d bytes, %d lines) into %d parts of at "
                        "most %d bytes", self.name, part_id, batch.name, size, lines, pieces,
                        limit)
            return                           # sent at once: not a failure
        try:
            target = self.spool.reject_part(batch)
        except OSError as exc:
            logger.error("%s: %s refused a line of %d bytes in %s (%s), and moving it to "
                         "rejected/ failed: %s", self.name, self.url_for_logs, size,
                         batch.name, reason, exc)
            self._failed(None)
            return
        self.rejected_batches += 1
        logger.error("%s: %s refused a single line of %d bytes in %s for %s as too large "
                     "(%s); moved to %s, not retried", self.name, self.url_for_logs, size,
                     batch.name, batch.fname, reason, target)

    def _failed(self, reason: Optional[str]) -> None:
        self._failures += 1
        self.failed_attempts += 1
        delay = backoff_delay(self._failures, self.retry_min, self.retry_max, self._rng)
        self._next_attempt = self.clock.monotonic() + delay
        if reason is not None:
            logger.warning("%s: upload to %s failed (%s); %d unit(s) spooled, retry in %.1f s",
                           self.name, self.url_for_logs, reason, len(self.spool), delay)

    def _post(self, fields: Dict[str, str]):
        """POST ``fields``; returns (status, body, retry_after), an exception,
        or None if a stop came first (the request is then abandoned).

        The request runs in a helper thread so that a hanging server cannot
        hold up a stop; the batch stays spooled and its id makes the re-send
        harmless.
        """
        outcome: List[Any] = []
        done = threading.Event()
        session = self._session

        def call() -> None:
            try:
                response = session.post(self.target_url, data=fields, timeout=self.timeout,
                                        allow_redirects=False, verify=True)
                retry_after = response.headers.get("Retry-After", "")
                outcome.append((response.status_code, response.text,
                                float(retry_after) if retry_after.strip().isdigit() else None))
            except Exception as exc:  # noqa: BLE001 - handed to the worker thread
                outcome.append(exc)
            finally:
                done.set()

        threading.Thread(target=call, name=self.name + "-post", daemon=True).start()
        while not done.wait(INTAKE_DURING_POST):
            # Blocks the recorder hands over meanwhile go to disk now, not
            # after the request: a crash must not find them only in memory.
            if not self._spool_failing:
                self._take_in()
            if self.stopping:
                logger.info("%s: stop requested; abandoned an upload in flight "
                            "(it stays spooled)", self.name)
                return None
        return outcome[0]
