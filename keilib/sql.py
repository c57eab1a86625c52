"""SqlRecorder: every Record (and 10-minute Aggregate) into one SQLite file.

The embedded default store: ``sqlite3`` from the standard library, one file in
the work directory (``kei.sqlite``), WAL mode, and one writer: the worker's own
thread (SQLite allows one writer at a time; readers such as ``kei query`` read
the WAL file alongside without blocking it).

Schema (version 2, kept in ``PRAGMA user_version``)::

    sensor(id INTEGER PRIMARY KEY, unit TEXT, sensor TEXT, UNIQUE(unit, sensor))
    reading(sensor_id, ts, value, data_id)                  PRIMARY KEY (sensor_id, ts)
    aggregate(sensor_id, window_s, ts, mean, minimum, maximum, count)
                                                            PRIMARY KEY (sensor_id, window_s, ts)

Both data tables are ``WITHOUT ROWID``: the rows are stored in key order, so a
sensor's time range is one contiguous B-tree walk and no second index is kept.
``ts`` is UTC epoch seconds (integer): Records carry naive local time, which is
converted with the box's time zone; ``window_s`` is the aggregate's length in
seconds (600 for the 10-minute averages) and ``ts`` its start (not ``window``:
a keyword since SQLite 3.25 and in PostgreSQL).

Writes are upserts on the key (``INSERT ... ON CONFLICT DO UPDATE``), so a
reading written twice, or a back-filled half-hour value (data id ``hist``)
that was also read live, is stored once; the last write wins.  Two readings of
one sensor within the same second are one row.

Works on SQLite 3.34 (Raspberry Pi OS Bullseye): no ``STRICT`` tables (3.37),
no ``RETURNING`` (3.35), no ``ALTER TABLE DROP COLUMN`` (3.35), no
``unixepoch()`` (3.38); the upsert syntax needs 3.24.

Migrations: ``MIGRATIONS[n]`` takes a file from version n to n + 1 in one
transaction; a file written by an older kei is upgraded in place when it is
opened, a file from a newer kei is refused (a configuration error: the worker
stops with it, and the launcher retries with backoff).

Durability and loss bound: items are taken from the queue and written in
batches, one transaction each, committed when ``batch_size`` rows are waiting
or ``commit_seconds`` after the first uncommitted one (defaults 500 rows /
1 s).  A ``kill -9`` loses at most the rows taken off the queue and not yet
committed: at most ``batch_size`` rows or ``commit_seconds`` of input (plus,
as for every output, what was still in the launcher's in-memory queue).  WAL
with ``synchronous=NORMAL``: a crash never corrupts the file; a power cut may
also lose the last committed transactions.  This is why the store does not use
the spool base (keilib/output.py): a committed transaction is itself durable,
and a second copy on disk would double the writes to the SD card.

A write error (disk full, read-only file system) is logged once per episode;
the batch is kept in memory and retried every ``retry_seconds``; while it is
held, no more than ``max_pending`` rows are taken from the queue: a queue
with this worker as its only consumer fills and the readers feel the
back-pressure; behind the launcher's fan-out, this worker's own inbox
(BUFFER_POLICY "hold") keeps the rest, up to the fan-out's limit.  Recovery
is logged once.

Items that are neither Records nor aggregates (nor keilog's 4-item lists)
are skipped with one log line each.

Aggregates may come on ``record_que`` or on their own ``aggregate_que`` (the
Averager's output): one worker, one writer thread, takes from both.

``worker_def`` entry::

    {'class': SqlRecorder,
     'args': {'record_que': record_que,        # Records (and/or Aggregates)
              'aggregate_que': aggregate_que,  # optional: the Averager's output
              'database': 'kei.sqlite'}}       # optional; in the work directory
"""

from __future__ import annotations

import datetime
import logging
import os
import queue
import sqlite3

from keilib import validate
from keilib.average import Aggregate
from keilib.clock import Clock
from keilib.errors import ConfigError
from keilib.record import Record
from keilib.worker import Worker

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Callable, Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

DEFAULT_DATABASE = "kei.sqlite"


