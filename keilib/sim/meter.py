"""A low-voltage smart electric energy meter (class 0x0288, Release F), simulated.

No I/O, no threads, no clock: every call takes the local time ``now`` (a naive
datetime) from the caller, normally the Wi-SUN module emulator running on a
possibly scaled clock.  The meter answers ECHONET Lite frames as bytes::

    meter = SmartMeter(seed=1, reverse=False)
    replies = meter.handle(request_bytes, now)      # list of response frames (bytes)
    meter.instance_list_inf()                       # INF D5 after PANA join (TID 0)
    meter.notifications_due(now)                    # INF/INFC of EA (+EB) per :00/:30 crossed

The load is a pure function of (seed, time), so the same seed gives the same
readings whatever order the questions come in:

* time is cut into 10-second steps; the power (E7) is constant within a step.
  Each half hour ("bucket") has a base load (standby + a daily shape with
  morning and evening peaks), seeded appliance bursts of a few minutes, and a
  zero-sum jitter, all drawn from ``random.Random`` seeded with (seed, bucket);
* with ``reverse=True`` a solar array (``solar_peak_w``, a sine from 06:00 to
  18:00 with seeded clouds) is subtracted, so E7 goes negative at midday;
* energy is the exact integral of the power in watt-seconds (integers):
  positive steps feed E0, negative steps feed E3.  A raw count is
  ``floor(Ws / (D3 x E1 x 3.6e6))`` modulo ``10**digits`` (D7), so E0 never
  decreases except at that wrap, and the history (E2/E4/EA/EB/EC) is the
  same function read at half-hour boundaries;
* the counters are anchored at ``start`` (default: the first ``now`` the
  meter sees) where E0 = ``start_kwh`` and E3 = ``start_reverse_kwh``; times
  before the anchor run the integral backwards, so a small start value read
  far enough back wraps below 0 to 10**digits - 1, like any wrap;
* currents (E8) are power / 100 V in 0.1 A steps, split between R and T
  (single-phase 3-wire), or R only with T = "no data" when ``two_wire=True``.

Behaviour on the wire (shared/docs/echonet.md):

* Get -> Get_Res; if any EPC is unsupported, Get_SNA carrying the supported
  values in request order and the refused EPCs with PDC 0 (sections 1.4, 4.5);
  any number of EPCs per request (the spec requires at least 6);
* EC points in the future or older than 100 days (HISTORY_DEPTH) read "no data";
* SetC of 81, E5 (0..99) and ED (mm 00/30, 1..12 points) -> Set_Res; anything
  else -> SetC_SNA echoing the refused EDT; SetI answers only on failure;
* E5 starts at 0xFF (never set): E2/E4 then report day 0x00FF with 48 "no
  data" slots; ED starts at its default, and EC then reports the default value;
* INF_REQ -> INF (or INF_SNA); Get/INF_REQ on the node profile 0EF001
  (D5, D6, ...) works the same way;
* frames for an EOJ that does not exist here, INF/INFC/responses sent to the
  meter, and malformed frames get no answer (an INFC_Res clears the pending
  INFC it acknowledges);
* ``one_minute=True``: a Release R meter with D0 (import and export counts at
  the last whole minute, with that minute; export "no data" without reverse);
* ``history2=False``: a meter without the optional EC/ED (not in its Get and
  Set property maps; Get refused, SetC ED -> SetC_SNA);
* ``overrides`` (EPC -> EDT bytes) pins what the meter object sends for
  those EPCs, in answers and notifications, to replay the worked examples
  byte for byte; the pure accessors ignore overrides.

Introspection: ``served`` (a bounded deque of ``Served(time, esv, epc,
value)``, the decoded value of every meter property sent), ``pending_infc``,
and the pure accessors ``power_w``, ``currents_a``, ``energy_raw``,
``reverse_energy_raw``, ``energy_ws``, ``fixed_time``.

One lock serialises the public methods, so the emulator may call
``handle`` and ``notifications_due`` from different threads.
"""

from __future__ import annotations

import collections
import datetime
import math
import random
import threading
from decimal import Decimal
from typing import Dict, List, NamedTuple, Optional, Tuple

