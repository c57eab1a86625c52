"""Back-fill bookkeeping: which of the meter's half hours kei holds, and which it still lacks.

Pure logic plus one small JSON file; no radio.  The B-route reader
(keilib/broute.py, the ``history_*`` methods) asks the meter and reports back.

Every time is the **meter's** half-hour time (from its EA stamps), never
ours, so a meter clock that differs from the box's changes nothing.

``HistoryCheckpoint`` (``broute-history.json`` in the work directory, written
atomically)::

    {"held": "2026-11-24T13:30:00",                 # newest half hour whose EA kei has
     "gaps": [["2026-11-24T12:30:00", "2026-11-24T07:00:00"], ...]}   # [newest, oldest], newest gap first

* every EA kei records live (notification or Get) goes through ``seen``: one
  later than ``held`` + 30 min opens a gap ``held + 30 min .. stamp - 30 min``
  (a stop, a pulled stick, a rejoin, a long run of misses all look the same);
* ``trim`` forgets half hours older than ``days`` before ``held`` (the meter
  keeps 100 days; kei asks for at most ``days``, default 7, at most 99);
* ``take`` removes a span once the meter has answered for it (with values or
  with "no data": a half hour the meter itself lacks cannot be filled).

Without a checkpoint (the first start ever) nothing is back-filled: the first
EA only sets ``held``.  Only EA (import) is tracked; the history reads bring
export (E4 / EC's second value) for the same half hours when the meter has it.
"""

from __future__ import annotations

import datetime
import json
import logging

from keilib.files import replace_file

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import List, Optional, Tuple

logger = logging.getLogger(__name__)

HALF_HOUR = datetime.timedelta(minutes=30)
DEFAULT_DAYS = 7
MAX_DAYS = 99           # E5 reaches 99 days back

if TYPE_CHECKING:
    Span = Tuple[datetime.datetime, datetime.datetime]     # (newest, oldest), both included


def slots(span: Span) -> int:
    return int((span[0] - span[1]) / HALF_HOUR) + 1


class HistoryCheckpoint:
    """The durable checkpoint (see the module docstring)."""

    def __init__(self, path: str, days: int = DEFAULT_DAYS):
        self.path = path
        self.days = days
        self.held: Optional[datetime.datetime] = None
        self.gaps: List[Span] = []

    # -- the file --------------------------------------------------------------
    def load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            held = data["held"]
            self.held = None if held is None else datetime.datetime.fromisoformat(held)
            self.gaps = [(datetime.datetime.fromisoformat(a), datetime.datetime.fromisoformat(b))
                         for a, b in data["gaps"]]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unusable history checkpoint %s: %s", self.path, exc)
            self.held, self.gaps = None, []

    def save(self) -> None:
        data = {"held": self.held.isoformat() if self.held else None,
                "gaps": [[a.isoformat(), b.isoformat()] for a, b in self.gaps]}
        try:
            replace_file(self.path, json.dumps(data).encode("utf-8"), sync_dir=False)
        except OSError as exc:
            logger.warning("cannot write history checkpoint %s: %s", self.path, exc)

    # -- bookkeeping -------------------------------------------------------------
    def seen(self, stamp: datetime.datetime) -> Optional[Span]:
        """A live EA for ``stamp``; returns the gap it opened, if any."""
        if self.held is not None and stamp <= self.held:
            if self._remove((stamp, stamp)):
                self.save()
            return None
        opened: Optional[Span] = None
        if self.held is not None and stamp - self.held > HALF_HOUR:
            opened = (stamp - HALF_HOUR, self.held + HALF_HOUR)
            self.gaps.insert(0, opened)
        self.held = stamp
        self.trim()
        self.save()
        return opened

    def trim(self) -> int:
        """Forget half hours older than ``days`` before ``held``; how many were dropped."""
        if self.held is None:
            return 0
        oldest = self.held - datetime.timedelta(days=self.days)
        dropped = 0
        kept: List[Span] = []
        for newest, last in self.gaps:
            if newest < oldest:
                dropped += slots((newest, last))
                continue
            if last < oldest:
                dropped += slots((oldest - HALF_HOUR, last))
                last = oldest
            kept.append((newest, last))
        self.gaps = kept
        if dropped:
            logger.info("B-route history: %d half hours older than %d days are not asked for", dropped, self.days)
        return dropped

    def target(self) -> Optional[Span]:
        """The span to ask for next: the newest gap."""
        return self.gaps[0] if self.gaps else None

    def take(self, span: Span) -> None:
        """The meter answered for ``span`` (newest, oldest): no longer missing."""
        if self._remove(span):
            self.save()

    def _remove(self, span: Span) -> bool:
        top, bottom = span
        kept: List[Span] = []
        changed = False
        for newest, oldest in self.gaps:
            if top < oldest or bottom > newest:
                kept.append((newest, oldest))
                continue
            changed = True
            if newest > top:
                kept.append((newest, top + HALF_HOUR))
            if oldest < bottom:
                kept.append((bottom - HALF_HOUR, oldest))
        self.gaps = kept
        return changed

    @property
    def missing(self) -> int:
        return sum(slots(gap) for gap in self.gaps)
