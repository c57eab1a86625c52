"""PgRecorder: the SQLite store's schema idea in PostgreSQL, through psycopg 3.

For users who already run a database.  Optional: ``pip install 'kei[postgres]'``
(or ``sudo apt install python3-psycopg``); psycopg is imported only when a
PgRecorder is configured.

Tables (created in the connection's schema; version in ``kei_schema``)::

    sensor(id serial PRIMARY KEY, unit text, sensor text, UNIQUE (unit, sensor))
    reading(sensor_id, ts timestamptz, value double precision, data_id text)   PRIMARY KEY (sensor_id, ts)
    aggregate(sensor_id, window_s integer, ts timestamptz, mean, minimum, maximum, count)
                                                                  PRIMARY KEY (sensor_id, window_s, ts)

Times are ``timestamptz`` (the Records' local time, converted with the box's
time zone), so SQL users get real timestamps.  Writes are upserts on the key
(``INSERT ... ON CONFLICT DO UPDATE``), so a reading written twice, or a
back-filled half hour also read live, is stored once.  Batching, holding and
back-pressure are SqlRecorder's (one transaction per batch; a server that is
down or refuses is logged once, the rows are held, and kei reconnects every
``retry_seconds``).  The connection string may hold a password: it is never
logged (only host, port and database name are).

``worker_def`` entry::

    {'class': PgRecorder,
     'args': {'record_que': record_que,
              'conninfo': 'host=db.local dbname=kei user=kei password=...',   # libpq string or URL
              'aggregate_que': aggregate_que}}                              # optional
"""

from __future__ import annotations

import datetime
import logging

from keilib import validate
from keilib.clock import Clock
from keilib.errors import ConfigError
from keilib.sql import SqlRecorder

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)


def _v1(cur: Any) -> None:
    cur.execute("CREATE TABLE sensor (id serial PRIMARY KEY, unit text NOT NULL, sensor text NOT NULL, "
                "UNIQUE (unit, sensor))")
    cur.execute("CREATE TABLE reading (sensor_id integer NOT NULL REFERENCES sensor(id), ts timestamptz NOT NULL, "
                "value double precision NOT NULL, data_id text NOT NULL, PRIMARY KEY (sensor_id, ts))")


def _v2(cur: Any) -> None:
    cur.execute("CREATE TABLE aggregate (sensor_id integer NOT NULL REFERENCES sensor(id), "
                "window_s integer NOT NULL, ts timestamptz NOT NULL, mean double precision NOT NULL, "
                "minimum double precision NOT NULL, maximum double precision NOT NULL, count integer NOT NULL, "
                "PRIMARY KEY (sensor_id, window_s, ts))")


MIGRATIONS = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)

UPSERT_READING = ("INSERT INTO reading (sensor_id, ts, value, data_id) VALUES (%s, %s, %s, %s) "
                  "ON CONFLICT (sensor_id, ts) DO UPDATE SET value = EXCLUDED.value, data_id = EXCLUDED.data_id")
UPSERT_AGGREGATE = ("INSERT INTO aggregate (sensor_id, window_s, ts, mean, minimum, maximum, count) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (sensor_id, window_s, ts) DO UPDATE SET "
                    "mean = EXCLUDED.mean, minimum = EXCLUDED.minimum, maximum = EXCLUDED.maximum, "
                    "count = EXCLUDED.count")


