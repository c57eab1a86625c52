"""``kei status``: how the running daemon is, from a small file it keeps in the work directory.

The daemon (``StatusFile``, driven by its main loop) rewrites
``kei-status.json`` atomically (a temporary file, then ``os.replace``) every
``INTERVAL`` seconds and when a worker's state or a reader's link state
changes (a state change wakes the main loop), and removes it
at a clean stop.  It holds, per configured worker: its state (RUNNING,
BACKOFF, ...), restarts, last error, whether it is wedged (the watchdog's
rule, ``keilib.worker.wedged_workers``), and its health (``keilib.health``: counters,
gauges, stamps, states such as the B-route link, last readings).  No
secret is in it: health never holds one.

``kei status [--json] [-d WORKDIR]`` reads it and prints a short table (or
the JSON), and exits:

* 0 healthy: every worker RUNNING, every B-route link POLL, and each
  reader's newest reading younger than ``STALE_READING``;
* 1 degraded: anything else, or a file not rewritten for ``STALE_FILE``
  seconds (the main loop is stuck);
* 2 not running: no file, or its process is gone (killed: no clean stop).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from keilib import __version__
from keilib.files import TEMP_PREFIX, replace_file
from keilib.logutil import redact
from keilib.worker import wedged_workers

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Dict, Iterable, List, Optional, Tuple

logger = logging.getLogger(__name__)

STATUS_FILE = "kei-status.json"
# A rewrite a minute (and at every state change): an SD card is not worn
# by a status file, and the main loop wakes for little else.
INTERVAL = 60.0          # seconds between rewrites
STALE_FILE = 180.0       # older than this: the daemon's main loop is not running
STALE_READING = 900.0    # a reader whose last reading is older is degraded

EXIT_HEALTHY, EXIT_DEGRADED, EXIT_NOT_RUNNING = 0, 1, 2


def _state_name(state: Any) -> str:
    return str(getattr(state, "value", state))


def _health(sup: Any) -> Any:
    """The worker's Health: kept on the spec across restarts when the
    launcher does so, else the current instance's."""
    return getattr(sup.spec, "health", None) or getattr(sup.instance, "health", None)


