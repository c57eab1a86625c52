"""The durable spool of a delivering output: units on disk, in arrival order.

Every output that delivers batches somewhere (keilib.output.SpooledOutput:
the HTTP uploader, InfluxDB, ...) keeps what it has not delivered yet here,
one directory per output.  A unit is a JSON file::

    <seq>.item    {"fname": <group key>, "parts": [[<id>, <text>]]}
    <seq>.batch   {"fname": ..., "parts": [[<id>, <text>], ...], "members": [...], "items": N}

``text`` is one or more whole lines; ``fname`` is the group key (the file
name for the HTTP uploader: units with the same key may be merged).

* ``add(key, text)`` stores a unit durably (temp file, fsync, ``os.replace``,
  fsync of the directory) before anyone sends it.
* ``next_batch()`` seals the oldest unit into ``<seq>.batch`` before its
  first send: it may absorb later units of the same key (in order, up to
  ``max_batch_bytes``), and text larger than that is cut at line ends into
  parts.  A batch is never regrouped, so every retry sends the same bytes
  with the same id.  A crash after a batch file was written but before its
  member items were deleted is repaired at ``open()``.
* ``confirm_part``, ``split_head`` (refused as too large: cut smaller, ids
  derived from the part's), ``reject_part`` and ``reject`` (set aside in
  ``rejected/``) change a batch by one atomic rewrite or rename.
* A unit that cannot be read or makes no sense (bad JSON, a batch with no
  parts, a part that is not [id, text]) is moved to ``rejected/`` with one
  ERROR; it never blocks the units behind it.

Thread-safe: a producer may ``add`` (through a ``SpoolQueue``) while the
output's thread sends; one lock guards the in-memory index and the files.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import queue
import threading
from collections import OrderedDict
from pathlib import Path

# write_atomic is called through this module's name (tests make it fail here).
from keilib.files import TEMP_PREFIX, fsync_directory, write_atomic  # noqa: F401
from keilib.worker import STOP_WAKE

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Callable, Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_BYTES = 65536
ITEM = ".item"      # one queue item, not yet sent
BATCH = ".batch"    # sealed: being sent, composition fixed


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




class Batch:
    """A sealed spool unit: parts ``[(id, data), ...]`` for one file, sent in order."""

    def __init__(self, name: str, fname: str, parts: List[Tuple[str, str]], items: int):
        self.name = name
        self.fname = fname
        self.parts = parts
        self.items = items


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(self: "Spool", *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return method(self, *args, **kwargs)
    guarded.__name__ = method.__name__
    guarded.__doc__ = method.__doc__
    return guarded


class Spool:
    """Units on disk, in arrival order (see the module docstring)."""

    def __init__(self, directory, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES):
        self.directory = Path(directory)
        self.rejected_directory = self.directory / "rejected"
        self.max_batch_bytes = max_batch_bytes
        self.lock = threading.RLock()
        self.opened = False
        # name -> (fname, data bytes) for every unit, in sequence order.
        self._units: "OrderedDict[str, Tuple[str, int]]" = OrderedDict()
        self._next_seq = 0

    # -- opening and recovery -------------------------------------------
    @_locked
    def ensure_open(self) -> None:
        """Open the spool unless it is open already (no I/O before first use)."""
        if not self.opened:
            self.open()

    @_locked
    def open(self) -> None:
        """Read the directory afresh, repairing what a crash left behind."""
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
        fsync_directory(self.directory)
        self.opened = True

    @staticmethod
    def _seq(name: str) -> int:
        return int(name.split(".", 1)[0])

    def _load(self, name: str) -> Optional[Dict[str, Any]]:
        """A unit's content, or None after moving an unreadable file aside."""
        path = self.directory / name
        try:
            unit = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(unit, dict) or not isinstance(unit.get("fname"), str):
                raise ValueError("no group key ('fname')")
            parts = unit.get("parts")
            if not isinstance(parts, list) or not parts:
                raise ValueError("no parts")
            if not all(isinstance(part, list) and len(part) == 2
                       and all(isinstance(field, str) for field in part) for part in parts):
                raise ValueError("a part is not [id, text]")
            if not isinstance(unit.get("members", []), list):
                raise ValueError("'members' is not a list")
            unit["parts"] = [(part_id, data) for part_id, data in parts]
            return unit
        except (ValueError, UnicodeDecodeError) as exc:
            # Never retried, never in the way of the units behind it.
            logger.error("spool: unreadable unit %s (%s); moved to %s",
                         name, exc, self.rejected_directory)
            self._move_to_rejected(name)
            return None

    # -- the queue side -------------------------------------------------
    def __len__(self) -> int:
        return len(self._units)

    @_locked
    def add(self, fname: str, data: str) -> str:
        """Store one item durably; returns its unit name."""
        self.ensure_open()
        name = "%012d%s" % (self._next_seq, ITEM)
        # 128 random bits, as uuid4 has (uuid would import platform: 200 kB).
        unit = {"fname": fname, "parts": [[os.urandom(16).hex(), data]]}
        write_atomic(self.directory, name, json.dumps(unit, ensure_ascii=False).encode("utf-8"))
        self._next_seq += 1
        self._units[name] = (fname, len(data.encode("utf-8")))
        return name

    # -- the sending side -----------------------------------------------
    @_locked
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
            fsync_directory(self.directory)
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
            fsync_directory(self.directory)
        for member in members:
            del self._units[member]
        # Same sequence number as the head: still the oldest unit.
        self._units[name] = (fname, size)
        self._units.move_to_end(name, last=False)
        return Batch(name, fname, parts, len(members))

    @_locked
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

    @_locked
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

    @_locked
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

    @_locked
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
        fsync_directory(self.directory)
        fsync_directory(self.rejected_directory)
        return target


class SpoolQueue(queue.Queue):
    """A queue whose ``put`` stores the item in a spool before it returns.

    The launcher gives one to the producers of an output that wants a
    durable hand-off (the HTTP uploader behind a FileRecorder): once
    ``put`` has returned the item is on disk, so a kill -9 at any instant
    after it cannot lose it.  ``encode(item)`` turns an item into
    ``(group key, text)`` (None: skipped, the encoder logged why).  The queue
    itself carries only wake-up tokens for the consumer, which then reads the
    spool; it never fills.  A spool that cannot be written raises OSError to
    the producer, which holds the item and offers it again later.
    """

    SPOOLED = "spooled"        # the token: "look at the spool"

    def __init__(self, spool: Spool, encode: Callable[[Any], Optional[Tuple[str, str]]]) -> None:
        super().__init__()
        self.spool = spool
        self.encode = encode

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        if item is not STOP_WAKE:          # the worker layer's marker passes through
            unit = self.encode(item)
            if unit is None:
                return
            self.spool.add(*unit)
            item = self.SPOOLED
        super().put(item, block, timeout)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)