def _utc(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


class PgRecorder(SqlRecorder):
    """Write Records and Aggregates into PostgreSQL (see the module docstring).

    ``worker_def`` entry::

        {'class': PgRecorder,
         'args': {'record_que': record_que,
                  'conninfo': 'host=db.local dbname=kei user=kei password=...',
                  'aggregate_que': aggregate_que}}          # optional
    """

    REQUIRES = [("psycopg", "pip install 'kei[postgres]'", "sudo apt install python3-psycopg")]

    def __init__(self, record_que: Any, conninfo: str = "", batch_size: int = 500, commit_seconds: float = 1.0,
                 retry_seconds: float = 10.0, max_pending: int = 50_000, aggregate_que: Any = None,
                 connect_timeout: float = 10.0, clock: Optional[Clock] = None, name: Optional[str] = None):
        super().__init__(record_que, database="postgresql", batch_size=batch_size, commit_seconds=commit_seconds,
                         retry_seconds=retry_seconds, max_pending=max_pending, aggregate_que=aggregate_que,
                         clock=clock, name=name)
        if not isinstance(conninfo, str) or not conninfo.strip() or "\x00" in conninfo:
            # Never shown: it may hold the password.
            raise ConfigError("argument 'conninfo' must be a PostgreSQL connection string such as "
                              "'host=localhost dbname=kei user=kei'")
        validate.number("connect_timeout", connect_timeout, 0, 300, exclusive_minimum=True)
        self.conninfo = conninfo
        self.connect_timeout = connect_timeout
        self.where = "PostgreSQL"
        import psycopg    # here: only a configured PgRecorder needs it
        self.psycopg = psycopg
        self.STORE_ERRORS = (psycopg.Error,)
        try:
            params = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise ConfigError("argument 'conninfo' is not a valid connection string (%s)"
                              % str(exc).split("\n")[0].replace(conninfo, "...")) from None
        self.password = params.get("password", "")
        # What the log may show: never the password.
        self.where = "PostgreSQL %s:%s/%s" % (params.get("host", "local socket"), params.get("port", 5432),
                                              params.get("dbname", params.get("user", "?")))

    def describe(self) -> str:
        return self.where

    def error_text(self, exc: BaseException) -> str:
        # libpq does not put the password in its messages; make sure of it.
        text = " ".join(str(exc).split())
        password = self.password
        return text.replace(password, "***") if password else text

    def setup(self) -> None:
        # A server that is down at start is held for like any later outage.
        self.health.gauge("pending", 0)

    def open_store(self) -> None:
        db = self.psycopg.connect(self.conninfo, connect_timeout=max(1, int(self.connect_timeout)),
                                  autocommit=True)     # each batch is one explicit transaction
        try:
            self.migrate(db)
        except BaseException:
            db.close()
            raise
        self.db = db
        self.sensor_ids = {}

    def migrate(self, db: Any) -> None:
        with db.transaction():
            with db.cursor() as cur:
                cur.execute("CREATE TABLE IF NOT EXISTS kei_schema (version integer NOT NULL)")
                # One kei at a time migrates: the lock is held until the transaction ends.
                cur.execute("LOCK TABLE kei_schema IN EXCLUSIVE MODE")
                cur.execute("SELECT version FROM kei_schema")
                row = cur.fetchone()
                version = row[0] if row else 0
                if version > SCHEMA_VERSION:
                    raise ConfigError("%s has kei schema version %d; this kei knows up to %d"
                                      % (self.where, version, SCHEMA_VERSION))
                start = version
                while version < SCHEMA_VERSION:
                    MIGRATIONS[version](cur)
                    version += 1
                if row is None:
                    cur.execute("INSERT INTO kei_schema VALUES (%s)", (version,))
                elif start != version:
                    cur.execute("UPDATE kei_schema SET version = %s", (version,))
        if start != version:
            logger.info("%s: kei schema version %d -> %d", self.where, start, version)

    def close_store(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            finally:
                self.db = None

    def after_error(self) -> None:
        # The connection may be gone (server restarted): reconnect at the next try.
        self.close_store()

    def write(self, rows: List[Tuple[Any, ...]]) -> Dict[Tuple[str, str], int]:
        db = self.db
        added: Dict[Tuple[str, str], int] = {}
        with db.transaction():
            with db.cursor() as cur:
                readings, aggregates = [], []
                for row in rows:
                    key = row[1]
                    ident = self.sensor_ids.get(key) or added.get(key)
                    if ident is None:
                        cur.execute("INSERT INTO sensor (unit, sensor) VALUES (%s, %s) "
                                    "ON CONFLICT (unit, sensor) DO NOTHING", key)
                        cur.execute("SELECT id FROM sensor WHERE unit = %s AND sensor = %s", key)
                        ident = added[key] = cur.fetchone()[0]
                    if row[0] == "r":
                        readings.append((ident, _utc(row[2])) + tuple(row[3:]))
                    else:
                        aggregates.append((ident, row[2], _utc(row[3])) + tuple(row[4:]))
                if readings:
                    cur.executemany(UPSERT_READING, readings)
                if aggregates:
                    cur.executemany(UPSERT_AGGREGATE, aggregates)
        return added
