"""B-route: read a Japanese low-voltage smart meter through a Wi-SUN module.

``BrouteReader`` walks a state machine and stays connected for months::

    INIT --open--> OPEN --reset, SKVER, SKINFO, password/ID--> SETUP
    SETUP --cached PAN, or active scan--> SCAN --SKLL64, S2/S3, SKJOIN--> JOIN
    JOIN --Get D3, D7, E1--> POLL (request groups on their cycles)

    fault                                   falls back to
    port gone / I/O error                   INIT (close; wait for the port, backoff)
    module silent, FAIL, reset              OPEN (reset and set up again)
    scan finds nothing                      SCAN again, longer duration, backoff
    join fails with a cached PAN            SCAN (cache deleted)
    join fails 3 times                      SCAN
    EVENT 29 (lifetime), no EVENT 25 in 30 s  SKREJOIN; if that fails, as below
    EVENT 26/28, 3 misses in a row,
      no frame from the meter for 10 min    OPEN, then SKJOIN to the same PAN;
                                            SCAN if that join fails
    5 scans (durations 4..8) find nothing   OPEN (reset, set up again), backoff
    EVENT 32 (transmission-time limit)      POLL, sending paused until EVENT 33, or
                                            until register SFB reads 0 (checked
                                            every 5 min), or OPEN after 65 min
    D3/D7/E1 unanswered after a join        asked again every 30 s, not hourly

Every fall-back to INIT or OPEN waits first, 1 s doubling to 60 s (reset by
a successful join), so a module that fails at once is never hammered.

Every transition is logged at INFO.  A stop request is honoured within about
a second in every state; a joined session is ended with SKTERM.

Polling: each request group becomes ONE multi-property Get frame, sent on its
cycle from a monotonic schedule (no drift; a slot missed while the link was
down is skipped, not made up in a burst).  Responses are matched by TID, by
the meter's address, port 3610 and the objects 028801 -> 05FF01.  A request
with no answer in ``response_timeout`` is sent once more, then counted as a
miss.  D3 (coefficient), D7 (digits) and E1 (unit) are read at every join
before any energy value is recorded; E0/E3/EA/EB are recorded in kWh.
The meter's maker code (8A) and serial number (8D) are read once per
session and, with its MAC, kept in health states (``meter_maker``,
``meter_serial``, ``meter_mac``) for outputs that name the meter (MQTT).
An optional ``command_que`` takes ``"read"`` items: one E7 Get at once.

Records (unit ``BR``, data id ``x``)::

    E7   instantaneous power, W (negative: export)
    E8R, E8T  phase currents, A (T is absent on single-phase 2-wire meters)
    E0, E3    cumulative energy forward / reverse, kWh
    EA, EB    fixed-time cumulative energy, kWh, stamped with the meter's time
    D0, D0R   one-minute cumulative energy import / export, kWh, stamped with
              the meter's minute (Release R meters): with ``one_minute=True``
              the reader reads the meter's Get property map (9F) at each
              session start and polls D0 every 60 s if it is listed; or ask
              for it in ``requests`` ({'epc': ['D0'], 'cycle': 60}; a meter
              without it answers Get_SNA, logged once)

"No data" values (E7 0x7FFFFFFE, E8 0x7FFE, energy 0xFFFFFFFE, ...) are logged
and not recorded.  Notifications the meter sends on its own (INF 0x73: EA/EB
every 30 minutes, the instance list) are decoded and recorded; INFC (0x74) is
answered with INFC_Res (0x7A).

The scan result is cached in ``scancache.json`` in the work directory (written
atomically) and reused at the next start, which skips the minutes-long scan,
until a join with it fails.

Back-fill (keilib/backfill.py and the ``history_*`` methods): a small
checkpoint file (``history_checkpoint``, beside the scan cache) keeps the
newest half hour whose EA kei holds and the half hours still missing.  An EA
later than the next half hour (after a stop, a pulled stick, a rejoin, a run
of misses; at each session start EA is read once to see it at once) opens a
gap, which is read from the meter's history, newest first, for up to
``backfill_days`` (default 7, at most 99; 0 turns it off): EC after setting ED
(12 half hours per request) when the meter's Get property map lists EC and ED,
else E2 (+E4) after setting E5 (one day per request).  Every time involved is
the meter's own (its EA stamps), so a meter clock that differs from ours does
no harm; E5's day is derived from the meter's date and a read is put off while
that date is uncertain (around the meter's midnight).  History requests start
only when no regular poll is due within 2 s and nothing else is in flight,
count against the airtime budget and stop while it is above half the limit,
and anything in flight is dropped when the session drops.  They become EA/EB
records stamped with the meter's half-hour time and data id ``hist``
(record.HISTORY_DATA_ID); "no data" slots are skipped (logged once per
answer).  The first start ever (no checkpoint) back-fills nothing.

Route-B radios may transmit at most 360 s per hour (ARIB STD-T108).  The
reader estimates the airtime of what it sends, refuses at start-up a schedule
that could exceed the budget, and pauses sending if the hour's total nears it.

``worker_def`` entry::

    {'class': BrouteReader,
     'args': {'wisundev': WiSunRL7023('/dev/serial/by-id/usb-...', 115200,
                                      type=WiSunRL7023.IPS),   # or BP35A1(...), BP35C2(...)
              'broute_id': '00000000000000000000000000000000',  # 32 characters
              'broute_pwd': 'XXXXXXXXXXXX',                      # 12 characters
              'requests': [{'epc': ['E7'], 'cycle': 10},
                           {'epc': ['E0', 'E3'], 'cycle': 300}],
              'record_que': record_que,
              'backfill_days': 7}}                # optional: 0..99, 0 = no back-fill
"""

from __future__ import annotations

import datetime
import enum
import json
import logging
import os
import queue
from collections import deque

from keilib import echonet, validate
from keilib.backfill import DEFAULT_DAYS, HALF_HOUR, MAX_DAYS, HistoryCheckpoint, slots
from keilib.clock import Clock
from keilib.echonet import EPC, ESV, Frame, is_value
from keilib.errors import ConfigError, DeviceError, DeviceGone, DeviceTimeout, FrameError
from keilib.files import replace_file
from keilib.logutil import LogLimiter
from keilib.ports import MAX_BAUD, MIN_BAUD, PORT_PATTERN, port_problem
from keilib.record import HISTORY_DATA_ID, Record
from keilib.skstack import (BP35A1, BP35C0, BP35C2, RSWSUHAP, ECHONET_PORT, Cancelled, ErxUdp, Event,
                            SkDevice, WiSunRL7023)
from keilib.worker import Backoff, Worker

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Deque, Dict, List, Optional, Tuple

__all__ = ["BrouteReader", "WiSunRL7023", "BP35A1", "BP35C2", "BP35C0", "RSWSUHAP", "TxBudget",
           "DEFAULT_REQUESTS"]