def _v1(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE sensor (id INTEGER PRIMARY KEY, unit TEXT NOT NULL, sensor TEXT NOT NULL, "
               "UNIQUE (unit, sensor))")
    db.execute("CREATE TABLE reading (sensor_id INTEGER NOT NULL REFERENCES sensor(id), ts INTEGER NOT NULL, "
               "value REAL NOT NULL, data_id TEXT NOT NULL, PRIMARY KEY (sensor_id, ts)) WITHOUT ROWID")


def _v2(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE aggregate (sensor_id INTEGER NOT NULL REFERENCES sensor(id), "
               "window_s INTEGER NOT NULL, ts INTEGER NOT NULL, mean REAL NOT NULL, minimum REAL NOT NULL, "
               "maximum REAL NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (sensor_id, window_s, ts)) "
               "WITHOUT ROWID")


# MIGRATIONS[n] upgrades a file of version n to n + 1 (version 0 = empty file).
MIGRATIONS: List[Callable[[sqlite3.Connection], None]] = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)

UPSERT_READING = ("INSERT INTO reading (sensor_id, ts, value, data_id) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (sensor_id, ts) DO UPDATE SET value = excluded.value, data_id = excluded.data_id")
UPSERT_AGGREGATE = ("INSERT INTO aggregate (sensor_id, window_s, ts, mean, minimum, maximum, count) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sensor_id, window_s, ts) DO UPDATE SET "
                    "mean = excluded.mean, minimum = excluded.minimum, maximum = excluded.maximum, "
                    "count = excluded.count")


def epoch(stamp: datetime.datetime) -> int:
    """Naive local time -> UTC epoch seconds (whole seconds, floor)."""
    return int(stamp.replace(microsecond=0).timestamp())


def local_time(seconds: int) -> datetime.datetime:
    """UTC epoch seconds -> naive local time (inverse of ``epoch``)."""
    return datetime.datetime.fromtimestamp(seconds)


def connect(path: str, timeout: float = 5.0) -> sqlite3.Connection:
    """Open (and migrate) a kei database; raises ConfigError for a newer file."""
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=True)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        migrate(db, path)
    except BaseException:
        db.close()
        raise
    return db