from keilib import echonet as el
from keilib.echonet import ESV, Frame, NO_DATA, Property
from keilib.errors import FrameError

STEP_SECONDS = 10
BUCKET_SECONDS = 1800
STEPS_PER_BUCKET = BUCKET_SECONDS // STEP_SECONDS
_EPOCH = datetime.datetime(2000, 1, 1)
_ONE_SECOND = datetime.timedelta(seconds=1)
_HALF_HOUR = datetime.timedelta(minutes=30)
# A clock that jumps far ahead must not flood the link with stale notices.
MAX_NOTIFICATION_BACKLOG = 48
# The meter remembers E2/E4's 100 days; EC points older than this read "no data"
# (and a far-past ED cannot make it integrate for years).
HISTORY_DEPTH = datetime.timedelta(days=100)
_JITTER_BITS = 5   # jitter amplitude 0..31 W

# The Release F meter's maps (echonet.md section 4.3), E3/E4/EB only with reverse.
_REVERSE_EPCS = (0xE3, 0xE4, 0xEB)
_GET_EPCS = (0x80, 0x81, 0x82, 0x88, 0x8A, 0x8D, 0x97, 0x98, 0x9D, 0x9E, 0x9F, 0xD3, 0xD7,
             0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE7, 0xE8, 0xEA, 0xEB, 0xEC, 0xED)
_SET_EPCS = (0x81, 0xE5, 0xED)
_ANNO_EPCS = (0x80, 0x81, 0x88)


class Served(NamedTuple):
    time: datetime.datetime
    esv: int
    epc: int
    value: object   # decoded with echonet.decode_meter_property (bytes if undecodable)


def _seconds(now: datetime.datetime) -> int:
    """Whole seconds since 2000-01-01 (the meter measures in whole seconds)."""
    return (now - _EPOCH) // _ONE_SECOND


def _half_hour_floor(now: datetime.datetime) -> datetime.datetime:
    return now.replace(minute=now.minute - now.minute % 30, second=0, microsecond=0)