logger = logging.getLogger(__name__)

# keilog's defaults: conversion factors hourly, power every 10 s, energy every 5 min.
DEFAULT_REQUESTS = [
    {"epc": ["D3", "D7", "E1"], "cycle": 3600},
    {"epc": ["E7"], "cycle": 10},
    {"epc": ["E0", "E3"], "cycle": 300},
]
# What a request may ask for: the values kei records or needs for conversion.
REQUESTABLE = {"D0", "D3", "D7", "E1", "E0", "E3", "E7", "E8", "EA", "EB"}
MAX_EPCS_PER_FRAME = 6          # a meter must support OPC up to 6 (AIF 2.4.4)

MAX_CYCLE = 86400.0             # seconds: a request group is polled at least once a day
SCAN_DURATIONS = (4, 5, 6, 7, 8)
JOIN_TRIES = 3
MISSES_BEFORE_REJOIN = 3
SILENCE_BEFORE_REJOIN = 600.0
STOP_SKTERM_SECONDS = 1.2       # the whole SKTERM exchange at stop (the stop budget is 2 s)
REAUTH_WAIT = 30.0
TX_BLOCK_CHECK = 300.0          # ask the module (SFB) this often while sending is paused
TX_BLOCK_MAX = 3900.0           # the limit is counted over an hour; then stop waiting
FACTORS_RETRY = 30.0
IDENTITY_CYCLE = 10 * 365 * 86400.0   # sent once per session (issue 12), never repeated
CONSOLE_AFTER = 60.0            # a module missing this long is said on the terminal too
BACKOFF_MAX = 60.0
# Back-fill (the history_* methods): a history request starts only when no
# regular poll is due within HISTORY_MARGIN s, nothing else is in flight, and
# the hour's airtime is below HISTORY_BUDGET_SHARE of the limit.
HISTORY_MARGIN = 2.0
HISTORY_BUDGET_SHARE = 0.5
HISTORY_RETRY = 30.0           # after an unanswered or refused history request
HISTORY_PAUSE = 600.0          # after HISTORY_FAILURES of them in a row
HISTORY_FAILURES = 3
HISTORY_PROBE_EVERY = 300.0    # re-read EA when the meter's date is uncertain (near midnight)
ONE_MINUTE_CYCLE = 60.0        # D0 changes once a minute


# What keiconf_broute.py ships (the simulator's credentials): a real meter
# needs the ID and password from the power company.
EXAMPLE_CREDENTIALS = ("00112233445566778899AABBCCDDEEFF", "0123456789AB")


class State(enum.Enum):
    INIT = "INIT"
    OPEN = "OPEN"
    SETUP = "SETUP"
    SCAN = "SCAN"
    JOIN = "JOIN"
    POLL = "POLL"


class Fallback(Exception):
    """Leave the current state for ``state`` (raised inside the state machine)."""

    def __init__(self, state: State, reason: str):
        super().__init__(reason)
        self.state = state
        self.reason = reason


class TxBudget:
    """The ARIB STD-T108 limit: at most 360 s of transmission per hour.

    Airtime is estimated per frame at 100 kb/s (80 us per byte) with about 80
    bytes of PHY/MAC/6LoWPAN/UDP overhead and the MAC ACK; the module's own
    count (register SFD) is the authority, this keeps kei well inside it.
    """

    LIMIT_MS = 360_000.0
    WINDOW = 3600.0
    OVERHEAD_BYTES = 80

    def __init__(self) -> None:
        self.sent: Deque[Tuple[float, float]] = deque()
        self.total_ms = 0.0

    @classmethod
    def airtime_ms(cls, payload_len: int) -> float:
        return (payload_len + cls.OVERHEAD_BYTES) * 0.08

    def record(self, now: float, payload_len: int) -> None:
        airtime = self.airtime_ms(payload_len)
        self.sent.append((now, airtime))
        self.total_ms += airtime
        self._expire(now)

    def used_ms(self, now: float) -> float:
        self._expire(now)
        return self.total_ms

    def allows(self, now: float, payload_len: int) -> bool:
        """False when this frame would take the last hour past 90 % of the limit."""
        return self.used_ms(now) + self.airtime_ms(payload_len) <= 0.9 * self.LIMIT_MS

    def _expire(self, now: float) -> None:
        while self.sent and self.sent[0][0] <= now - self.WINDOW:
            self.total_ms -= self.sent.popleft()[1]


class RequestGroup:
    """One ``{'epc': [...], 'cycle': s}`` entry and its schedule."""

    def __init__(self, epcs: List[int], cycle: float):
        self.epcs = epcs
        self.cycle = cycle
        self.next_due = 0.0

    @property
    def label(self) -> str:
        return "+".join("%02X" % epc for epc in self.epcs)

    def frame_len(self) -> int:
        return 12 + 2 * len(self.epcs)


def parse_requests(requests: Any) -> List[RequestGroup]:
    """Validate the ``requests`` argument; ConfigError names what is wrong."""
    shape = "a list of {'epc': ['E7', ...], 'cycle': seconds}"
    if not isinstance(requests, (list, tuple)) or not requests:
        raise ConfigError("argument 'requests' must be %s, got %r" % (shape, requests))
    groups = []
    for index, entry in enumerate(requests):
        where = "argument 'requests'[%d]" % index
        if not isinstance(entry, dict) or set(entry) != {"epc", "cycle"}:
            raise ConfigError("%s must be {'epc': [...], 'cycle': seconds}, got %r" % (where, entry))
        epcs, cycle = entry["epc"], entry["cycle"]
        if isinstance(epcs, str):
            epcs = [epcs]
        if not isinstance(epcs, (list, tuple)) or not epcs:
            raise ConfigError("%s: 'epc' must be a non-empty list such as ['E7'], got %r" % (where, epcs))
        codes = []
        for epc in epcs:
            name = epc.upper() if isinstance(epc, str) else ("%02X" % epc if isinstance(epc, int) else repr(epc))
            if name not in REQUESTABLE:
                raise ConfigError("%s: unknown EPC %r (known: %s)" % (where, epc, ", ".join(sorted(REQUESTABLE))))
            codes.append(int(name, 16))
        if len(codes) > MAX_EPCS_PER_FRAME:
            raise ConfigError("%s: at most %d EPCs fit one request, got %d"
                              % (where, MAX_EPCS_PER_FRAME, len(codes)))
        if len(set(codes)) != len(codes):
            raise ConfigError("%s: EPC listed twice in %r" % (where, epcs))
        try:
            validate.number("cycle", cycle, 0, MAX_CYCLE, exclusive_minimum=True)
        except ConfigError as exc:
            raise ConfigError("%s: %s (seconds)" % (where, exc)) from None
        groups.append(RequestGroup(codes, float(cycle)))
    # Worst case: every request retried once.
    per_hour_ms = sum(2 * (3600.0 / g.cycle) * TxBudget.airtime_ms(g.frame_len()) for g in groups)
    if per_hour_ms > TxBudget.LIMIT_MS:
        raise ConfigError("argument 'requests' would transmit about %.0f s per hour; Route B allows "
                          "360 s per hour (ARIB STD-T108). Use longer cycles or group EPCs into one request"
                          % (per_hour_ms / 1000))
    return groups


