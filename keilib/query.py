"""``kei query``: readings, averages and daily energy from the SQLite store, as CSV.

Usage (also ``python3 -m keilib.query``)::

    kei query sensors                                   # what the file holds
    kei query readings E7 --from 2026-11-24 --to 2026-11-25
    kei query averages E7 --from "2026-11-24 06:00"     # the 10-minute aggregates
    kei query energy tuesday                            # "how much did we use last Tuesday"
    kei query energy 2026-11-20 --days 7                # one row per day

Times are local (as in the files), ``--from`` inclusive, ``--to`` exclusive;
a date alone means its midnight.  ``--db`` names the file (default
``kei.sqlite`` in the current directory), ``--unit`` the unit (default ``BR``).

Energy of a day = the cumulative import (export) at the next midnight minus
the one at this midnight, taken from the meter's half-hour values EA (EB),
which the B-route reader records live and back-fills from the meter's history;
if a midnight value is missing, the first E0 (E3) reading at or after each
midnight is used instead (marked ``E0`` in the source column).  A meter's
counter wraps at 10^D7 counts; give ``--wrap`` (kWh, e.g. 100000 for 6 digits
of 0.1 kWh) to count across the wrap; without it a day across the wrap is
reported as unknown with the reason.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import sqlite3
import sys

from keilib.sql import DEFAULT_DATABASE, epoch, local_time

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Optional, Sequence, Tuple

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def parse_time(text: str) -> datetime.datetime:
    for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M",
                 "%Y-%m-%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d"):
        try:
            return datetime.datetime.strptime(text, form)
        except ValueError:
            continue
    raise argparse.ArgumentTypeError("not a time: %r (use YYYY-MM-DD[ hh:mm[:ss]])" % text)


def parse_day(text: str, today: datetime.date) -> datetime.date:
    """A date, 'today', 'yesterday', or a weekday name (the latest one before today)."""
    word = text.lower()
    if word == "today":
        return today
    if word == "yesterday":
        return today - datetime.timedelta(days=1)
    if word in WEEKDAYS:
        back = (today.weekday() - WEEKDAYS.index(word)) % 7 or 7
        return today - datetime.timedelta(days=back)
    return parse_time(text).date()


def open_db(path: str) -> sqlite3.Connection:
    if not os.path.exists(path):
        raise SystemExit("kei query: no database %s (SqlRecorder writes kei.sqlite in the work directory)" % path)
    # Read only: a query never takes the writer's lock or creates files.
    return sqlite3.connect("file:%s?mode=ro" % os.path.abspath(path), uri=True, timeout=10)


def sensor_id(db: sqlite3.Connection, unit: str, sensor: str) -> Optional[int]:
    row = db.execute("SELECT id FROM sensor WHERE unit = ? AND sensor = ?", (unit, sensor)).fetchone()
    return None if row is None else row[0]


def time_range(args: argparse.Namespace) -> Tuple[int, int]:
    start = epoch(args.start) if args.start else 0
    end = epoch(args.end) if args.end else 2 ** 62
    return start, end


def fmt(stamp: int) -> str:
    return local_time(stamp).strftime("%Y/%m/%d %H:%M:%S")


def cmd_sensors(db: sqlite3.Connection, args: argparse.Namespace, out: "csv._writer") -> int:
    out.writerow(["unit", "sensor", "readings", "first", "last", "aggregates"])
    for ident, unit, sensor in db.execute("SELECT id, unit, sensor FROM sensor ORDER BY unit, sensor").fetchall():
        count, first, last = db.execute("SELECT count(*), min(ts), max(ts) FROM reading WHERE sensor_id = ?",
                                        (ident,)).fetchone()
        aggregates = db.execute("SELECT count(*) FROM aggregate WHERE sensor_id = ?", (ident,)).fetchone()[0]
        out.writerow([unit, sensor, count, fmt(first) if first is not None else "",
                      fmt(last) if last is not None else "", aggregates])
    return 0


def cmd_readings(db: sqlite3.Connection, args: argparse.Namespace, out: "csv._writer") -> int:
    ident = sensor_id(db, args.unit, args.sensor)
    out.writerow(["time", "unit", "sensor", "value", "data_id"])
    if ident is None:
        print("kei query: no sensor %s/%s in the database" % (args.unit, args.sensor), file=sys.stderr)
        return 1
    start, end = time_range(args)
    for stamp, value, data_id in db.execute(
            "SELECT ts, value, data_id FROM reading WHERE sensor_id = ? AND ts >= ? AND ts < ? ORDER BY ts",
            (ident, start, end)):
        out.writerow([fmt(stamp), args.unit, args.sensor, _number(value), data_id])
    return 0


def cmd_averages(db: sqlite3.Connection, args: argparse.Namespace, out: "csv._writer") -> int:
    ident = sensor_id(db, args.unit, args.sensor)
    out.writerow(["time", "unit", "sensor", "mean", "minimum", "maximum", "count"])
    if ident is None:
        print("kei query: no sensor %s/%s in the database" % (args.unit, args.sensor), file=sys.stderr)
        return 1
    start, end = time_range(args)
    for stamp, mean, low, high, count in db.execute(
            "SELECT ts, mean, minimum, maximum, count FROM aggregate WHERE sensor_id = ? AND window_s = ? "
            "AND ts >= ? AND ts < ? ORDER BY ts", (ident, args.window, start, end)):
        out.writerow([fmt(stamp), args.unit, args.sensor, _number(mean), _number(low), _number(high), count])
    return 0


def cumulative_at(db: sqlite3.Connection, unit: str, exact: str, fallback: str,
                  moment: datetime.datetime) -> Tuple[Optional[float], str]:
    """(value, source) of a cumulative counter at ``moment``: the half-hour value there,
    else the first live reading within the following half hour."""
    stamp = epoch(moment)
    ident = sensor_id(db, unit, exact)
    if ident is not None:
        row = db.execute("SELECT value FROM reading WHERE sensor_id = ? AND ts = ?", (ident, stamp)).fetchone()
        if row is not None:
            return row[0], exact
    ident = sensor_id(db, unit, fallback)
    if ident is not None:
        row = db.execute("SELECT value FROM reading WHERE sensor_id = ? AND ts >= ? AND ts < ? ORDER BY ts "
                         "LIMIT 1", (ident, stamp, stamp + 1800)).fetchone()
        if row is not None:
            return row[0], fallback
    return None, ""


def day_energy(db: sqlite3.Connection, unit: str, day: datetime.date, exact: str, fallback: str,
               wrap: Optional[float]) -> Tuple[Optional[float], str]:
    start = datetime.datetime.combine(day, datetime.time())
    first, source1 = cumulative_at(db, unit, exact, fallback, start)
    last, source2 = cumulative_at(db, unit, exact, fallback, start + datetime.timedelta(days=1))
    if first is None or last is None:
        return None, "no %s value at %s" % (exact, "midnight" if first is None else "the next midnight")
    delta = last - first
    if delta < 0:
        if not wrap:
            return None, "the counter went back (a wrap at 10^D7? give --wrap)"
        delta += wrap
    source = source1 if source1 == source2 else "%s+%s" % (source1, source2)
    return round(delta, 4), source


def cmd_energy(db: sqlite3.Connection, args: argparse.Namespace, out: "csv._writer") -> int:
    day = parse_day(args.day, args.today or datetime.date.today())
    out.writerow(["date", "import_kwh", "export_kwh", "source"])
    status = 0
    for index in range(args.days):
        current = day + datetime.timedelta(days=index)
        imported, source = day_energy(db, args.unit, current, "EA", "E0", args.wrap)
        exported, _ = day_energy(db, args.unit, current, "EB", "E3", args.wrap)
        if imported is None:
            status = 1
        out.writerow([current.isoformat(), "" if imported is None else _number(imported),
                      "" if exported is None else _number(exported), source])
    return status


def _number(value: float) -> str:
    value = round(value, 4)
    return str(int(value)) if value == int(value) else repr(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kei query", description="Print data from kei's SQLite store as CSV.")
    parser.add_argument("--db", default=DEFAULT_DATABASE, help="the database file (default: kei.sqlite)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("sensors", help="list the sensors and how much each holds")
    for name, what in (("readings", "a sensor's readings"), ("averages", "a sensor's 10-minute averages")):
        sub = commands.add_parser(name, help=what)
        sub.add_argument("sensor", help="sensor id, e.g. E7")
        sub.add_argument("--unit", default="BR", help="unit id (default BR)")
        sub.add_argument("--from", dest="start", type=parse_time, help="start, inclusive (local time)")
        sub.add_argument("--to", dest="end", type=parse_time, help="end, exclusive (local time)")
        if name == "averages":
            sub.add_argument("--window", type=int, default=600, help="window in seconds (default 600)")
    sub = commands.add_parser("energy", help="energy used (and exported) per day, in kWh")
    sub.add_argument("day", help="YYYY-MM-DD, today, yesterday, or a weekday (the last one before today)")
    sub.add_argument("--days", type=int, default=1, help="this many days from DAY (default 1)")
    sub.add_argument("--unit", default="BR", help="unit id (default BR)")
    sub.add_argument("--wrap", type=float, help="the meter counter's wrap in kWh (10^D7 x D3 x E1)")
    sub.add_argument("--today", type=lambda text: parse_time(text).date(), help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    db = open_db(args.db)
    try:
        out = csv.writer(sys.stdout, lineterminator="\n")
        handler = {"sensors": cmd_sensors, "readings": cmd_readings, "averages": cmd_averages,
                   "energy": cmd_energy}[args.command]
        return handler(db, args, out)
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