class StatusFile:
    """The daemon's side: ``tick(supervised)`` from the main loop (returns
    the seconds until it wants to run again), ``remove()`` at a clean stop."""

    def __init__(self, path: str, clock: Any = time.time, monotonic: Any = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.monotonic = monotonic
        self.started = clock()
        self.next_write = 0.0
        self.last_states: Optional[List[Tuple[str, Optional[str]]]] = None
        self.failed = False

    def snapshot(self, supervised: Iterable[Any]) -> Dict[str, Any]:
        supervised = list(supervised)
        wedged = {label for label, _ in wedged_workers(supervised, self.monotonic())}
        workers = []
        for sup in supervised:
            health = _health(sup)
            snap = health.snapshot() if health is not None else {}
            workers.append({
                "label": sup.spec.label,
                "kind": sup.spec.cls.__name__,
                "state": _state_name(sup.state),
                "wedged": sup.spec.label in wedged,
                "restarts": snap.get("counters", {}).get("restarts", 0),
                # an exception's text may hold a URL with a key: redacted as in the log
                "last_error": redact(snap.get("states", {}).get("last_error") or _failure(sup) or ""),
                "health": snap,
            })
        return {"pid": os.getpid(), "version": __version__, "started": self.started,
                "written": self.clock(), "interval": INTERVAL, "workers": workers}

    def tick(self, supervised: Iterable[Any]) -> float:
        supervised = list(supervised)
        now = self.monotonic()
        # A worker's state or a reader's link state changing, or a new sensor,
        # is worth writing at once.
        states = [(_state_name(sup.state), dict(getattr(_health(sup), "states", {})).get("link"),
                   len(getattr(_health(sup), "readings", ())))
                  for sup in supervised]
        if now >= self.next_write or states != self.last_states:
            self.write(self.snapshot(supervised))
            self.last_states = states
            self.next_write = now + INTERVAL
        return max(0.0, self.next_write - now)

    def write(self, data: Dict[str, Any]) -> None:
        try:
            # Display only, rewritten every minute: no fsync (the SD card wears).
            replace_file(self.path, json.dumps(data, default=str).encode("utf-8"),
                         sync_dir=False, sync_file=False)
            self.failed = False
        except OSError as exc:
            if not self.failed:
                logger.warning("cannot write %s: %s", self.path, exc)
            self.failed = True

    def remove(self) -> None:
        for path in (self.path, os.path.join(os.path.dirname(self.path),
                                             TEMP_PREFIX + os.path.basename(self.path))):
            try:
                os.remove(path)
            except OSError:
                pass


def _failure(sup: Any) -> Optional[str]:
    failure = getattr(sup.instance, "failure", None)
    return "%s: %s" % (type(failure).__name__, failure) if isinstance(failure, BaseException) else None


# -- kei status ------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True          # someone else's process (kei runs as user kei)
    return True


def judge(data: Dict[str, Any], now: float) -> Tuple[int, List[str]]:
    """(exit status, reasons) for a status file's content."""
    if not _alive(int(data.get("pid", 0))):
        return EXIT_NOT_RUNNING, ["process %s is gone (kei was killed or crashed)" % data.get("pid")]
    problems = []
    age = now - float(data.get("written", 0))
    if age > STALE_FILE:
        problems.append("status not updated for %.0f s: kei's main loop is stuck" % age)
    for worker in data.get("workers", []):
        label = worker["label"]
        if worker.get("state") != "RUNNING":
            problems.append("%s is %s" % (label, worker.get("state")))
        if worker.get("wedged"):
            problems.append("%s is wedged (one step runs too long)" % label)
        health = worker.get("health", {})
        link = health.get("states", {}).get("link")
        if link is not None and link != "POLL":
            problems.append("%s: meter link %s, not polling" % (label, link))
        seen = [float(reading.get("seen", now)) for reading in health.get("readings", [])]
        if seen and now - max(seen) > STALE_READING:
            # the newest reading: some sensors (EA/EB) come only every 30 min
            problems.append("%s: no reading for %.0f min" % (label, (now - max(seen)) / 60))
    return (EXIT_DEGRADED if problems else EXIT_HEALTHY), problems


def _ago(seconds: float) -> str:
    if seconds < 120:
        return "%.0f s" % seconds
    if seconds < 7200:
        return "%.0f min" % (seconds / 60)
    return "%.1f h" % (seconds / 3600)


def table(data: Dict[str, Any], verdict: int, problems: List[str], now: float) -> str:
    words = {EXIT_HEALTHY: "HEALTHY", EXIT_DEGRADED: "DEGRADED", EXIT_NOT_RUNNING: "NOT RUNNING"}
    lines = ["kei %s (pid %s), up %s, status written %s ago: %s" % (
        data.get("version"), data.get("pid"), _ago(now - float(data.get("started", now))),
        _ago(now - float(data.get("written", now))), words[verdict])]
    rows = [("worker", "state", "restarts", "link", "last error")]
    for worker in data.get("workers", []):
        health = worker.get("health", {})
        state = worker.get("state", "?") + (" WEDGED" if worker.get("wedged") else "")
        rows.append((worker["label"], state, str(worker.get("restarts", 0)),
                     health.get("states", {}).get("link", ""), (worker.get("last_error") or "")[:60]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    readings = [(reading, worker["label"]) for worker in data.get("workers", [])
                for reading in worker.get("health", {}).get("readings", [])]
    if readings:
        lines.append("last readings:")
        for reading, _ in readings:
            lines.append("  %s %s = %s   (%s ago)" % (reading["unit"], reading["sensor"], reading["value"],
                                                    _ago(now - float(reading.get("seen", now)))))
    for worker in data.get("workers", []):
        gauges = worker.get("health", {}).get("gauges", {})
        stamps = worker.get("health", {}).get("stamps", {})
        extra = ["%s %s" % (name, value) for name, value in sorted(gauges.items())]
        extra += ["%s %s ago" % (name, _ago(now - float(value))) for name, value in sorted(stamps.items())]
        if extra:
            lines.append("%s: %s" % (worker["label"], ", ".join(extra)))
    lines += ["problem: %s" % problem for problem in problems]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    import argparse         # only for the command, not in the daemon that writes the file
    parser = argparse.ArgumentParser(prog="kei status", description=(
        "Show how the running kei is (from %s in its work directory). Exit 0 healthy, "
        "1 degraded, 2 not running." % STATUS_FILE))
    parser.add_argument("--json", action="store_true", help="print the status file's JSON, with a verdict")
    parser.add_argument("-d", "--dir", default=".", help="kei's work directory (default: here)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    path = os.path.join(args.dir, STATUS_FILE)
    now = time.time()
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        data, verdict, problems = None, EXIT_NOT_RUNNING, ["no %s: kei is not running in %s"
                                                           % (STATUS_FILE, os.path.abspath(args.dir))]
    except (OSError, ValueError) as exc:
        data, verdict, problems = None, EXIT_DEGRADED, ["%s is unreadable: %s" % (path, exc)]
    else:
        verdict, problems = judge(data, now)
    if args.json:
        print(json.dumps({"status": ["healthy", "degraded", "not running"][verdict], "problems": problems,
                          "daemon": data}, indent=2))
    elif data is None:
        print("kei: %s" % problems[0])
    else:
        print(table(data, verdict, problems, now))
    return verdict