def migrate(db: sqlite3.Connection, path: str = "") -> int:
    """Bring ``db`` to SCHEMA_VERSION in place; returns the version it had."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ConfigError("database %s has schema version %d; this kei knows up to %d (a newer kei wrote it)"
                          % (path, version, SCHEMA_VERSION))
    start = version
    while version < SCHEMA_VERSION:
        db.execute("BEGIN IMMEDIATE")
        try:
            # Read again inside the write lock: another process may have migrated it.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                MIGRATIONS[version](db)
                version += 1
                db.execute("PRAGMA user_version = %d" % version)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    if start != version:
        logger.info("database %s: schema version %d -> %d", path, start, version)
    return start


def is_aggregate(item: Any) -> bool:
    return isinstance(item, Aggregate)


class SqlRecorder(Worker):
    """Write Records and Aggregates from ``record_que`` into SQLite (see the module docstring).

    ``worker_def`` entry::

        {'class': SqlRecorder,
         'args': {'record_que': record_que,        # Records (and/or Aggregates)
                  'aggregate_que': aggregate_que,  # optional: the Averager's output
                  'database': 'kei.sqlite'}}       # optional; in the work directory
    """

    CONSUMES = ("record_que", "aggregate_que")
    BUFFER_POLICY = "hold"

    def __init__(self, record_que: "queue.Queue[Any]", database: str = DEFAULT_DATABASE,
                 batch_size: int = 500, commit_seconds: float = 1.0, retry_seconds: float = 10.0,
                 max_pending: int = 50_000, aggregate_que: "Optional[queue.Queue[Any]]" = None,
                 clock: Optional[Clock] = None, name: Optional[str] = None):
        super().__init__(clock=clock, name=name)
        validate.a_queue("record_que", record_que)
        validate.a_queue("aggregate_que", aggregate_que, required=False)
        validate.text("database", database, r"[^\x00]+", "a file name (relative to the work directory)")
        batch_size = validate.number("batch_size", batch_size, 1, 1_000_000, integer=True)
        max_pending = validate.number("max_pending", max_pending, 1, 10_000_000, integer=True)
        validate.number("commit_seconds", commit_seconds, 0, 3600, exclusive_minimum=True)
        validate.number("retry_seconds", retry_seconds, 0, 86400, exclusive_minimum=True)
        self.record_que = record_que
        self.aggregate_que = aggregate_que
        self.sources = [que for que in (record_que, aggregate_que) if que is not None]
        self.path = database if os.path.isabs(database) else os.path.join(os.getcwd(), database)
        self.batch_size = batch_size
        self.commit_seconds = float(commit_seconds)
        self.retry_seconds = float(retry_seconds)
        self.max_pending = max(max_pending, batch_size)
        self.db: Optional[sqlite3.Connection] = None
        self.sensor_ids: Dict[Tuple[str, str], int] = {}
        # Rows taken from the queue and not yet committed: ("r"|"a", values...)
        self.pending: List[Tuple[Any, ...]] = []
        self.first_pending_at: Optional[float] = None
        self.failing_since: Optional[float] = None
        self.retry_at = 0.0

    # -- the store (PgRecorder implements these for PostgreSQL) ----------------
    STORE_ERRORS: Tuple[type, ...] = (sqlite3.Error,)

    def open_store(self) -> None:
        self.db = connect(self.path)

    def close_store(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def describe(self) -> str:
        return self.path

    def error_text(self, exc: BaseException) -> str:
        return str(exc).strip()

    def write(self, rows: List[Tuple[Any, ...]]) -> Dict[Tuple[str, str], int]:
        """One transaction with ``rows``; the sensor ids it added.  Raises STORE_ERRORS."""
        assert self.db is not None
        added: Dict[Tuple[str, str], int] = {}
        try:
            self.db.execute("BEGIN IMMEDIATE")
            readings, aggregates = [], []
            for row in rows:
                key = row[1]
                ident = self.sensor_ids.get(key) or added.get(key)
                if ident is None:
                    ident = added[key] = self.sensor_id(key)
                (readings if row[0] == "r" else aggregates).append((ident,) + row[2:])
            if readings:
                self.db.executemany(UPSERT_READING, readings)
            if aggregates:
                self.db.executemany(UPSERT_AGGREGATE, aggregates)
            self.db.execute("COMMIT")
        except sqlite3.Error:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        return added

    # -- thread -------------------------------------------------------------
    def setup(self) -> None:
        self.health.gauge("pending", 0)
        self.open_store()

    def step(self) -> None:
        now = self.clock.monotonic()
        if self.failing_since is not None and len(self.pending) >= self.max_pending:
            # Hold: take nothing more until the store accepts the batch again.
            if self.wait(max(0.0, min(1.0, self.retry_at - now))):
                return
        else:
            timeout = 0.5
            if self.first_pending_at is not None:
                due = self.retry_at if self.failing_since is not None else \
                    self.first_pending_at + self.commit_seconds
                timeout = max(0.0, min(0.5, self.clock.to_real(due - now)))
            item = self._get_nowait()
            if item is None and timeout > 0:
                # Block on the readings; with a second queue, in short slices so
                # aggregates wait at most 0.2 s.
                slice_ = timeout if len(self.sources) == 1 else min(timeout, 0.2)
                item = self.get(self.record_que, timeout=slice_)
            if item is not None:
                self.add(item)
                # Drain what is already queued without waiting, up to a batch.
                while len(self.pending) < self.batch_size:
                    more = self._get_nowait()
                    if more is None:
                        break
                    self.add(more)
        self.maybe_commit()

    def _get_nowait(self) -> Any:
        for source in self.sources:
            try:
                return source.get_nowait()
            except queue.Empty:
                continue
        return None

    def cleanup(self) -> None:
        # At stop the producers have stopped first: store what they queued.
        if self.failing_since is None:
            while True:
                item = self._get_nowait()
                if item is None:
                    break
                self.add(item)
                if len(self.pending) >= self.batch_size:
                    self.commit()
                    if self.pending:
                        break
        if self.pending:
            self.commit()
            if self.pending:
                logger.error("%s: %d rows could not be stored at stop", self.name, len(self.pending))
        self.close_store()

    def after_error(self) -> None:
        """After a failed write: SQLite keeps its file open (PostgreSQL reconnects)."""

    # -- rows -----------------------------------------------------------------
    def add(self, item: Any) -> None:
        self.health.count("in")
        if isinstance(item, (list, tuple)) and not isinstance(item, Record):
            try:
                item = Record.from_legacy(item, self.clock.now())
            except (ValueError, TypeError) as exc:
                logger.warning("%s: skipped item that is not a reading: %s", self.name, exc)
                self.health.count("skipped")
                return
        if not isinstance(item, Record):
            logger.warning("%s: skipped item that is not a Record: %r", self.name, item)
            self.health.count("skipped")
            return
        key = (item.unit, item.sensor)
        if is_aggregate(item):
            row: Tuple[Any, ...] = ("a", key, int(item.window), epoch(item.timestamp), float(item.value),
                                    float(item.minimum), float(item.maximum), int(item.count))
        else:
            row = ("r", key, epoch(item.timestamp), item.value, item.data_id)
        if not self.pending:
            self.first_pending_at = self.clock.monotonic()
        self.pending.append(row)
        self.health.gauge("pending", len(self.pending))

    def maybe_commit(self) -> None:
        if not self.pending:
            return
        now = self.clock.monotonic()
        if self.failing_since is not None:
            if now >= self.retry_at:
                self.commit()
            return
        assert self.first_pending_at is not None
        if len(self.pending) >= self.batch_size or now - self.first_pending_at >= self.commit_seconds \
                or self.stopping:
            self.commit()

    def sensor_id(self, key: Tuple[str, str]) -> int:
        found = self.sensor_ids.get(key)
        if found is None:
            assert self.db is not None
            self.db.execute("INSERT OR IGNORE INTO sensor (unit, sensor) VALUES (?, ?)", key)
            found = self.db.execute("SELECT id FROM sensor WHERE unit = ? AND sensor = ?", key).fetchone()[0]
        return found

    def commit(self) -> None:
        """Write every pending row in one transaction; keep them on failure."""
        try:
            if self.db is None:
                self.open_store()
            added = self.write(self.pending)
        except self.STORE_ERRORS as exc:
            now = self.clock.monotonic()
            if self.failing_since is None:
                self.failing_since = now
                logger.error("%s: cannot write %s (%s); holding %d rows, retrying every %g s",
                             self.name, self.describe(), self.error_text(exc), len(self.pending), self.retry_seconds)
            self.health.count("write_errors")
            self.retry_at = now + self.retry_seconds
            self.after_error()
            return
        self.sensor_ids.update(added)
        if self.failing_since is not None:
            logger.info("%s: writing %s again after %.0f s; %d held rows stored", self.name, self.describe(),
                        self.clock.monotonic() - self.failing_since, len(self.pending))
            self.failing_since = None
        self.health.count("stored", len(self.pending))
        self.health.stamp("last_success")
        self.pending = []
        self.first_pending_at = None
        self.health.gauge("pending", 0)