def frames_per_hour(groups: List[RequestGroup]) -> float:
    return sum(3600.0 / g.cycle for g in groups)


class ScanCache:
    """The meter's PAN, kept in a JSON file so a restart skips the scan."""

    def __init__(self, path: str):
        self.path = path

    def load(self) -> Optional[Dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            return {"channel": int(data["channel"]), "pan_id": int(data["pan_id"]), "addr": str(data["addr"])}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unusable scan cache %s: %s", self.path, exc)
            return None

    def save(self, channel: int, pan_id: int, addr: str, now: datetime.datetime) -> None:
        data = {"channel": channel, "pan_id": pan_id, "addr": addr,
                "saved": now.isoformat(timespec="seconds")}
        try:
            replace_file(self.path, json.dumps(data).encode("utf-8"), sync_dir=False)
        except OSError as exc:
            logger.warning("cannot write scan cache %s: %s", self.path, exc)

    def delete(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("cannot delete scan cache %s: %s", self.path, exc)


class Outstanding:
    """A Get sent and not yet answered."""

    def __init__(self, group: RequestGroup, frame: bytes, sent_at: float):
        self.group = group
        self.frame = frame
        self.sent_at = sent_at
        self.retried = False


class BrouteReader(Worker):
    """Poll a smart meter over Route B and put Records on ``record_que``.

    See the module docstring for the states, the faults and the records.
    ``port``/``baudrate`` are accepted instead of ``wisundev`` (keilog's first
    example config); they mean an RL7023 Stick-D/DSS.
    """

    PRODUCES = ("record_que",)

    def __init__(self, wisundev: Optional[SkDevice] = None, broute_id: str = "", broute_pwd: str = "",
                 requests: Any = None, record_que: "Optional[queue.Queue[Any]]" = None,
                 port: Optional[str] = None, baudrate: int = 115200,
                 scan_cache: str = "scancache.json", response_timeout: float = 10.0,
                 command_que: "Optional[queue.Queue[Any]]" = None,
                 backfill_days: int = DEFAULT_DAYS, history_checkpoint: str = "broute-history.json",
                 one_minute: bool = False,
                 clock: Optional[Clock] = None):
        super().__init__(clock=clock)
        if wisundev is None:
            if port is None:
                raise ConfigError("argument 'wisundev' is missing (e.g. WiSunRL7023(port, 115200, "
                                  "type=WiSunRL7023.IPS))")
            validate.text("port", port, PORT_PATTERN, "a device path or pyserial URL")
            validate.number("baudrate", baudrate, MIN_BAUD, MAX_BAUD, integer=True)
            wisundev = WiSunRL7023(port, baudrate, type=WiSunRL7023.DSS)
        if not isinstance(wisundev, SkDevice):
            raise ConfigError("argument 'wisundev' must be a Wi-SUN device such as WiSunRL7023(...), got %r"
                              % (wisundev,))
        # Secrets: the messages say what is wrong, never the value.
        validate.secret("broute_id", broute_id, [32], "the 32-character Route-B ID")
        validate.secret("broute_pwd", broute_pwd, range(1, 33), "the Route-B password (12 characters)")
        self.groups = parse_requests(DEFAULT_REQUESTS if requests is None else requests)
        validate.number("response_timeout", response_timeout, 0, 300, exclusive_minimum=True)   # seconds
        validate.text("scan_cache", scan_cache, r"[^\x00]+", "a file name (relative to the work directory)")
        # Silence means trouble only when something should have come: with
        # every cycle longer than SILENCE_BEFORE_REJOIN, a quiet meter is normal.
        self.silence_limit = max(SILENCE_BEFORE_REJOIN,
                                 min(g.cycle for g in self.groups) + 2 * response_timeout)
        self.device = wisundev
        self.broute_id = broute_id
        self.broute_pwd = broute_pwd
        self.record_que = record_que
        self.cache = ScanCache(os.path.join(os.getcwd(), scan_cache))
        self.response_timeout = response_timeout
        self.state = State.INIT
        self.budget = TxBudget()
        self.tid = 0
        # per-session facts
        self.meter_addr: Optional[str] = None
        self.factors_logged: Optional[Tuple[Any, ...]] = None
        self.pan: Optional[Dict[str, Any]] = None
        self.pan_from_cache = False
        self.reuse_pan = False
        self.factors = RequestGroup([EPC.COEFFICIENT, EPC.EFFECTIVE_DIGITS, EPC.E1], 3600.0)
        self.coefficient: Optional[int] = None
        self.unit_code: Optional[int] = None
        self.digits: Optional[int] = None
        self.outstanding: Dict[int, Outstanding] = {}
        self.misses = 0
        self.last_frame_at = 0.0
        self.tx_blocked = False
        self.tx_blocked_at = 0.0
        self.tx_check_at = 0.0
        self.session_lost_at: Optional[float] = None
        self.scan_attempt = 0
        self.join_failures = 0
        self.backoff = Backoff(1.0, BACKOFF_MAX)
        self.notified: Deque[Tuple[int, datetime.datetime]] = deque(maxlen=16)
        self.refusals: set = set()
        # -- issue 12 (MQTT / Home Assistant): meter identity and on-demand reads --
        # 8A (maker) and 8D (serial) once per session, into health states with the
        # meter's MAC, so outputs can name the meter without the Route-B ID.
        self.identity = RequestGroup([EPC.MAKER_CODE, EPC.SERIAL_NUMBER], IDENTITY_CYCLE)
        # "read" items put by another worker (MqttPublisher): one E7 Get now.
        if command_que is not None and not isinstance(command_que, queue.Queue):
            raise ConfigError("argument 'command_que' must be a queue.Queue, got %r" % (command_que,))
        self.command_que = command_que
        self.on_demand = RequestGroup([EPC.E7], IDENTITY_CYCLE)
        # -- end issue 12 --
        self.history_init(backfill_days, history_checkpoint, one_minute)
        self.port_missing_since: Optional[float] = None
        self.said_on_console = False
        # Garbled frames and odd answers come from outside: logged rate-limited.
        self.log_limit = LogLimiter(logger, self.clock.monotonic)

    @classmethod
    def config_warnings(cls, args: dict) -> list:
        device = args.get("wisundev")
        port = getattr(device, "port", None) or args.get("port")
        warnings = []
        problem = port_problem(port)
        if problem:
            warnings.append(problem)
        if isinstance(port, str) and not port.startswith("sim://") and \
                (args.get("broute_id"), args.get("broute_pwd")) == EXAMPLE_CREDENTIALS:
            warnings.append("broute_id and broute_pwd are the example's (the simulator's); a real meter "
                            "needs the Route-B ID and password from your power company")
        return warnings

    # -- stop: wake the port read at once (it may sleep until the next request) --
    def request_stop(self) -> None:
        super().request_stop()
        self.device.wake()

    def stop(self, timeout: float = 10.0) -> bool:
        self.request_stop()
        return super().stop(timeout)

    # -- state machine -------------------------------------------------------
    def setup(self) -> None:
        self.device.clock = self.clock
        self.device.interrupt = self._stopping

    def step(self) -> None:
        self.log_limit.flush()
        handler = {State.INIT: self.do_init, State.OPEN: self.do_open, State.SETUP: self.do_setup,
                   State.SCAN: self.do_scan, State.JOIN: self.do_join, State.POLL: self.do_poll}[self.state]
        try:
            handler()
        except Cancelled:
            return
        except Fallback as fall:
            self.transition(fall.state, fall.reason)
            if fall.state in (State.INIT, State.OPEN):
                self.back_off()
        except DeviceGone as exc:
            self.device.close()
            self.transition(State.INIT, str(exc))
            self.back_off()
        except (DeviceTimeout, DeviceError) as exc:
            self.transition(State.OPEN if self.state != State.INIT else State.INIT, str(exc))
            self.back_off()

    def back_off(self) -> None:
        """Pause before starting over (1 s doubling to 60 s, reset by a join),
        so a module that fails at once, or a port that opens and drops, is
        retried calmly instead of in a loop that floods the log."""
        delay = self.next_backoff()
        if delay > 1:
            logger.info("B-route: starting over in %g s", delay)
        self.wait(delay)

    def transition(self, state: State, reason: str) -> None:
        if state in (State.INIT, State.OPEN, State.SCAN) and self.state == State.POLL:
            self.outstanding.clear()
        if state != self.state:
            logger.info("B-route: %s -> %s (%s)", self.state.value, state.value, reason)
        self.state = state
        self.health.state("link", state.value)     # POLL: joined and polling

    def pause(self, seconds: float) -> None:
        if self.wait(seconds):
            raise Cancelled()

    def next_backoff(self) -> float:
        return self.backoff.next()

    def do_init(self) -> None:
        try:
            self.device.open()
        except DeviceGone as exc:
            delay = self.next_backoff()
            now = self.clock.monotonic()
            if self.port_missing_since is None:
                self.port_missing_since = now
            console = not self.said_on_console and now - self.port_missing_since >= CONSOLE_AFTER
            if console:
                self.said_on_console = True   # once: a person at the terminal should know
            logger.warning("B-route: %s; trying again in %g s", exc, delay, extra={"console": console})
            self.pause(delay)
            return
        self.port_missing_since = None
        self.transition(State.OPEN, "port open")

    def do_open(self) -> None:
        if not self.device.is_open:
            self.transition(State.INIT, "port closed")
            return
        try:
            self.device.reset()
            version = self.device.version()
            info = self.device.info()
        except DeviceTimeout as exc:
            delay = self.next_backoff()
            logger.warning("B-route: module does not answer (%s); resetting again in %g s", exc, delay)
            self.pause(delay)
            return
        logger.info("B-route: %s firmware %s, address %s", self.device.kind, version or "?", info[0])
        self.transition(State.SETUP, "module reset")

    def do_setup(self) -> None:
        self.device.setup(self.broute_id, self.broute_pwd)
        self.transition(State.SCAN, "Route-B ID and password set")

    def do_scan(self) -> None:
        if self.reuse_pan and self.pan is not None:
            self.reuse_pan = False
            self.pan_from_cache = True     # a failed join then means: scan
            self.transition(State.JOIN, "joining the known PAN again")
            return
        cached = self.cache.load()
        if cached is not None and self.scan_attempt == 0:
            self.pan, self.pan_from_cache = cached, True
            self.transition(State.JOIN, "using the cached scan result (channel %02X, PAN %04X)"
                            % (cached["channel"], cached["pan_id"]))
            return
        duration = SCAN_DURATIONS[min(self.scan_attempt, len(SCAN_DURATIONS) - 1)]
        self.scan_attempt += 1
        logger.info("B-route: active scan, duration %d (attempt %d)", duration, self.scan_attempt)
        found = self.device.scan(duration)
        if found is None:
            logger.warning("B-route: no smart meter found (duration %d)", duration)
            if self.scan_attempt >= len(SCAN_DURATIONS):
                # Out of range, or the module lost its settings: start over.
                self.scan_attempt = 0
                delay = self.next_backoff()
                logger.warning("B-route: giving up this round of scans; resetting the module in %g s", delay)
                self.pause(delay)
                raise Fallback(State.OPEN, "no meter found after %d scans" % len(SCAN_DURATIONS))
            return
        self.pan = {"channel": found.channel, "pan_id": found.pan_id, "addr": found.addr}
        self.pan_from_cache = False
        self.health.gauge("lqi", found.lqi)         # issue 12: link quality, as the scan saw it
        self.cache.save(found.channel, found.pan_id, found.addr, self.clock.now())
        self.transition(State.JOIN, "meter found on channel %02X, PAN %04X, LQI %02X"
                        % (found.channel, found.pan_id, found.lqi))

    def do_join(self) -> None:
        assert self.pan is not None
        self.meter_addr = self.device.link_local(self.pan["addr"])
        self.device.set_pan(self.pan["channel"], self.pan["pan_id"])
        logger.info("B-route: joining %s", self.meter_addr)
        if not self.device.join(self.meter_addr):
            self.join_failures += 1
            if self.pan_from_cache:
                self.cache.delete()
                self.scan_attempt = 0
                self.pan_from_cache = False
                raise Fallback(State.SCAN, "join with the known PAN failed; scanning")
            if self.join_failures >= JOIN_TRIES:
                self.join_failures = 0
                raise Fallback(State.SCAN, "join failed %d times; scanning again" % JOIN_TRIES)
            # S6's advice: a meter may refuse a join right after a session ended.
            logger.warning("B-route: join failed (EVENT 24); trying again in 10 s")
            self.pause(10)
            return
        self.join_failures = 0
        self.scan_attempt = 0
        self.backoff.reset()
        self.health.state("meter_mac", self.pan["addr"])     # issue 12: the meter's identity
        self.start_session()
        self.transition(State.POLL, "PANA session established")

    def start_session(self) -> None:
        now = self.clock.monotonic()
        self.outstanding.clear()
        self.misses = 0
        self.last_frame_at = now
        self.tx_blocked = False
        self.session_lost_at = None
        self.coefficient = self.unit_code = self.digits = None
        # The conversion factors first, then every group from now on.
        self.factors.next_due = now
        self.identity.next_due = now          # issue 12
        for group in self.groups:
            group.next_due = now
        self.history_session()

    # -- polling ---------------------------------------------------------------
    def do_poll(self) -> None:
        now = self.clock.monotonic()
        if self.session_lost_at is not None and now - self.session_lost_at > REAUTH_WAIT:
            logger.info("B-route: no re-authentication within %g s; SKREJOIN", REAUTH_WAIT)
            if self.device.rejoin():
                self.session_lost_at = None
                self.last_frame_at = self.clock.monotonic()
                return
            self.rejoin("re-authentication failed")
        if self.tx_blocked:
            # While the module may not transmit, silence proves nothing.
            self.last_frame_at = max(self.last_frame_at, now - self.silence_limit / 2)
            self.check_tx_block(now)
        elif now - self.last_frame_at > self.silence_limit:
            self.rejoin("no frame from the meter for %.0f s" % (now - self.last_frame_at))
            return
        self.expire_requests(now)
        self.send_due(now)
        self.take_command(now)                 # issue 12
        self.history_step(now)                 # issue 13: back-fill, only when no poll is due
        # Sleep until something is due or the meter sends; a stop wakes it (stop()).
        wait = self.seconds_to_next(now)
        if self.command_que is not None or self.history_busy():
            wait = min(wait, 1.0)              # a read command, a back-fill step: within a second
        item = self.device.receive(timeout=max(0.05, wait))
        if item is not None:
            self.handle(item)

    def take_command(self, now: float) -> None:
        """Issue 12: a "read" on ``command_que`` sends one E7 Get at once (the
        sender rate-limits; the airtime budget still applies). Never blocks."""
        if self.command_que is None or self.unit_code is None or self.tx_blocked:
            return
        try:
            command = self.command_que.get_nowait()
        except queue.Empty:
            return
        if command != "read":
            logger.warning("B-route: unknown command %r on command_que; ignored", command)
        elif all(o.group is not self.on_demand for o in self.outstanding.values()):
            logger.info("B-route: reading E7 now (command)")
            self.send_group(self.on_demand, now)

    def check_tx_block(self, now: float) -> None:
        """EVENT 33 can be lost (garbled line, module reset during the limit):
        ask the module (register SFB, no radio) every few minutes, and give up
        waiting after the limit's one-hour window."""
        if now < self.tx_check_at:
            return
        self.tx_check_at = now + TX_BLOCK_CHECK
        if now - self.tx_blocked_at > TX_BLOCK_MAX:
            self.tx_blocked = False
            self.rejoin("still no EVENT 33 %.0f s after EVENT 32" % (now - self.tx_blocked_at))
        if self.device.read_register("SFB").strip() in ("0", "00"):
            logger.info("B-route: the module says its transmission-time limit is over (SFB 0)")
            self.tx_blocked = False

    def seconds_to_next(self, now: float) -> float:
        """Until do_poll has work: an answer overdue; while sending is paused
        (EVENT 32) the next look at the pause's end, otherwise the silence
        limit and a request due (or, with the session lost, the
        re-authentication deadline).  Anything new that do_poll does at a
        set time must add its due time here: the reader sleeps until then."""
        dues = [o.sent_at + self.response_timeout for o in self.outstanding.values()]
        if self.tx_blocked:
            dues.append(self.tx_check_at)
        else:
            dues.append(self.last_frame_at + self.silence_limit)
            if self.session_lost_at is not None:
                dues.append(self.session_lost_at + REAUTH_WAIT)
            else:
                dues += [g.next_due for g in self.active_groups()]
        return max(0.0, min(dues) - now)

    def active_groups(self) -> List[RequestGroup]:
        # Until D3/D7/E1 are known, energy groups wait (nothing in kWh before).
        if self.unit_code is None:
            return [self.factors]
        return self.groups + [self.identity]       # identity: issue 12

    def send_due(self, now: float) -> None:
        if self.tx_blocked or self.session_lost_at is not None:
            return
        busy = {id(o.group) for o in self.outstanding.values()}
        for group in self.active_groups():
            if group.next_due > now or id(group) in busy:
                continue
            # Next slot on the fixed grid; slots missed while down are skipped.
            missed = int((now - group.next_due) // group.cycle)
            group.next_due += (missed + 1) * group.cycle
            self.send_group(group, now)

    def send_group(self, group: RequestGroup, now: float, retry_of: Optional[Outstanding] = None) -> None:
        if not self.budget.allows(now, group.frame_len()):
            logger.warning("B-route: transmission budget nearly used (%.0f s in the last hour); skipping %s",
                           self.budget.used_ms(now) / 1000, group.label)
            return
        self.tid = (self.tid + 1) & 0xFFFF
        frame = echonet.get_request(self.tid, group.epcs).encode()
        assert self.meter_addr is not None
        self.budget.record(now, len(frame))
        sent = self.device.sendto(self.meter_addr, frame)
        entry = Outstanding(group, frame, now)
        if retry_of is not None:
            entry.retried = True
        if not sent:
            logger.info("B-route: sending %s failed (EVENT 21 01)", group.label)
            entry.sent_at = now - self.response_timeout + 2.0   # try again soon
        self.outstanding[self.tid] = entry

    def expire_requests(self, now: float) -> None:
        for tid, entry in list(self.outstanding.items()):
            if now - entry.sent_at < self.response_timeout:
                continue
            del self.outstanding[tid]
            if self.tx_blocked:
                # The module refused or withheld it (EVENT 32): not the meter's fault.
                logger.debug("B-route: %s unanswered during the transmission-time limit", entry.group.label)
                continue
            if not entry.retried:
                logger.info("B-route: no answer to %s (TID %04X); asking again", entry.group.label, tid)
                self.send_group(entry.group, now, retry_of=entry)
                continue
            self.misses += 1
            logger.warning("B-route: %s missed (%d in a row)", entry.group.label, self.misses)
            if entry.group is self.factors and self.unit_code is None:
                # Nothing else is polled until the energy unit is known: ask again soon.
                entry.group.next_due = min(entry.group.next_due, now + FACTORS_RETRY)
            if self.misses >= MISSES_BEFORE_REJOIN:
                self.rejoin("%d requests in a row got no answer" % self.misses)
                return

    def rejoin(self, reason: str) -> None:
        """Reset the module and join the same PAN again; scan if that fails.

        Going through OPEN costs a few commands and no radio time, and it also
        recovers a module that reset itself (lost password, ID and echo setting).
        """
        self.outstanding.clear()
        self.reuse_pan = True
        raise Fallback(State.OPEN, reason)

    def handle(self, item: Any) -> None:
        if isinstance(item, Event):
            self.handle_event(item)
        elif isinstance(item, ErxUdp):
            if item.sender == self.meter_addr:
                self.last_frame_at = self.clock.monotonic()
            if item.rport == ECHONET_PORT and item.lport == ECHONET_PORT and item.sender == self.meter_addr:
                self.handle_frame(item.data)
            else:
                logger.debug("B-route: ignored UDP from %s port %04X", item.sender, item.rport)

    def handle_event(self, event: Event) -> None:
        num = event.num
        if num == 0x29:
            logger.info("B-route: PANA session lifetime ended (EVENT 29); waiting for re-authentication")
            self.session_lost_at = self.clock.monotonic()
        elif num == 0x25:
            if self.session_lost_at is not None:
                logger.info("B-route: session re-authenticated (EVENT 25)")
            self.session_lost_at = None
        elif num == 0x24:
            if self.session_lost_at is not None:
                self.rejoin("re-authentication failed (EVENT 24)")
        elif num in (0x26, 0x28):
            self.rejoin("the meter ended the session (EVENT %02X)" % num)
        elif num == 0x32:
            logger.warning("B-route: the module reached its transmission-time limit (EVENT 32); "
                           "sending paused, still receiving")
            self.tx_blocked = True
            self.tx_blocked_at = self.clock.monotonic()
            self.tx_check_at = self.tx_blocked_at + TX_BLOCK_CHECK
        elif num == 0x33:
            logger.info("B-route: transmission-time limit lifted (EVENT 33)")
            self.tx_blocked = False
            now = self.clock.monotonic()
            for entry in self.outstanding.values():
                entry.sent_at = min(entry.sent_at, now)

    def handle_frame(self, data: bytes) -> None:
        try:
            frame = Frame.decode(data)
        except FrameError as exc:
            self.log_limit.warning("the meter link", "malformed frames",
                                   "B-route: malformed ECHONET frame skipped (%s): %s", exc, data.hex().upper()[:80])
            return
        if frame.seoj != echonet.METER:
            if frame.esv == ESV.INF and frame.find(0xD5) is not None:
                logger.info("B-route: the meter announced its instance list")
            return
        if frame.deoj != echonet.CONTROLLER:
            return
        now = self.clock.now().replace(microsecond=0)
        if self.history_answer(frame, now):
            return
        if frame.is_notification:
            if frame.esv == ESV.INFC:
                self.answer_infc(frame)
            self.record_properties(frame, now, notification=True)
            return
        entry = self.outstanding.pop(frame.tid, None)
        if entry is None:
            logger.debug("B-route: answer with unknown TID %04X ignored (late or duplicated)", frame.tid)
            return
        requested = [p.epc for p in frame.properties]
        if requested != entry.group.epcs:
            self.log_limit.warning("the meter link", "mismatched answers",
                                   "B-route: answer to TID %04X has EPCs %s, asked %s; skipped",
                                   frame.tid, requested, entry.group.epcs)
            return
        self.misses = 0
        if frame.is_failure:
            refused = tuple(p.epc for p in frame.properties if not p.edt)
            level = logging.DEBUG if refused in self.refusals else logging.INFO
            self.refusals.add(refused)
            logger.log(level, "B-route: the meter cannot answer %s (Get_SNA)",
                       " ".join("%02X" % e for e in refused))
        self.record_properties(frame, now)

    def answer_infc(self, frame: Frame) -> None:
        if self.meter_addr is None:
            return
        if self.tx_blocked:
            logger.info("B-route: INFC (TID %04X) left unanswered: the module may not transmit now", frame.tid)
            return
        reply = echonet.infc_response(frame).encode()
        self.budget.record(self.clock.monotonic(), len(reply))
        if self.device.sendto(self.meter_addr, reply):
            logger.debug("B-route: INFC (TID %04X) answered", frame.tid)
        else:
            logger.info("B-route: the answer to INFC (TID %04X) could not be sent (EVENT 21 01)", frame.tid)

    def record_properties(self, frame: Frame, now: datetime.datetime, notification: bool = False) -> None:
        for prop in frame.properties:
            if not prop.edt:
                if prop.epc == EPC.COEFFICIENT and frame.is_failure:
                    self.coefficient = 1   # D3 is optional; a meter without it means 1
                continue
            try:
                value = echonet.decode_meter_property(prop.epc, prop.edt)
            except FrameError as exc:
                self.log_limit.warning("EPC %02X" % prop.epc, "skipped properties",
                                       "B-route: property %02X skipped: %s", prop.epc, exc)
                continue
            self.record_value(prop.epc, value, now, notification)

    def record_value(self, epc: int, value: Any, now: datetime.datetime, notification: bool) -> None:
        name = "%02X" % epc
        if epc == EPC.COEFFICIENT:
            self.coefficient = value
        elif epc == EPC.EFFECTIVE_DIGITS:
            self.digits = value
        elif epc == EPC.E1:
            self.unit_code = value.code
            if self.coefficient is None:
                self.coefficient = 1
            factors = (value.kwh, self.coefficient, self.digits)
            # issue 12: the energy step (kWh per count) sets the display precision
            self.health.state("energy_step", str(value.kwh * self.coefficient))
            # Logged at INFO once, and again only if the meter changes them (a
            # config may also poll D3/D7/E1 hourly, as keilog's README did).
            level = logging.DEBUG if factors == self.factors_logged else logging.INFO
            self.factors_logged = factors
            logger.log(level, "B-route: energy unit %s kWh, coefficient %s, %s digits", *factors)
        elif epc == EPC.MAKER_CODE:                  # issue 12: the meter's identity
            self.health.state("meter_maker", "%06X" % value)
        elif epc == EPC.SERIAL_NUMBER:
            self.health.state("meter_serial", value)
        elif epc == EPC.E7:
            self.put(now, "E7", value)
        elif epc == EPC.E8:
            self.put(now, "E8R", value.r)
            if is_value(value.t) or value.t != echonet.NO_DATA:
                self.put(now, "E8T", value.t)    # single-phase 2-wire: T is simply absent
        elif epc in (EPC.E0, EPC.E3):
            self.put(now, name, self.kwh(name, value))
        elif epc == EPC.ONE_MINUTE_ENERGY:
            # Release R meters: import (and export) at the last whole minute, the meter's stamp
            self.put(value.timestamp, "D0", self.kwh("D0", value.normal))
            if is_value(value.reverse):
                self.put(value.timestamp, "D0R", self.kwh("D0R", value.reverse))
        elif epc in (EPC.EA, EPC.EB):
            key = (epc, value.timestamp)
            if notification and key in self.notified:
                logger.debug("B-route: duplicate notification of %s %s ignored", name, value.timestamp)
                return
            self.notified.append(key)
            self.put(value.timestamp, name, self.kwh(name, value.raw))
            if epc == EPC.EA and is_value(value.raw):
                self.history_seen(value.timestamp)

    def kwh(self, name: str, raw: Any) -> Any:
        if not is_value(raw):
            return raw
        if self.unit_code is None:
            logger.info("B-route: %s arrived before the energy unit (E1) is known; skipped", name)
            return None
        return round(echonet.energy_kwh(raw, self.coefficient or 1, self.unit_code), 4)

    def put(self, stamp: datetime.datetime, sensor: str, value: Any, data_id: str = "x") -> None:
        if value is None:
            return
        if not is_value(value):
            self.log_limit.message(logging.INFO, sensor, "'no data' values",
                                   "B-route: the meter reports %s for %s; not recorded", value, sensor)
            return
        try:
            record = Record(stamp, "BR", sensor, value, data_id)
        except ValueError as exc:   # out of the accepted range (keilib.record.VALUE_LIMIT)
            self.log_limit.warning(sensor, "out-of-range values", "B-route: %s not recorded: %s", sensor, exc)
            return
        logger.debug("B-route: %s", record.to_raw_line())
        self.health.reading(record)
        if self.record_que is None:
            return
        # Wait for room in short slices, so a stop is still honoured promptly.
        for _ in range(10):
            try:
                self.record_que.put(record, timeout=0.5)
                self.health.count("out")
                return
            except queue.Full:
                if self.stopping:
                    break
        self.health.count("dropped")
        logger.error("B-route: record queue full for 5 s; reading lost: %s", record.to_raw_line())

    # -- back-fill from the meter's history (issue 13) -------------------------------
    # Kept apart from polling: do_poll calls history_step, handle_frame offers
    # every frame to history_answer first, record_value reports each live EA
    # to history_seen, start_session calls history_session.
    def history_init(self, days: int, checkpoint: str, one_minute: bool = False) -> None:
        validate.number("backfill_days", days, 0, MAX_DAYS, integer=True)      # 0: no back-fill
        validate.text("history_checkpoint", checkpoint, r"[^\x00]+", "a file name (beside the scan cache)")
        # Beside the scan cache (the work directory unless scan_cache names another).
        self.history = HistoryCheckpoint(os.path.join(os.path.dirname(self.cache.path), checkpoint), days)
        self.history.load()
        self.history_enabled = days > 0
        self.history_get_map: Optional[Tuple[int, ...]] = None   # the meter's 0x9F
        self.history_use_ec = True
        self.history_pending: Optional[Dict[str, Any]] = None
        self.history_meter_time: Optional[Tuple[datetime.datetime, float]] = None   # (EA stamp, our monotonic)
        self.history_probe_at: Optional[float] = None
        self.history_resume_at = 0.0
        self.history_failures = 0
        # one_minute: poll D0 every ONE_MINUTE_CYCLE s once 9F shows the meter has it.
        self.one_minute = validate.flag("one_minute", one_minute)
        self.one_minute_group: Optional[RequestGroup] = None

    def history_session(self) -> None:
        """A new session: nothing in flight; read 9F and EA again first."""
        self.history_pending = None
        self.history_probe_at = self.clock.monotonic()
        self.history_failures = 0
        self.history_resume_at = 0.0

    def history_seen(self, stamp: datetime.datetime) -> None:
        """A live EA: the meter's clock, and maybe a gap."""
        self.history_meter_time = (stamp, self.clock.monotonic())
        gap = self.history.seen(stamp)
        if gap is not None and self.history_enabled:
            logger.info("B-route history: the half hours %s .. %s are missing; reading them from the meter",
                        gap[1].strftime("%Y/%m/%d %H:%M"), gap[0].strftime("%Y/%m/%d %H:%M"))

    def history_busy(self) -> bool:
        """Back-fill work may be waiting (a request out, a gap or a probe to
        read): do_poll must come back soon rather than sleep until a poll."""
        if not (self.history_enabled or self.one_minute) or self.unit_code is None:
            return False
        probe_wanted = self.history_probe_at is not None and (
            (self.history_enabled and self.history.held is not None)
            or (self.one_minute and self.one_minute_group is None))
        return (self.history_pending is not None or probe_wanted
                or (self.history_enabled and self.history.target() is not None))

    def history_step(self, now: float) -> None:
        if not (self.history_enabled or self.one_minute) or self.unit_code is None or self.tx_blocked \
                or self.session_lost_at is not None:
            return
        pending = self.history_pending
        if pending is not None:
            if now - pending["sent_at"] >= self.response_timeout:
                self.history_failed(now, "no answer to %s" % pending["label"])
            return
        if now < self.history_resume_at or self.outstanding:
            return
        if any(group.next_due - now < HISTORY_MARGIN for group in self.active_groups()):
            return
        if self.budget.used_ms(now) > HISTORY_BUDGET_SHARE * TxBudget.LIMIT_MS:
            return
        target = self.history.target() if self.history_enabled else None
        # Read 9F and EA (the meter's latest half hour: a gap shows at once) when
        # a session starts with a checkpoint (never on the very first start: no
        # gap can exist, and the next EA notification sets the checkpoint), or
        # when a gap needs the property map.
        probe_due = self.history_probe_at is not None and now >= self.history_probe_at \
            and ((self.history.held is not None and self.history_enabled)
                 or (self.one_minute and self.one_minute_group is None))
        if probe_due or (target is not None and self.history_get_map is None):
            self.history_probe_at = None
            self.history_send(now, "probe", echonet.get_request(0, [EPC.GET_MAP, EPC.EA]), {})
            return
        if target is None:
            return
        if self.history_use_ec:
            count = min(slots(target), echonet.HISTORY2_MAX_POINTS[0xED])
            edt = echonet.encode_history_request(target[0], count)
            self.history_send(now, "set ED", echonet.set_request(0, [(EPC.ED, edt)]),
                              {"epc": EPC.EC})
            return
        meter_date = self.history_meter_date(now)
        if meter_date is None:
            return
        day = (meter_date - target[0].date()).days
        if not 0 <= day <= MAX_DAYS:
            logger.info("B-route history: %s is out of the meter's reach (day %d); skipped", target[0].date(), day)
            self.history.take(target)
            return
        self.history_send(now, "set E5", echonet.set_request(0, [(EPC.E5, bytes([day]))]),
                          {"epc": EPC.E2, "day": day, "date": target[0].date()})

    def one_minute_setup(self, get_map: Tuple[int, ...]) -> None:
        """``one_minute=True``: poll D0 when the meter's Get property map lists it."""
        if not self.one_minute or self.one_minute_group is not None:
            return
        if EPC.ONE_MINUTE_ENERGY not in get_map:
            logger.info("B-route: the meter has no one-minute energy (D0); not polled")
            self.one_minute = False
            return
        self.one_minute_group = RequestGroup([EPC.ONE_MINUTE_ENERGY], ONE_MINUTE_CYCLE)
        self.one_minute_group.next_due = self.clock.monotonic()
        self.groups.append(self.one_minute_group)
        logger.info("B-route: the meter has one-minute energy (D0); polling it every %g s", ONE_MINUTE_CYCLE)

    def history_meter_date(self, now: float) -> Optional[datetime.date]:
        """The meter's date, when it is certain: its last EA stamp T was at most
        30 min old when seen, so the meter's time is below T + 30 min + elapsed."""
        if self.history_meter_time is None:
            return None
        stamp, seen_at = self.history_meter_time
        latest = stamp + HALF_HOUR + datetime.timedelta(seconds=now - seen_at)
        if latest.date() == stamp.date():
            return stamp.date()
        # Around the meter's midnight E5's day would be ambiguous: read EA again
        # (at once if the last one is old, else a few minutes later).
        if self.history_probe_at is None:
            self.history_probe_at = now + HISTORY_PROBE_EVERY if now - seen_at < HISTORY_PROBE_EVERY else now
        return None

    def history_send(self, now: float, label: str, frame: Frame, plan: Dict[str, Any]) -> None:
        if self.meter_addr is None:
            return
        self.tid = (self.tid + 1) & 0xFFFF
        data = Frame(self.tid, frame.seoj, frame.deoj, frame.esv, frame.properties).encode()
        self.budget.record(now, len(data))
        self.health.count("history_frames")
        self.health.count("history_airtime_us", int(TxBudget.airtime_ms(len(data)) * 1000))
        self.history_pending = dict(plan, tid=self.tid, label=label, sent_at=now)
        if not self.device.sendto(self.meter_addr, data):
            self.history_failed(now, "sending %s failed (EVENT 21 01)" % label)

    def history_failed(self, now: float, reason: str) -> None:
        self.history_pending = None
        self.history_failures += 1
        pause = HISTORY_PAUSE if self.history_failures >= HISTORY_FAILURES else HISTORY_RETRY
        logger.info("B-route history: %s; trying again in %g s", reason, pause)
        self.history_resume_at = now + pause
        if self.history_failures >= HISTORY_FAILURES:
            self.history_failures = 0

    def history_answer(self, frame: Frame, now: datetime.datetime) -> bool:
        """Handle the answer to the history request in flight; False if ``frame`` is not one."""
        pending = self.history_pending
        if pending is None or frame.is_notification or frame.tid != pending["tid"]:
            return False
        self.history_pending = None
        self.misses = 0
        mono = self.clock.monotonic()
        label = pending["label"]
        if label == "probe":
            for prop in frame.properties:
                if prop.epc == EPC.GET_MAP and prop.edt:
                    self.history_get_map = echonet.decode_property_map(prop.edt)
                    use_ec = EPC.EC in self.history_get_map and EPC.ED in self.history_get_map
                    self.history_use_ec = use_ec
                    logger.info("B-route history: %s", "the meter has EC/ED (12 half hours per request)"
                                if use_ec else "the meter has no EC/ED; back-fill reads E5 + E2/E4 "
                                "(one day per request)")
                    self.one_minute_setup(self.history_get_map)
            self.record_properties(Frame(frame.tid, frame.seoj, frame.deoj, frame.esv,
                                         tuple(p for p in frame.properties if p.epc == EPC.EA)), now)
            return True
        if label.startswith("set"):
            if frame.esv != ESV.SET_RES:
                if pending["epc"] == EPC.EC:
                    logger.warning("B-route history: the meter refused ED; using E5 + E2/E4 instead")
                    self.history_use_ec = False
                    return True
                self.history_failed(mono, "the meter refused E5 = %d" % pending["day"])
                return True
            epcs = [pending["epc"]]
            if pending["epc"] == EPC.E2 and self.history_get_map and EPC.E4 in self.history_get_map:
                epcs.append(EPC.E4)
            plan = {key: value for key, value in pending.items() if key not in ("tid", "label", "sent_at")}
            self.history_send(mono, "get " + "+".join("%02X" % e for e in epcs),
                              echonet.get_request(0, epcs), plan)
            return True
        try:
            values = {prop.epc: echonet.decode_meter_property(prop.epc, prop.edt)
                      for prop in frame.properties if prop.edt}
        except FrameError as exc:
            self.history_failed(mono, "malformed history answer (%s)" % exc)
            return True
        if pending["epc"] == EPC.EC:
            history = values.get(EPC.EC)
            points = history.points() if history is not None else []
        else:
            points = self.history_daily_points(pending, values)
        if not points:
            self.history_failed(mono, "the answer to %s held no usable history" % label)
            return True
        self.history_failures = 0
        self.history_store(points)
        return True

    def history_daily_points(self, pending: Dict[str, Any], values: Dict[int, Any]) -> List[Tuple[Any, ...]]:
        """E2 (+E4) -> [(time, import raw, export raw)] for the day the meter reports."""
        daily = values.get(EPC.E2)
        if daily is None or not is_value(daily.day):
            logger.info("B-route history: E2 carries no day (the meter did not take E5)")
            return []
        if daily.day != pending["day"]:
            # E5 changed between our Set and Get (another controller?): the data is
            # that day's; it is used, and the day asked for is read again later.
            logger.info("B-route history: asked for day %d, the meter reports day %d", pending["day"], daily.day)
        meter_date = pending["date"] + datetime.timedelta(days=pending["day"])
        reverse = values.get(EPC.E4)
        if reverse is not None and reverse.day != daily.day:
            reverse = None
        times = daily.slot_times(meter_date)
        exports = reverse.values if reverse is not None else [echonet.NO_DATA] * len(times)
        return [(stamp, normal, export) for stamp, normal, export in zip(times, daily.values, exports)]

    def history_store(self, points: List[Tuple[Any, ...]]) -> None:
        """Record the points that fall in a gap; the span the meter answered for is done
        (a "no data" half hour inside it is one the meter itself lacks)."""
        stored = missing = 0
        for stamp, normal, export in points:
            if not any(low <= stamp <= high for high, low in self.history.gaps):
                continue
            if not is_value(normal):
                missing += 1
                continue
            self.put(stamp, "EA", self.kwh("EA", normal), HISTORY_DATA_ID)
            if is_value(export):
                self.put(stamp, "EB", self.kwh("EB", export), HISTORY_DATA_ID)
            stored += 1
        if not stored and not missing:
            # The meter answered for other times than asked: do not ask for ever.
            self.history_failed(self.clock.monotonic(), "the answer covered none of the missing half hours")
            return
        if missing:
            logger.info("B-route history: the meter has no data for %d half hours", missing)
        answered = [stamp for stamp, _, _ in points]
        self.history.take((max(answered), min(answered)))
        logger.info("B-route history: %d half hours read; %d still missing", stored, self.history.missing)

    # -- shutdown ----------------------------------------------------------------
    def cleanup(self) -> None:
        self.log_limit.flush(final=True)
        if self.state == State.POLL and self.device.is_open:
            try:
                self.device.interrupt = None
                ended = self.device.terminate(timeout=STOP_SKTERM_SECONDS)
                logger.info("B-route: session %s (SKTERM)", "terminated" if ended else "ended without EVENT 27")
            except (DeviceError, Cancelled) as exc:
                logger.info("B-route: SKTERM at stop failed: %s", exc)
        self.device.close()