class SmartMeter:
    """A deterministic Route-B smart meter; see the module docstring."""

    def __init__(self, seed: int = 1, reverse: bool = False, coefficient: Optional[int] = 1,
                 unit_code: int = 0x01, digits: int = 6, start_kwh: float = 1314.0,
                 start_reverse_kwh: float = 500.0, start: Optional[datetime.datetime] = None,
                 two_wire: bool = False, solar_peak_w: int = 3000, infc: bool = False,
                 maker_code: int = 0x000016, serial_number: Optional[str] = None,
                 overrides: Optional[Dict[int, bytes]] = None, served_maxlen: int = 1000,
                 history2: bool = True, one_minute: bool = False):
        if unit_code not in el.ENERGY_UNITS:
            raise ValueError("unknown E1 unit code %r" % (unit_code,))
        if not 1 <= digits <= 8:
            raise ValueError("digits must be 1..8")
        if coefficient is not None and not 1 <= coefficient <= 999_999:
            raise ValueError("coefficient must be 1..999999 or None (no D3)")
        self.seed = int(seed)
        self.reverse = bool(reverse)
        self.coefficient = coefficient
        self.unit_code = unit_code
        self.digits = digits
        self.two_wire = bool(two_wire)
        self.solar_peak_w = int(solar_peak_w)
        self.infc = bool(infc)
        self.overrides = {int(epc): bytes(edt) for epc, edt in (overrides or {}).items()}
        for epc, edt in self.overrides.items():
            if not 0 <= epc <= 0xFF or len(edt) > 255:
                raise ValueError("override EPC %r: need an EPC 0..255 and at most 255 bytes" % (epc,))
        # W*s in one raw count: D3 x E1 x 3.6e6 is an integer for every unit (>= 360).
        self._ws_per_count = int(Decimal(coefficient or 1) * el.ENERGY_UNITS[unit_code] * 3_600_000)
        count_kwh = Decimal(coefficient or 1) * el.ENERGY_UNITS[unit_code]
        self._start_counts = (int(Decimal(repr(float(start_kwh))) / count_kwh),
                              int(Decimal(repr(float(start_reverse_kwh))) / count_kwh))
        self._anchor: Optional[int] = None if start is None else _seconds(start)
        self._offset_ws: Optional[Tuple[int, int]] = None
        rng = random.Random(self.seed)
        self._standby_w = 90 + int(rng.random() * 120)
        self._lock = threading.RLock()
        self._profiles: "collections.OrderedDict[int, Tuple[List[int], float]]" = collections.OrderedDict()
        self._cumulative: Dict[int, Tuple[int, int]] = {}   # bucket -> Ws (pos, neg) since _cum_origin
        self._cum_lo = self._cum_hi = 0
        self._location = b"\x61"
        self._history_day = 0xFF
        self._history2 = b"\xff\xff\xff\xff\xff\xff\x01"
        self._last_boundary: Optional[datetime.datetime] = None
        self._tid = 0
        self._pending_infc: Dict[int, Tuple[int, ...]] = {}
        self.served: "collections.deque[Served]" = collections.deque(maxlen=served_maxlen)
        serial = serial_number if serial_number is not None else "KEISIM%06d" % (self.seed % 1_000_000)
        # history2=False: a meter without the optional EC/ED (back-fill then uses E5 + E2/E4).
        self.history2 = bool(history2)
        # one_minute=True: a newer (Release R) meter with D0, the counts at the last whole minute.
        self.one_minute = bool(one_minute)
        get_epcs = [epc for epc in _GET_EPCS
                    if (self.reverse or epc not in _REVERSE_EPCS) and (coefficient is not None or epc != 0xD3)
                    and (self.history2 or epc not in (0xEC, 0xED))]
        if self.one_minute:
            get_epcs.append(0xD0)
        get_epcs += [epc for epc in self.overrides if epc not in get_epcs]
        self.get_epcs = tuple(sorted(get_epcs))
        self._static = {
            0x80: b"\x30",
            0x82: b"\x00\x00\x46\x00",          # Release F, revision 0
            0x88: b"\x42",                      # no fault
            0x8A: maker_code.to_bytes(3, "big"),
            0x8D: el.encode_meter_property(0x8D, serial),
            0x9D: el.encode_property_map(_ANNO_EPCS),
            0x9E: el.encode_property_map([epc for epc in _SET_EPCS if self.history2 or epc != 0xED]),
            0x9F: el.encode_property_map(self.get_epcs),
            0xD7: bytes([digits]),
            0xE1: bytes([unit_code]),
        }
        if coefficient is not None:
            self._static[0xD3] = coefficient.to_bytes(4, "big")
        instance_list = el.encode_instance_list([el.METER])
        self._node_static = {
            0x80: b"\x30",
            0x82: b"\x01\x0d\x01\x00",          # ECHONET Lite 1.13, format 1 only
            0x83: b"\xfe" + maker_code.to_bytes(3, "big") + serial.encode("ascii")[:13].ljust(13, b"\x00"),
            0x8A: maker_code.to_bytes(3, "big"),
            0x9D: el.encode_property_map([0x80, 0xD5]),
            0x9E: el.encode_property_map([]),
            0x9F: el.encode_property_map([0x80, 0x82, 0x83, 0x8A, 0x9D, 0x9E, 0x9F,
                                          0xD3, 0xD4, 0xD5, 0xD6, 0xD7]),
            0xD3: b"\x00\x00\x01",
            0xD4: b"\x00\x02",
            0xD5: instance_list,
            0xD6: instance_list,
            0xD7: b"\x01\x02\x88",
        }

    # ------------------------------------------------------------ the load model

    def _plan(self, bucket: int) -> Tuple[int, List[Tuple[int, int, int]], int, float]:
        """One half hour's ingredients: (level W, bursts [(first, end, W)], jitter bits, R share).

        ``level`` is the base load minus the solar output; every draw comes from
        a Random seeded with (seed, bucket), in a fixed order.
        """
        rng = random.Random((self.seed << 40) ^ (bucket & 0xFFFFFFFFFF))
        hour = (bucket % 48) / 2 + 0.25
        shape = (450 * math.exp(-((hour - 7.0) ** 2) / 1.5)
                 + 250 * math.exp(-((hour - 12.5) ** 2) / 2.0)
                 + 900 * math.exp(-((hour - 19.5) ** 2) / 3.0))
        level = self._standby_w + int(shape * (0.7 + 0.6 * rng.random()))
        # Appliances (kettle, microwave, dryer...): more often when people are up.
        activity = 0.4 if hour < 6 or hour > 23 else 1.0
        bursts = []
        for _ in range(int(rng.random() * 3.5 * activity)):
            watts = 300 + int(rng.random() * 1200)
            first = int(rng.random() * STEPS_PER_BUCKET)
            length = 3 + int(rng.random() * 60)
            bursts.append((first, min(first + length, STEPS_PER_BUCKET), watts))
        clouds = 0.55 + 0.45 * rng.random()
        if self.reverse and 6.0 < hour < 18.0:
            level -= int(self.solar_peak_w * math.sin(math.pi * (hour - 6.0) / 12.0) * clouds)
        r_share = 0.45 + 0.2 * rng.random()
        return level, bursts, rng.getrandbits(_JITTER_BITS * STEPS_PER_BUCKET // 2), r_share

    def _profile(self, bucket: int) -> Tuple[List[int], float]:
        """Net watts for each 10-second step of one half hour, and the R share."""
        cached = self._profiles.get(bucket)
        if cached is not None:
            self._profiles.move_to_end(bucket)
            return cached
        level, bursts, jitter, r_share = self._plan(bucket)
        steps = [level] * STEPS_PER_BUCKET
        for first, end, watts in bursts:
            for index in range(first, end):
                steps[index] += watts
        # Jitter in +a/-a pairs: visible in E7, cancelled in every 20 s.
        mask = (1 << _JITTER_BITS) - 1
        for pair in range(STEPS_PER_BUCKET // 2):
            amplitude = (jitter >> (_JITTER_BITS * pair)) & mask
            steps[2 * pair] += amplitude
            steps[2 * pair + 1] -= amplitude
        result = (steps, r_share)
        self._profiles[bucket] = result
        if len(self._profiles) > 64:
            self._profiles.popitem(last=False)
        return result

    def _bucket_ws(self, bucket: int) -> Tuple[int, int]:
        """Ws (forward, reverse) of one whole half hour."""
        level, bursts, _, _ = self._plan(bucket)
        burst_total = sum((end - first) * watts for first, end, watts in bursts)
        jitter_max = 1 << _JITTER_BITS
        # Shortcut, exact when no step can change sign: the jitter cancels in pairs.
        if level - jitter_max > 0:
            return (level * STEPS_PER_BUCKET + burst_total) * STEP_SECONDS, 0
        if level + sum(watts for _, _, watts in bursts) + jitter_max < 0:
            return 0, -(level * STEPS_PER_BUCKET + burst_total) * STEP_SECONDS
        steps = self._profile(bucket)[0]
        return (sum(w for w in steps if w > 0) * STEP_SECONDS,
                -sum(w for w in steps if w < 0) * STEP_SECONDS)

    def _cumulative_at(self, bucket: int) -> Tuple[int, int]:
        """Ws (forward, reverse) from the first bucket ever asked for to ``bucket``'s start.

        Kept as a contiguous run _cum_lo.._cum_hi that grows either way, so a
        history read 100 days back integrates each half hour only once.
        """
        if not self._cumulative:
            self._cumulative[bucket] = (0, 0)
            self._cum_lo = self._cum_hi = bucket
        while bucket > self._cum_hi:
            pos, neg = self._cumulative[self._cum_hi]
            add_pos, add_neg = self._bucket_ws(self._cum_hi)
            self._cum_hi += 1
            self._cumulative[self._cum_hi] = (pos + add_pos, neg + add_neg)
        while bucket < self._cum_lo:
            pos, neg = self._cumulative[self._cum_lo]
            self._cum_lo -= 1
            sub_pos, sub_neg = self._bucket_ws(self._cum_lo)
            self._cumulative[self._cum_lo] = (pos - sub_pos, neg - sub_neg)
        return self._cumulative[bucket]

    def _integral_ws(self, second: int) -> Tuple[int, int]:
        bucket, into = divmod(second, BUCKET_SECONDS)
        pos, neg = self._cumulative_at(bucket)
        steps = self._profile(bucket)[0]
        full, rest = divmod(into, STEP_SECONDS)
        for watts in steps[:full]:
            if watts > 0:
                pos += watts * STEP_SECONDS
            else:
                neg -= watts * STEP_SECONDS
        if rest:
            if steps[full] > 0:
                pos += steps[full] * rest
            else:
                neg -= steps[full] * rest
        return pos, neg

    def _energy_ws(self, now: datetime.datetime) -> Tuple[int, int]:
        second = _seconds(now)
        if self._anchor is None:
            self._anchor = second
        if self._offset_ws is None:
            pos, neg = self._integral_ws(self._anchor)
            self._offset_ws = (self._start_counts[0] * self._ws_per_count - pos,
                               self._start_counts[1] * self._ws_per_count - neg)
        pos, neg = self._integral_ws(second)
        return pos + self._offset_ws[0], neg + self._offset_ws[1]

    def _counts(self, now: datetime.datetime) -> Tuple[int, int]:
        wrap = 10 ** self.digits
        forward, backward = self._energy_ws(now)
        return (forward // self._ws_per_count) % wrap, (backward // self._ws_per_count) % wrap

    # ------------------------------------------------------------ pure accessors

    def power_w(self, now: datetime.datetime) -> int:
        """E7: net watts at ``now`` (negative = export)."""
        with self._lock:
            bucket, into = divmod(_seconds(now), BUCKET_SECONDS)
            return self._profile(bucket)[0][into // STEP_SECONDS]

    def currents_a(self, now: datetime.datetime) -> el.Currents:
        """E8: R/T amperes at 100 V (T = NO_DATA on a 2-wire supply)."""
        with self._lock:
            bucket, into = divmod(_seconds(now), BUCKET_SECONDS)
            steps, r_share = self._profile(bucket)
            tenths = int(round(steps[into // STEP_SECONDS] / 10))   # W / 100 V, in 0.1 A
            if self.two_wire:
                return el.Currents(tenths / 10, NO_DATA)
            r_tenths = int(round(tenths * r_share))
            return el.Currents(r_tenths / 10, (tenths - r_tenths) / 10)

    def energy_ws(self, now: datetime.datetime) -> Tuple[int, int]:
        """Exact (forward, reverse) energy in watt-seconds behind E0/E3."""
        with self._lock:
            return self._energy_ws(now)

    def energy_raw(self, now: datetime.datetime) -> int:
        """E0 raw count at ``now``."""
        with self._lock:
            return self._counts(now)[0]

    def reverse_energy_raw(self, now: datetime.datetime) -> int:
        """E3 raw count at ``now``."""
        with self._lock:
            return self._counts(now)[1]

    def fixed_time(self, now: datetime.datetime) -> Tuple[datetime.datetime, int, int]:
        """EA/EB: the latest half-hour boundary and the (E0, E3) counts there."""
        with self._lock:
            boundary = _half_hour_floor(now)
            forward, backward = self._counts(boundary)
            return boundary, forward, backward

    # ------------------------------------------------------------ property values

    def _meter_edt(self, epc: int, now: datetime.datetime) -> Optional[bytes]:
        """EDT the meter object sends for ``epc`` at ``now``; None if unsupported."""
        if epc in self.overrides:
            return self.overrides[epc]
        if epc not in self.get_epcs:
            return None
        if epc in self._static:
            return self._static[epc]
        if epc == 0x81:
            return self._location
        if epc == 0x97:
            return bytes([now.hour, now.minute])
        if epc == 0x98:
            return el.encode_meter_property(0x98, now.date())
        if epc == 0xE0:
            return el.encode_energy(self._counts(now)[0])
        if epc == 0xE3:
            return el.encode_energy(self._counts(now)[1])
        if epc in (0xE2, 0xE4):
            return self._daily_history(0 if epc == 0xE2 else 1, now)
        if epc == 0xE5:
            return bytes([self._history_day])
        if epc == 0xE7:
            return el.encode_power(self.power_w(now))
        if epc == 0xE8:
            currents = self.currents_a(now)
            return el.encode_currents(currents.r, currents.t)
        if epc in (0xEA, 0xEB):
            boundary = _half_hour_floor(now)
            return el.encode_fixed_time(boundary, self._counts(boundary)[0 if epc == 0xEA else 1])
        if epc == 0xD0:
            minute = now.replace(second=0, microsecond=0)
            forward, backward = self._counts(minute)
            return el.encode_meter_property(0xD0, el.FixedTimeEnergyPair(
                minute, forward, backward if self.reverse else NO_DATA))
        if epc == 0xEC:
            return self._history2_edt(now)
        if epc == 0xED:
            return self._history2
        return None

    def _daily_history(self, which: int, now: datetime.datetime) -> bytes:
        if self._history_day == 0xFF:
            return el.encode_daily_history(0xFF, [NO_DATA] * 48)
        day_start = datetime.datetime.combine(now.date() - datetime.timedelta(days=self._history_day),
                                              datetime.time())
        values = []
        for slot in range(48):
            stamp = day_start + slot * _HALF_HOUR
            values.append(self._counts(stamp)[which] if stamp <= now else NO_DATA)
        return el.encode_daily_history(self._history_day, values)

    def _history2_edt(self, now: datetime.datetime) -> bytes:
        request = el.decode_history_request(self._history2)
        if request.timestamp is None:
            return el.encode_energy_history(None, [(NO_DATA, NO_DATA)])
        oldest = now - HISTORY_DEPTH
        if request.timestamp < oldest:
            # Beyond the meter's memory; also keeps year-1 dates from underflowing.
            return el.encode_energy_history(request.timestamp, [(NO_DATA, NO_DATA)] * request.count)
        pairs = []
        for index in range(request.count):
            stamp = request.timestamp - index * _HALF_HOUR
            if stamp > now or stamp < oldest:
                pairs.append((NO_DATA, NO_DATA))
                continue
            forward, backward = self._counts(stamp)
            pairs.append((forward, backward if self.reverse else NO_DATA))
        return el.encode_energy_history(request.timestamp, pairs)

    def _write_meter(self, epc: int, edt: bytes) -> bool:
        """Apply a Set; False if the meter refuses it."""
        if epc == 0x81 and (len(edt) == 1 or (len(edt) == 17 and edt[0] == 0x01)):
            self._location = edt
            return True
        if epc == 0xE5 and len(edt) == 1 and edt[0] <= 99:
            self._history_day = edt[0]
            return True
        if epc == 0xED and self.history2:
            try:
                request = el.decode_history_request(edt)
            except FrameError:
                return False
            if request.timestamp is None or request.timestamp.minute not in (0, 30) \
                    or not 1 <= request.count <= 12:
                return False
            self._history2 = edt
            return True
        return False

    # ------------------------------------------------------------ frames

    def handle(self, frame_bytes: bytes, now: datetime.datetime) -> List[bytes]:
        """Response frames to one request; [] when a real meter stays silent."""
        try:
            request = Frame.decode(frame_bytes)
        except FrameError:
            return []
        with self._lock:
            target = self._target(request.deoj)
            if target is None:
                return []   # no such object here: the node discards the frame
            if request.esv == ESV.GET:
                return [self._answer_read(request, target, now, ESV.GET_RES, ESV.GET_SNA)]
            if request.esv == ESV.INF_REQ:
                return [self._answer_read(request, target, now, ESV.INF, ESV.INF_SNA)]
            if request.esv in (ESV.SETC, ESV.SETI):
                return self._answer_write(request, target)
            if request.esv == ESV.INFC_RES:
                epcs = tuple(prop.epc for prop in request.properties)
                if self._pending_infc.get(request.tid) == epcs and target == el.METER:
                    del self._pending_infc[request.tid]
            return []

    def _target(self, deoj: int) -> Optional[int]:
        # Instance code 0 addresses every instance of the class.
        if deoj in (el.METER, el.METER & 0xFFFF00):
            return el.METER
        if deoj in (el.NODE_PROFILE, el.NODE_PROFILE & 0xFFFF00):
            return el.NODE_PROFILE
        return None

    def _answer_read(self, request: Frame, target: int, now: datetime.datetime,
                     ok_esv: int, fail_esv: int) -> bytes:
        props = []
        refused = False
        for prop in request.properties:
            if target == el.METER:
                edt = self._meter_edt(prop.epc, now)
            else:
                edt = self._node_static.get(prop.epc)
            if edt is None:
                refused = True
                props.append(Property(prop.epc))
            else:
                props.append(Property(prop.epc, edt))
        esv = fail_esv if refused else ok_esv
        if target == el.METER:
            for prop in props:
                if prop.edt:
                    self._record(now, esv, prop.epc, prop.edt)
        return Frame(request.tid, target, request.seoj, esv, tuple(props)).encode()

    def _answer_write(self, request: Frame, target: int) -> List[bytes]:
        props = []
        refused = False
        for prop in request.properties:
            if target == el.METER and self._write_meter(prop.epc, prop.edt):
                props.append(Property(prop.epc))
            else:
                refused = True
                props.append(prop)   # a refused Set echoes PDC and EDT
        if request.esv == ESV.SETI:
            if not refused:
                return []
            return [Frame(request.tid, target, request.seoj, ESV.SETI_SNA, tuple(props)).encode()]
        esv = ESV.SETC_SNA if refused else ESV.SET_RES
        return [Frame(request.tid, target, request.seoj, esv, tuple(props)).encode()]

    def _record(self, now: datetime.datetime, esv: int, epc: int, edt: bytes) -> None:
        try:
            value = el.decode_meter_property(epc, edt)
        except FrameError:
            value = bytes(edt)   # an override may hold deliberately broken bytes
        self.served.append(Served(now, int(esv), epc, value))

    # ------------------------------------------------------------ notifications

    def instance_list_inf(self) -> bytes:
        """The INF D5 a meter multicasts after PANA join (echonet.md 5(g))."""
        return Frame(0, el.NODE_PROFILE, el.NODE_PROFILE, ESV.INF,
                     (Property(0xD5, self._node_static[0xD5]),)).encode()

    def _next_tid(self) -> int:
        self._tid = self._tid % 0xFFFF + 1   # 1..0xFFFF; 0 belongs to the instance list
        return self._tid

    def notifications_due(self, now: datetime.datetime) -> List[bytes]:
        """INF (or INFC) of EA (+EB with reverse) for each :00/:30 crossed since the last call.

        The first call (or a clock that went backwards) only sets the starting
        point.  At most MAX_NOTIFICATION_BACKLOG frames come out of one call.
        """
        with self._lock:
            boundary = _half_hour_floor(now)
            last = self._last_boundary
            self._last_boundary = boundary
            if last is None or boundary <= last:
                return []
            crossed = []
            stamp = boundary
            while stamp > last and len(crossed) < MAX_NOTIFICATION_BACKLOG:
                crossed.append(stamp)
                stamp -= _HALF_HOUR
            frames = []
            for stamp in reversed(crossed):
                epcs = [0xEA, 0xEB] if self.reverse else [0xEA]
                props = tuple(Property(epc, self._meter_edt(epc, stamp)) for epc in epcs)
                esv = ESV.INFC if self.infc else ESV.INF
                tid = self._next_tid()
                if self.infc:
                    self._pending_infc[tid] = tuple(epcs)
                for prop in props:
                    self._record(now, esv, prop.epc, prop.edt)
                frames.append(Frame(tid, el.METER, el.CONTROLLER, esv, props).encode())
            return frames

    @property
    def pending_infc(self) -> Tuple[int, ...]:
        """TIDs of INFC notifications not yet acknowledged by an INFC_Res."""
        with self._lock:
            return tuple(sorted(self._pending_infc))
