"""ECHONET Lite frames, the low-voltage smart meter (class 0x0288) properties,
and the LAN device classes kei reads (water heater, battery, solar).

Pure codec: bytes in, typed values out (and back).  No I/O, no logging, no
global state.  Reference: shared/docs/echonet.md (section numbers below).

Wire format (format 1, the only one used on Route B; every field big-endian)::

    offset 0-1   EHD   10 81
    offset 2-3   TID   transaction id; a response echoes the request's
    offset 4-6   SEOJ  source object     (class group, class, instance)
    offset 7-9   DEOJ  destination object
    offset 10    ESV   service code (``ESV``)
    offset 11    OPC   number of properties, 1..255
    offset 12-   OPC x { EPC (1 byte), PDC (1 byte), EDT (PDC bytes) }

Objects (EOJ) are plain 24-bit ints: ``CONTROLLER = 0x05FF01``,
``METER = 0x028801``, ``NODE_PROFILE = 0x0EF001``; ``eoj_class(eoj)`` gives the
16-bit class (0x0288).

Decoding rules (``Frame.decode``); anything else raises ``FrameError``:

* the frame is at least 14 bytes, EHD is ``10 81``;
* OPC is at least 1: the spec's smallest frame is OPC=1, and an empty
  property list carries nothing a Route-B peer could act on;
* every property's PDC fits in the data, and no byte is left over;
* the SetGet family (0x6E, 0x7E, 0x5E) uses a two-block layout that Route B
  never uses; it is refused rather than misparsed.

Frames::

    frame = get_request(tid=1, epcs=[EPC.E7, EPC.E8])      # -> Frame
    data = frame.encode()                                   # -> bytes
    reply = Frame.decode(data)                              # FrameError if malformed
    reply.esv, reply.properties[0].epc, reply.properties[0].edt
    reply.find(EPC.E7)           # the Property with that EPC, or None
    reply.value(EPC.E7)          # typed value of that property (see below)
    infc_response(notification)  # the INFC_Res a controller owes for ESV 0x74
    set_request(tid, [(EPC.E5, b"\x00")])         # SetC; inf_request(tid, [0xD5]) INF_REQ
    reply.is_failure / reply.is_notification        # ESV 0x5x / ESV 0x73, 0x74

A refused property in a Get_SNA has an empty EDT; ``reply.find(epc).edt``
tells it apart before asking for ``value``.  Known ESVs decode to ``ESV``
members, unknown ones stay plain ints (the caller decides to ignore them).

Typed property values (``decode_meter_property(epc, edt)``, or
``decode_property(eoj, epc, edt)`` which also knows the node profile):

    80 operating status  -> bool (True = ON)        88 fault -> bool (True = fault)
    81 location          -> int (1-byte form) or bytes (17-byte form)
    82 standard version  -> StandardVersion(release 'F', revision 0)
    8A maker code        -> int                      8D serial number -> str
    97 time -> datetime.time    98 date -> datetime.date
    9D/9E/9F property maps -> tuple of EPC ints, ascending
    D3 coefficient -> int       D7 effective digits -> int (1..8)
    E0/E3 energy -> int raw count, or NO_DATA
    E1 unit -> EnergyUnit(code, kwh: Decimal)
    E2/E4 -> DailyHistory(day, values: 48 x (raw or NO_DATA)); day is 0..99,
             or NO_DATA for the default 0x00FF (E5 never set)
    E5 history day -> int (0..99), or NO_DATA for the default 0xFF (never set)
    E7 power -> int W (negative = export) or NO_DATA / OVERFLOW / UNDERFLOW
    E8 currents -> Currents(r, t) in A (float), each possibly a NoValue
    EA/EB, D0 -> FixedTimeEnergy(timestamp, raw)  (D0: FixedTimeEnergyPair)
    EC/EE -> EnergyHistory(timestamp, step_minutes, pairs newest first)
    ED/EF -> HistoryRequest(timestamp or None (default), count)
             (EC/ED: 1..12 points, minute 00 or 30; EE/EF: 1..10 points)
    node profile D5/D6 -> tuple of EOJ ints
    any other EPC -> the EDT bytes unchanged

A wrong EDT length or an impossible value raises ``FrameError`` (a
``ProtocolError``).  "No data", overflow and underflow codes (section 2.2-2.3)
never decode to numbers but to ``NoValue`` objects (``NO_DATA``,
``OVERFLOW``, ``UNDERFLOW``); test with ``is_value(x)``.  So do the "default
value" (never set) codes of the history days E5 (0xFF) and E2/E4 (0x00FF):
they are not a number of days, and ``DailyHistory.slot_times`` gives no
times for them.

LAN device classes (section "LAN device classes" below; facts from the
ECHONET Lite Appendix): electric water heater 0x026B (``WATER_HEATER``),
storage battery 0x027D (``STORAGE_BATTERY``), home solar power generation
0x0279 (``SOLAR``).  ``DEVICE_PROPERTIES[class][epc]`` is a ``PropertySpec``
(name, size, unit, scale, valid range, codes); ``decode_device_property(eoj,
epc, edt)`` gives numbers in their unit (W, Wh, kWh, %, L, degC; 0.001 kWh
steps come as float kWh), overflow/underflow codes as NoValue, two-state
properties as bool, modes as ``Code(code, name)``; ``encode_device_property``
is its inverse; ``record_value(value)`` is the number kei records (bool 1/0,
Code its byte, None for no number); ``DEFAULT_EPCS[class]`` lists what a
reader asks by default.  ``decode_property`` dispatches to it by class.  The
node profile also decodes 82 (``NodeVersion``), 83 (bytes), 8C (str) and D7
(class list); ``encode_node_property`` builds its EDTs.

Energy: ``energy_kwh(raw, coefficient, unit_code)`` computes raw x D3 x E1
exactly (Decimal) and returns a float; ``energy_delta(prev, now, digits)`` is
the wrap-aware difference of two raw counters (modulo 10**D7, section 2.4).

Encoders (used by the simulator and by tests): ``encode_meter_property(epc,
value)`` is the inverse of ``decode_meter_property`` for every typed EPC, and
``encode_power``, ``encode_currents``, ``encode_energy``,
``encode_fixed_time``, ``encode_daily_history``, ``encode_energy_history``,
``encode_history_request``, ``encode_property_map``, ``encode_instance_list``
build single EDTs.  Encoders raise ``ValueError`` for values the wire cannot
carry (a programming error, not bad input).
"""

from __future__ import annotations

import datetime
import enum
import struct
from collections import namedtuple
from decimal import Decimal

from keilib.errors import FrameError
from keilib.frozen import Frozen

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Iterable, Optional, Sequence, Tuple, Union

EHD = b"\x10\x81"
HEADER_LEN = 12
MIN_FRAME_LEN = 14

CONTROLLER = 0x05FF01
METER = 0x028801
NODE_PROFILE = 0x0EF001

METER_CLASS = 0x0288
NODE_PROFILE_CLASS = 0x0EF0


class ESV(enum.IntEnum):
    """Service codes (section 1.3)."""

    SETI = 0x60
    SETC = 0x61
    GET = 0x62
    INF_REQ = 0x63
    SETGET = 0x6E
    SET_RES = 0x71
    GET_RES = 0x72
    INF = 0x73
    INFC = 0x74
    INFC_RES = 0x7A
    SETGET_RES = 0x7E
    SETI_SNA = 0x50
    SETC_SNA = 0x51
    GET_SNA = 0x52
    INF_SNA = 0x53
    SETGET_SNA = 0x5E


_SETGET_FAMILY = (ESV.SETGET, ESV.SETGET_RES, ESV.SETGET_SNA)


class EPC(enum.IntEnum):
    """Property codes of the meter (0x0288) and of the node profile (0x0EF0).

    The two classes reuse some numbers with different meanings (D3 is the
    coefficient on the meter but the instance count on the node profile), so
    decoding always needs the object (``decode_property``).
    """

    OPERATION_STATUS = 0x80
    INSTALLATION_LOCATION = 0x81
    STANDARD_VERSION = 0x82
    IDENTIFICATION_NUMBER = 0x83
    FAULT_STATUS = 0x88
    MAKER_CODE = 0x8A
    SERIAL_NUMBER = 0x8D
    CURRENT_TIME = 0x97
    CURRENT_DATE = 0x98
    ANNO_MAP = 0x9D
    SET_MAP = 0x9E
    GET_MAP = 0x9F
    ROUTE_B_ID = 0xC0
    ONE_MINUTE_ENERGY = 0xD0
    COEFFICIENT = 0xD3
    INSTANCE_LIST_NOTIFICATION = 0xD5
    SELF_NODE_INSTANCE_LIST = 0xD6
    EFFECTIVE_DIGITS = 0xD7
    E0 = 0xE0
    E1 = 0xE1
    E2 = 0xE2
    E3 = 0xE3
    E4 = 0xE4
    E5 = 0xE5
    E6 = 0xE6
    E7 = 0xE7
    E8 = 0xE8
    E9 = 0xE9
    EA = 0xEA
    EB = 0xEB
    EC = 0xEC
    ED = 0xED
    EE = 0xEE
    EF = 0xEF


# Readable aliases for the meter's class-specific properties.
EPC_ENERGY = EPC.E0
EPC_UNIT = EPC.E1
EPC_HISTORY = EPC.E2
EPC_REVERSE_ENERGY = EPC.E3
EPC_REVERSE_HISTORY = EPC.E4
EPC_HISTORY_DAY = EPC.E5
EPC_POWER = EPC.E7
EPC_CURRENTS = EPC.E8
EPC_FIXED_TIME_ENERGY = EPC.EA
EPC_FIXED_TIME_REVERSE_ENERGY = EPC.EB
EPC_HISTORY2 = EPC.EC
EPC_HISTORY2_REQUEST = EPC.ED


def eoj_class(eoj: int) -> int:
    """The 16-bit class code of a 24-bit EOJ (0x028801 -> 0x0288)."""
    return eoj >> 8


# ---------------------------------------------------------------- frames


class Property(Frozen):
    """One EPC with its EDT (empty for a Get request or an accepted Set)."""

    __slots__ = ("epc", "edt")
    DEFAULTS = {"edt": b""}
    epc: int
    edt: bytes


class Frame(Frozen):
    """One format-1 ECHONET Lite frame.  ``properties`` is a tuple of Property."""

    __slots__ = ("tid", "seoj", "deoj", "esv", "properties")
    tid: int
    seoj: int
    deoj: int
    esv: int
    properties: Tuple[Property, ...]

    def encode(self) -> bytes:
        """The frame as bytes; ValueError if a field does not fit its width."""
        if not 0 <= self.tid <= 0xFFFF:
            raise ValueError("TID must be 0..0xFFFF, got %r" % (self.tid,))
        for name in ("seoj", "deoj"):
            if not 0 <= getattr(self, name) <= 0xFFFFFF:
                raise ValueError("%s must be a 24-bit EOJ, got %r" % (name, getattr(self, name)))
        if not 0 <= self.esv <= 0xFF:
            raise ValueError("ESV must be one byte, got %r" % (self.esv,))
        if self.esv in _SETGET_FAMILY:
            raise ValueError("the SetGet layout is not supported")
        if not 1 <= len(self.properties) <= 255:
            raise ValueError("a frame carries 1..255 properties, got %d" % len(self.properties))
        out = bytearray(EHD)
        out += struct.pack(">H", self.tid)
        out += self.seoj.to_bytes(3, "big") + self.deoj.to_bytes(3, "big")
        out.append(self.esv)
        out.append(len(self.properties))
        for prop in self.properties:
            if not 0 <= prop.epc <= 0xFF:
                raise ValueError("EPC must be one byte, got %r" % (prop.epc,))
            if len(prop.edt) > 255:
                raise ValueError("EDT of EPC %02X is longer than 255 bytes" % prop.epc)
            out.append(prop.epc)
            out.append(len(prop.edt))
            out += prop.edt
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> "Frame":
        """Parse one frame; FrameError (with the reason) if it is malformed."""
        data = bytes(data)
        if len(data) < MIN_FRAME_LEN:
            raise FrameError("frame too short: %d bytes, need at least %d" % (len(data), MIN_FRAME_LEN))
        if data[0:2] != EHD:
            raise FrameError("bad EHD %s, expected 1081" % data[0:2].hex().upper())
        tid = (data[2] << 8) | data[3]
        seoj = int.from_bytes(data[4:7], "big")
        deoj = int.from_bytes(data[7:10], "big")
        esv_code = data[10]
        if esv_code in _SETGET_FAMILY:
            raise FrameError("SetGet frames (ESV %02X) are not supported" % esv_code)
        try:
            esv: int = ESV(esv_code)
        except ValueError:
            esv = esv_code  # unknown codes are kept; the caller decides
        opc = data[11]
        if opc == 0:
            raise FrameError("OPC is 0: a frame must carry at least one property")
        props = []
        pos = HEADER_LEN
        for index in range(opc):
            if pos + 2 > len(data):
                raise FrameError("property %d of %d missing: frame ends at byte %d" % (index + 1, opc, len(data)))
            epc, pdc = data[pos], data[pos + 1]
            pos += 2
            if pos + pdc > len(data):
                raise FrameError("EPC %02X: PDC %d runs past the end of the frame (%d bytes left)"
                                 % (epc, pdc, len(data) - pos))
            props.append(Property(epc, data[pos:pos + pdc]))
            pos += pdc
        if pos != len(data):
            raise FrameError("%d trailing bytes after %d properties" % (len(data) - pos, opc))
        return cls(tid, seoj, deoj, esv, tuple(props))

    def find(self, epc: int) -> Optional[Property]:
        """The first property with this EPC, or None."""
        for prop in self.properties:
            if prop.epc == epc:
                return prop
        return None

    def value(self, epc: int):
        """The typed value of ``epc`` as sent by SEOJ (see decode_property).

        KeyError if the frame lacks the EPC; FrameError if the EDT is
        malformed or empty (a refused property in an SNA frame).
        """
        prop = self.find(epc)
        if prop is None:
            raise KeyError("EPC %02X not in frame" % epc)
        return decode_property(self.seoj, prop.epc, prop.edt)

    @property
    def is_failure(self) -> bool:
        """True for the "not possible" answers (ESV 0x50..0x5F)."""
        return 0x50 <= self.esv <= 0x5F

    @property
    def is_notification(self) -> bool:
        """True for INF and INFC, which a controller must not match by TID."""
        return self.esv in (ESV.INF, ESV.INFC)


def decode_frame(data: bytes) -> Frame:
    """Same as ``Frame.decode``."""
    return Frame.decode(data)


def get_request(tid: int, epcs: Iterable[int], deoj: int = METER, seoj: int = CONTROLLER) -> Frame:
    """A Get (0x62) for ``epcs`` (each with PDC 0)."""
    return Frame(tid, seoj, deoj, ESV.GET, tuple(Property(int(epc)) for epc in epcs))


def set_request(tid: int, values: Iterable[Tuple[int, bytes]], deoj: int = METER,
                seoj: int = CONTROLLER) -> Frame:
    """A SetC (0x61) writing ``[(epc, edt), ...]``."""
    return Frame(tid, seoj, deoj, ESV.SETC, tuple(Property(int(epc), bytes(edt)) for epc, edt in values))


def inf_request(tid: int, epcs: Iterable[int], deoj: int = NODE_PROFILE, seoj: int = CONTROLLER) -> Frame:
    """An INF_REQ (0x63), by default for the node profile's instance list (D5)."""
    return Frame(tid, seoj, deoj, ESV.INF_REQ, tuple(Property(int(epc)) for epc in epcs))


def infc_response(frame: Frame) -> Frame:
    """The INFC_Res (0x7A) answering an INFC (section 1.5).

    Same TID, SEOJ and DEOJ swapped, every EPC echoed in order with PDC 0.
    """
    if frame.esv != ESV.INFC:
        raise ValueError("infc_response needs an INFC (0x74) frame, got ESV %02X" % frame.esv)
    return Frame(frame.tid, frame.deoj, frame.seoj, ESV.INFC_RES,
                 tuple(Property(prop.epc) for prop in frame.properties))


# ---------------------------------------------------------------- no-value sentinels


class NoValue:
    """A property slot that holds no number: "no data", overflow or underflow.

    Use the module constants NO_DATA, OVERFLOW, UNDERFLOW; ``is_value(x)``
    tells numbers from these.  NoValue does not order against numbers, so an
    accidental ``value > 0`` fails loudly instead of recording garbage.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoValue) and other.reason == self.reason

    def __hash__(self) -> int:
        return hash(("NoValue", self.reason))

    def __repr__(self) -> str:
        return "NoValue(%r)" % self.reason


NO_DATA = NoValue("no data")
OVERFLOW = NoValue("overflow")
UNDERFLOW = NoValue("underflow")


def is_value(value: object) -> bool:
    """True unless ``value`` is a NoValue sentinel."""
    return not isinstance(value, NoValue)


if TYPE_CHECKING:
    Raw = Union[int, NoValue]

# Codes of section 2.2/2.3.
ENERGY_NO_DATA = 0xFFFFFFFE
ENERGY_MAX = 99_999_999
POWER_NO_DATA = 0x7FFFFFFE
POWER_OVERFLOW = 0x7FFFFFFF
POWER_UNDERFLOW = -0x80000000
CURRENT_NO_DATA = 0x7FFE
CURRENT_OVERFLOW = 0x7FFF
CURRENT_UNDERFLOW = -0x8000
HISTORY_DAY_MAX = 99          # E5 and the E2/E4 day: 0 = today .. 99 days back
HISTORY_DAY_DEFAULT = 0xFF    # E5 "default value"; E2/E4 carry it as 0x00FF
# Most points in one EC/EE answer and in the count of ED/EF (section 2.2).
HISTORY2_MAX_POINTS = {0xEC: 12, 0xED: 12, 0xEE: 10, 0xEF: 10}


# ---------------------------------------------------------------- typed values


class StandardVersion(namedtuple("StandardVersion", "release revision")):
    __slots__ = ()
    release: str   # 'F', 'R', ...
    revision: int


class EnergyUnit(namedtuple("EnergyUnit", "code kwh")):
    __slots__ = ()
    code: int       # the E1 byte
    kwh: Decimal    # kWh per raw count (before D3)


class Currents(namedtuple("Currents", "r t")):
    __slots__ = ()
    r: Union[float, NoValue]   # R phase, amperes
    t: Union[float, NoValue]   # T phase, amperes (NO_DATA on single-phase 2-wire)


class FixedTimeEnergy(namedtuple("FixedTimeEnergy", "timestamp raw")):
    __slots__ = ()
    timestamp: datetime.datetime   # the meter's local time of the reading
    raw: Raw


class FixedTimeEnergyPair(namedtuple("FixedTimeEnergyPair", "timestamp normal reverse")):
    __slots__ = ()
    timestamp: datetime.datetime
    normal: Raw
    reverse: Raw


class DailyHistory(namedtuple("DailyHistory", "day values")):
    __slots__ = ()
    day: Raw                  # days before today (0..99); NO_DATA = default 0x00FF (E5 never set)
    values: Tuple[Raw, ...]   # 48 half-hour values, 00:00 first

    def slot_times(self, today: datetime.date):
        """The start time of each slot, counted back from ``today``.

        Empty when ``day`` is not a value (the default 0x00FF: the meter was
        never told which day), as ``EnergyHistory.points`` is for a default
        header: there is no day to date the slots by.
        """
        if not is_value(self.day):
            return []
        base = datetime.datetime.combine(today - datetime.timedelta(days=self.day), datetime.time())
        return [base + datetime.timedelta(minutes=30 * index) for index in range(len(self.values))]


class EnergyHistory(namedtuple("EnergyHistory", "timestamp step_minutes pairs")):
    __slots__ = ()
    timestamp: Optional[datetime.datetime]   # newest point; None = default (never set)
    step_minutes: int                        # 30 for EC, 1 for EE
    pairs: Tuple[Tuple[Raw, Raw], ...]       # (normal, reverse), newest first

    def points(self):
        """``[(time, normal, reverse), ...]`` newest first (empty if no timestamp)."""
        if self.timestamp is None:
            return []
        step = datetime.timedelta(minutes=self.step_minutes)
        return [(self.timestamp - index * step, normal, reverse)
                for index, (normal, reverse) in enumerate(self.pairs)]


class HistoryRequest(namedtuple("HistoryRequest", "timestamp count")):
    __slots__ = ()
    timestamp: Optional[datetime.datetime]   # None = the default value FF..FF
    count: int


ENERGY_UNITS = {
    0x00: Decimal("1"),
    0x01: Decimal("0.1"),
    0x02: Decimal("0.01"),
    0x03: Decimal("0.001"),
    0x04: Decimal("0.0001"),
    0x0A: Decimal("10"),
    0x0B: Decimal("100"),
    0x0C: Decimal("1000"),
    0x0D: Decimal("10000"),
}


# ---------------------------------------------------------------- helpers


def _need_len(epc: int, edt: bytes, *lengths: int) -> None:
    if len(edt) not in lengths:
        raise FrameError("EPC %02X: EDT is %d bytes, expected %s"
                         % (epc, len(edt), " or ".join(str(n) for n in lengths)))


def _decode_energy_word(word: int) -> Raw:
    # Cumulative energies define only "no data"; they wrap instead of
    # overflowing (section 2.3), so any other value is a count.
    return NO_DATA if word == ENERGY_NO_DATA else word


def _decode_datetime(epc: int, edt: bytes, with_seconds: bool) -> datetime.datetime:
    year = (edt[0] << 8) | edt[1]
    second = edt[6] if with_seconds else 0
    try:
        return datetime.datetime(year, edt[2], edt[3], edt[4], edt[5], second)
    except ValueError as exc:
        raise FrameError("EPC %02X: invalid date/time %s (%s)" % (epc, edt.hex().upper(), exc)) from None


def _encode_datetime(stamp: datetime.datetime, with_seconds: bool) -> bytes:
    out = struct.pack(">HBBBB", stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute)
    return out + bytes([stamp.second]) if with_seconds else out


def _signed(data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


# ---------------------------------------------------------------- value codecs


def decode_power(edt: bytes) -> Raw:
    """E7: signed watts, or a NoValue (section 2.2)."""
    _need_len(0xE7, edt, 4)
    watts = _signed(edt)
    if watts == POWER_NO_DATA:
        return NO_DATA
    if watts == POWER_OVERFLOW:
        return OVERFLOW
    if watts == POWER_UNDERFLOW:
        return UNDERFLOW
    return watts


def encode_power(watts: Raw) -> bytes:
    """E7 EDT for ``watts`` (int) or a NoValue."""
    if isinstance(watts, NoValue):
        code = {NO_DATA: POWER_NO_DATA, OVERFLOW: POWER_OVERFLOW, UNDERFLOW: POWER_UNDERFLOW}[watts]
        return code.to_bytes(4, "big", signed=True)
    if not -0x7FFFFFFF <= watts <= 0x7FFFFFFD:
        raise ValueError("E7 power %r W out of range" % (watts,))
    return int(watts).to_bytes(4, "big", signed=True)


def _decode_current(word: int) -> Union[float, NoValue]:
    if word == CURRENT_NO_DATA:
        return NO_DATA
    if word == CURRENT_OVERFLOW:
        return OVERFLOW
    if word == CURRENT_UNDERFLOW:
        return UNDERFLOW
    return word / 10


def _encode_current(amps: Union[float, NoValue]) -> bytes:
    if isinstance(amps, NoValue):
        code = {NO_DATA: CURRENT_NO_DATA, OVERFLOW: CURRENT_OVERFLOW, UNDERFLOW: CURRENT_UNDERFLOW}[amps]
        return code.to_bytes(2, "big", signed=True)
    tenths = int(round(amps * 10))
    if not -0x7FFF <= tenths <= 0x7FFD:
        raise ValueError("E8 current %r A out of range" % (amps,))
    return tenths.to_bytes(2, "big", signed=True)


def decode_currents(edt: bytes) -> Currents:
    """E8: R and T phase currents in amperes (0.1 A steps), or NoValues."""
    _need_len(0xE8, edt, 4)
    return Currents(_decode_current(_signed(edt[0:2])), _decode_current(_signed(edt[2:4])))


def encode_currents(r_amps: Union[float, NoValue], t_amps: Union[float, NoValue] = NO_DATA) -> bytes:
    """E8 EDT; amperes are rounded to 0.1 A; T defaults to "no data" (2-wire)."""
    return _encode_current(r_amps) + _encode_current(t_amps)


def decode_energy(edt: bytes, epc: int = 0xE0) -> Raw:
    """E0/E3: the raw cumulative count, or NO_DATA."""
    _need_len(epc, edt, 4)
    return _decode_energy_word(int.from_bytes(edt, "big"))


def encode_energy(raw: Raw) -> bytes:
    """EDT of a cumulative energy count (0..99,999,999) or NO_DATA."""
    if isinstance(raw, NoValue):
        if raw != NO_DATA:
            raise ValueError("cumulative energy has no %s code" % raw.reason)
        return ENERGY_NO_DATA.to_bytes(4, "big")
    if not 0 <= raw <= ENERGY_MAX:
        raise ValueError("energy count %r out of range 0..%d" % (raw, ENERGY_MAX))
    return int(raw).to_bytes(4, "big")


def decode_fixed_time(edt: bytes, epc: int = 0xEA) -> FixedTimeEnergy:
    """EA/EB: the meter's timestamp and the raw count at that time."""
    _need_len(epc, edt, 11)
    return FixedTimeEnergy(_decode_datetime(epc, edt, True), _decode_energy_word(int.from_bytes(edt[7:11], "big")))


def encode_fixed_time(stamp: datetime.datetime, raw: Raw) -> bytes:
    """EA/EB EDT (11 bytes)."""
    return _encode_datetime(stamp, True) + encode_energy(raw)


def decode_fixed_time_pair(edt: bytes, epc: int = 0xD0) -> FixedTimeEnergyPair:
    """D0 (Release R): timestamp, normal and reverse counts."""
    _need_len(epc, edt, 15)
    return FixedTimeEnergyPair(_decode_datetime(epc, edt, True),
                               _decode_energy_word(int.from_bytes(edt[7:11], "big")),
                               _decode_energy_word(int.from_bytes(edt[11:15], "big")))


def decode_daily_history(edt: bytes, epc: int = 0xE2) -> DailyHistory:
    """E2/E4: the day (2 bytes) and 48 half-hour counts from 00:00.

    The day is 0..99, or NO_DATA for the default value 0x00FF (E5 never set).
    """
    _need_len(epc, edt, 194)
    word = (edt[0] << 8) | edt[1]
    if word == HISTORY_DAY_DEFAULT:
        day: Raw = NO_DATA
    elif word <= HISTORY_DAY_MAX:
        day = word
    else:
        raise FrameError("EPC %02X: day %d (0x%04X) outside 0..%d and not the default 0x00FF"
                         % (epc, word, word, HISTORY_DAY_MAX))
    values = tuple(_decode_energy_word(word) for word in struct.unpack(">48L", edt[2:]))
    return DailyHistory(day, values)


def _history_day_code(day: Raw) -> int:
    """The wire code of a history day: 0..99, or 0xFF for NO_DATA (or 0xFF itself)."""
    if isinstance(day, NoValue):
        if day != NO_DATA:
            raise ValueError("a history day has no %s code" % day.reason)
        return HISTORY_DAY_DEFAULT
    if isinstance(day, bool) or not (0 <= day <= HISTORY_DAY_MAX or day == HISTORY_DAY_DEFAULT):
        raise ValueError("history day %r out of range 0..%d (NO_DATA for the default)"
                         % (day, HISTORY_DAY_MAX))
    return int(day)


def encode_daily_history(day: Raw, values: Sequence[Raw]) -> bytes:
    """E2/E4 EDT: ``day`` (0..99; NO_DATA or 0xFF = default) and exactly 48 values."""
    if len(values) != 48:
        raise ValueError("daily history needs 48 values, got %d" % len(values))
    return struct.pack(">H", _history_day_code(day)) + b"".join(encode_energy(value) for value in values)


_DEFAULT_STAMP = b"\xff\xff\xff\xff\xff\xff"


def _max_points(epc: int) -> int:
    return HISTORY2_MAX_POINTS.get(epc, HISTORY2_MAX_POINTS[0xEC])


def _decode_history_header(epc: int, edt: bytes) -> Tuple[Optional[datetime.datetime], int]:
    """EC/ED (and EE/EF) header: the newest time (None = default FF..FF) and the count.

    EC and ED count half hours: the minute must be 00 or 30 (0x1E); EC's
    header is ED's.  The count is 1..12 for EC/ED, 1..10 for EE/EF.
    """
    stamp = None if edt[0:6] == _DEFAULT_STAMP else _decode_datetime(epc, edt, False)
    if stamp is not None and epc in (0xEC, 0xED) and stamp.minute not in (0, 30):
        raise FrameError("EPC %02X: minute %d in %s, expected 00 or 30 (0x1E)"
                         % (epc, stamp.minute, edt[0:6].hex().upper()))
    count = edt[6]
    if not 1 <= count <= _max_points(epc):
        raise FrameError("EPC %02X: count %d outside 1..%d" % (epc, count, _max_points(epc)))
    return stamp, count


def decode_energy_history(edt: bytes, epc: int = 0xEC) -> EnergyHistory:
    """EC (30-minute steps, 1..12 pairs) / EE (1-minute steps, 1..10): pairs newest first."""
    if len(edt) < 15 or (len(edt) - 7) % 8:
        raise FrameError("EPC %02X: EDT is %d bytes, expected 7 + 8 x n" % (epc, len(edt)))
    if (len(edt) - 7) // 8 > _max_points(epc):
        raise FrameError("EPC %02X: EDT holds %d pairs, at most %d allowed"
                         % (epc, (len(edt) - 7) // 8, _max_points(epc)))
    stamp, count = _decode_history_header(epc, edt)
    if count != (len(edt) - 7) // 8:
        raise FrameError("EPC %02X: header says %d pairs but EDT holds %d" % (epc, count, (len(edt) - 7) // 8))
    words = struct.unpack(">%dL" % (2 * count), edt[7:])
    pairs = tuple((_decode_energy_word(words[i]), _decode_energy_word(words[i + 1]))
                  for i in range(0, len(words), 2))
    return EnergyHistory(stamp, 1 if epc == 0xEE else 30, pairs)


def _encode_history_header(epc: int, stamp: Optional[datetime.datetime], count: int) -> bytes:
    if not 1 <= count <= _max_points(epc):
        raise ValueError("EPC %02X carries 1..%d points, got %d" % (epc, _max_points(epc), count))
    if stamp is None:
        return _DEFAULT_STAMP + bytes([count])
    if epc in (0xEC, 0xED) and (stamp.minute not in (0, 30) or stamp.second):
        raise ValueError("EPC %02X: time %s is not on a half hour" % (epc, stamp))
    return _encode_datetime(stamp, False) + bytes([count])


def encode_energy_history(stamp: Optional[datetime.datetime], pairs: Sequence[Tuple[Raw, Raw]],
                          epc: int = 0xEC) -> bytes:
    """EC/EE EDT; ``stamp`` None writes the default FF..FF header.

    EC: 1..12 pairs, ``stamp`` on a half hour; EE (``epc=0xEE``): 1..10 pairs.
    """
    head = _encode_history_header(epc, stamp, len(pairs))
    return head + b"".join(encode_energy(a) + encode_energy(b) for a, b in pairs)


def decode_history_request(edt: bytes, epc: int = 0xED) -> HistoryRequest:
    """ED/EF: the newest time wanted and the number of points.

    ED: minute 00 or 30, count 1..12; EF: count 1..10 (FrameError otherwise).
    """
    _need_len(epc, edt, 7)
    stamp, count = _decode_history_header(epc, edt)
    return HistoryRequest(stamp, count)


def encode_history_request(stamp: Optional[datetime.datetime], count: int, epc: int = 0xED) -> bytes:
    """ED/EF EDT (7 bytes); ``stamp`` None writes the default value.

    ED: ``stamp`` on a half hour, count 1..12; EF (``epc=0xEF``): count 1..10.
    """
    return _encode_history_header(epc, stamp, count)


def decode_property_map(edt: bytes, epc: int = 0x9F) -> Tuple[int, ...]:
    """9D/9E/9F (section 4.3): format 1 lists, format 2 (>= 16) is a bitmap."""
    if not edt:
        raise FrameError("EPC %02X: empty property map" % epc)
    count = edt[0]
    if count < 16:
        _need_len(epc, edt, 1 + count)
        epcs = sorted(set(edt[1:]))
        if len(epcs) != count:
            raise FrameError("EPC %02X: property map lists a code twice" % epc)
        return tuple(epcs)
    _need_len(epc, edt, 17)
    epcs = sorted(((bit + 8) << 4) | low
                  for low in range(16) for bit in range(8) if edt[1 + low] & (1 << bit))
    if len(epcs) != count:
        raise FrameError("EPC %02X: property map count %d but %d bits set" % (epc, count, len(epcs)))
    return tuple(epcs)


def encode_property_map(epcs: Iterable[int]) -> bytes:
    """9D/9E/9F EDT: a list below 16 EPCs, the 16-byte bitmap from 16 on."""
    codes = sorted(set(int(epc) for epc in epcs))
    if any(not 0x80 <= code <= 0xFF for code in codes):
        raise ValueError("property map EPCs must be 0x80..0xFF")
    if len(codes) < 16:
        return bytes([len(codes)] + codes)
    bitmap = bytearray(16)
    for code in codes:
        bitmap[code & 0x0F] |= 1 << ((code >> 4) - 8)
    return bytes([len(codes)]) + bytes(bitmap)


def decode_instance_list(edt: bytes, epc: int = 0xD5) -> Tuple[int, ...]:
    """Node profile D5/D6: a count byte, then that many 3-byte EOJs."""
    if not edt:
        raise FrameError("EPC %02X: empty instance list" % epc)
    _need_len(epc, edt, 1 + 3 * edt[0])
    return tuple(int.from_bytes(edt[i:i + 3], "big") for i in range(1, len(edt), 3))


def encode_instance_list(eojs: Sequence[int]) -> bytes:
    """Node profile D5/D6 EDT."""
    if len(eojs) > 84:
        raise ValueError("at most 84 instances")
    return bytes([len(eojs)]) + b"".join(int(eoj).to_bytes(3, "big") for eoj in eojs)


def _decode_choice(epc: int, edt: bytes, true_code: int, false_code: int) -> bool:
    _need_len(epc, edt, 1)
    if edt[0] not in (true_code, false_code):
        raise FrameError("EPC %02X: unknown code %02X" % (epc, edt[0]))
    return edt[0] == true_code


def _decode_unit(edt: bytes) -> EnergyUnit:
    _need_len(0xE1, edt, 1)
    if edt[0] not in ENERGY_UNITS:
        raise FrameError("EPC E1: unknown unit code %02X" % edt[0])
    return EnergyUnit(edt[0], ENERGY_UNITS[edt[0]])


def _decode_digits(edt: bytes) -> int:
    _need_len(0xD7, edt, 1)
    if not 1 <= edt[0] <= 8:
        raise FrameError("EPC D7: effective digits %d outside 1..8" % edt[0])
    return edt[0]


def _decode_version(edt: bytes) -> StandardVersion:
    _need_len(0x82, edt, 4)
    if not 0x41 <= edt[2] <= 0x5A and not 0x61 <= edt[2] <= 0x7A:
        raise FrameError("EPC 82: release byte %02X is not a letter" % edt[2])
    return StandardVersion(chr(edt[2]).upper(), edt[3])


def _decode_time(edt: bytes) -> datetime.time:
    _need_len(0x97, edt, 2)
    try:
        return datetime.time(edt[0], edt[1])
    except ValueError:
        raise FrameError("EPC 97: invalid time %s" % edt.hex().upper()) from None


def _decode_date(edt: bytes) -> datetime.date:
    _need_len(0x98, edt, 4)
    try:
        return datetime.date((edt[0] << 8) | edt[1], edt[2], edt[3])
    except ValueError:
        raise FrameError("EPC 98: invalid date %s" % edt.hex().upper()) from None


def _decode_location(edt: bytes):
    _need_len(0x81, edt, 1, 17)
    return edt[0] if len(edt) == 1 else bytes(edt)


def _decode_uint(epc: int, size: int):
    def decode(edt: bytes) -> int:
        _need_len(epc, edt, size)
        return int.from_bytes(edt, "big")
    return decode


def _decode_serial(edt: bytes) -> str:
    _need_len(0x8D, edt, 12)
    # Makers pad with NULs; a non-ASCII byte is shown, not fatal.
    return edt.rstrip(b"\x00").decode("ascii", "replace")


def _decode_history_day(edt: bytes) -> Raw:
    _need_len(0xE5, edt, 1)
    if edt[0] == HISTORY_DAY_DEFAULT:
        return NO_DATA
    if edt[0] > HISTORY_DAY_MAX:
        raise FrameError("EPC E5: day %d outside 0..%d and not the default 0xFF" % (edt[0], HISTORY_DAY_MAX))
    return edt[0]


_METER_DECODERS = {
    0x80: lambda edt: _decode_choice(0x80, edt, 0x30, 0x31),
    0x81: _decode_location,
    0x82: _decode_version,
    0x88: lambda edt: _decode_choice(0x88, edt, 0x41, 0x42),
    0x8A: _decode_uint(0x8A, 3),
    0x8D: _decode_serial,
    0x97: _decode_time,
    0x98: _decode_date,
    0x9D: lambda edt: decode_property_map(edt, 0x9D),
    0x9E: lambda edt: decode_property_map(edt, 0x9E),
    0x9F: lambda edt: decode_property_map(edt, 0x9F),
    0xD0: decode_fixed_time_pair,
    0xD3: lambda edt: _check_coefficient(_decode_uint(0xD3, 4)(edt)),
    0xD7: _decode_digits,
    0xE0: lambda edt: decode_energy(edt, 0xE0),
    0xE1: _decode_unit,
    0xE2: lambda edt: decode_daily_history(edt, 0xE2),
    0xE3: lambda edt: decode_energy(edt, 0xE3),
    0xE4: lambda edt: decode_daily_history(edt, 0xE4),
    0xE5: _decode_history_day,
    0xE7: decode_power,
    0xE8: decode_currents,
    0xEA: lambda edt: decode_fixed_time(edt, 0xEA),
    0xEB: lambda edt: decode_fixed_time(edt, 0xEB),
    0xEC: lambda edt: decode_energy_history(edt, 0xEC),
    0xED: lambda edt: decode_history_request(edt, 0xED),
    0xEE: lambda edt: decode_energy_history(edt, 0xEE),
    0xEF: lambda edt: decode_history_request(edt, 0xEF),
}


def _check_coefficient(value: int) -> int:
    if value > 999_999:
        raise FrameError("EPC D3: coefficient %d above 999999" % value)
    return value


_NODE_DECODERS = {
    0x80: lambda edt: _decode_choice(0x80, edt, 0x30, 0x31),
    0x8A: _decode_uint(0x8A, 3),
    0x9D: lambda edt: decode_property_map(edt, 0x9D),
    0x9E: lambda edt: decode_property_map(edt, 0x9E),
    0x9F: lambda edt: decode_property_map(edt, 0x9F),
    0xD3: _decode_uint(0xD3, 3),
    0xD4: _decode_uint(0xD4, 2),
    0xD5: lambda edt: decode_instance_list(edt, 0xD5),
    0xD6: lambda edt: decode_instance_list(edt, 0xD6),
}


def decode_meter_property(epc: int, edt: bytes):
    """Typed value of a meter (0x0288) property; see the module docstring."""
    decoder = _METER_DECODERS.get(epc)
    if decoder is None:
        return bytes(edt)
    return decoder(bytes(edt))


def decode_node_property(epc: int, edt: bytes):
    """Typed value of a node profile (0x0EF0) property (D5/D6 -> EOJ tuple)."""
    decoder = _NODE_DECODERS.get(epc)
    if decoder is None:
        return bytes(edt)
    return decoder(bytes(edt))


def decode_property(eoj: int, epc: int, edt: bytes):
    """Typed value of ``epc`` as sent by object ``eoj`` (meter, node profile or a
    LAN device class of ``DEVICE_PROPERTIES``)."""
    if eoj_class(eoj) == NODE_PROFILE_CLASS:
        return decode_node_property(epc, edt)
    if eoj_class(eoj) == METER_CLASS:
        return decode_meter_property(epc, edt)
    if eoj_class(eoj) in DEVICE_PROPERTIES:
        return decode_device_property(eoj, epc, edt)
    return bytes(edt)


def encode_meter_property(epc: int, value) -> bytes:
    """Inverse of ``decode_meter_property`` for its typed EPCs."""
    if epc == 0x80:
        return b"\x30" if value else b"\x31"
    if epc == 0x88:
        return b"\x41" if value else b"\x42"
    if epc == 0x81:
        return bytes([value]) if isinstance(value, int) else bytes(value)
    if epc == 0x82:
        return bytes([0, 0, ord(value.release), value.revision])
    if epc == 0x8A:
        return int(value).to_bytes(3, "big")
    if epc == 0x8D:
        raw = value.encode("ascii")
        if len(raw) > 12:
            raise ValueError("serial number longer than 12 characters")
        return raw.ljust(12, b"\x00")
    if epc == 0x97:
        return bytes([value.hour, value.minute])
    if epc == 0x98:
        return struct.pack(">HBB", value.year, value.month, value.day)
    if epc in (0x9D, 0x9E, 0x9F):
        return encode_property_map(value)
    if epc == 0xD0:
        return _encode_datetime(value.timestamp, True) + encode_energy(value.normal) + encode_energy(value.reverse)
    if epc == 0xD3:
        if not 0 <= value <= 999_999:
            raise ValueError("coefficient %r out of range" % (value,))
        return int(value).to_bytes(4, "big")
    if epc == 0xD7:
        if not 1 <= value <= 8:
            raise ValueError("digits %r out of range" % (value,))
        return bytes([value])
    if epc in (0xE0, 0xE3):
        return encode_energy(value)
    if epc == 0xE1:
        code = value.code if isinstance(value, EnergyUnit) else int(value)
        if code not in ENERGY_UNITS:
            raise ValueError("unknown unit code %r" % (code,))
        return bytes([code])
    if epc in (0xE2, 0xE4):
        return encode_daily_history(value.day, value.values)
    if epc == 0xE5:
        return bytes([_history_day_code(value)])
    if epc == 0xE7:
        return encode_power(value)
    if epc == 0xE8:
        return encode_currents(value.r, value.t)
    if epc in (0xEA, 0xEB):
        return encode_fixed_time(value.timestamp, value.raw)
    if epc in (0xEC, 0xEE):
        return encode_energy_history(value.timestamp, value.pairs, epc)
    if epc in (0xED, 0xEF):
        return encode_history_request(value.timestamp, value.count, epc)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise ValueError("no encoder for EPC %02X" % epc)


# ---------------------------------------------------------------- energy arithmetic


def unit_kwh(unit_code: int) -> Decimal:
    """kWh per count for an E1 code; FrameError for an unknown code."""
    try:
        return ENERGY_UNITS[unit_code]
    except KeyError:
        raise FrameError("unknown E1 unit code %r" % (unit_code,)) from None


def energy_kwh(raw: int, coefficient: int, unit_code: int) -> float:
    """kWh = raw x D3 x E1, computed exactly, returned as the nearest float.

    ``raw`` must be a number (check ``is_value`` first); pass coefficient 1
    when the meter has no D3 (section 2.4).
    """
    if isinstance(raw, NoValue):
        raise ValueError("energy_kwh() got %r, not a count" % (raw,))
    return float(Decimal(int(raw)) * int(coefficient) * unit_kwh(unit_code))


def energy_delta(prev_raw: int, now_raw: int, digits: int) -> int:
    """Counts consumed between two readings, across a wrap at 10**digits (D7)."""
    if not 1 <= digits <= 8:
        raise ValueError("digits must be 1..8, got %r" % (digits,))
    return (int(now_raw) - int(prev_raw)) % (10 ** digits)


# ---------------------------------------------------------------- LAN device classes
#
# Facts from the ECHONET Lite Appendix (Detailed Requirements for ECHONET
# Device Objects) and its machine-readable form (MRA): sizes, units, scaling
# and valid ranges of the properties kei records from devices on the home
# LAN.  The device super class (0x80, 0x84, 0x85) is shared by every class.
#
# "No data" codes: these properties carry the Appendix's generic codes
# (MRA overflowCode/underflowCode true, section 2.3 of echonet.md):
#   uint8/16/32  0xFF / 0xFFFF / 0xFFFFFFFF = overflow,
#                0xFE / 0xFFFE / 0xFFFFFFFE = underflow
#   int32        0x7FFFFFFF = overflow, 0x80000000 = underflow
# Neither is a reading, so both decode to NoValue (OVERFLOW / UNDERFLOW).
# Any other raw value outside the valid range is a FrameError.

WATER_HEATER_CLASS = 0x026B       # electric water heater (EcoCute heat pump)
STORAGE_BATTERY_CLASS = 0x027D    # storage battery
SOLAR_CLASS = 0x0279              # home solar power generation

WATER_HEATER = 0x026B01
STORAGE_BATTERY = 0x027D01
SOLAR = 0x027901


class Code(namedtuple("Code", "code name")):
    """A property whose value is one of a list of codes (an operating mode)."""

    __slots__ = ()
    code: int      # the byte on the wire, e.g. 0x42
    name: str      # the Appendix's meaning, e.g. 'charging'


class PropertySpec(Frozen):
    """One property of a LAN device class, as the Appendix defines it.

    ``kind``: 'uint' / 'int' (a measured number: ``raw x scale`` in ``unit``,
    valid ``minimum..maximum`` raw), 'switch' (two codes: ``codes`` maps the
    true code and the false code to True/False), or 'code' (``codes`` maps
    each code to its name).
    """

    __slots__ = ("name", "kind", "size", "unit", "scale", "minimum", "maximum", "codes")
    DEFAULTS = {"unit": "", "scale": Decimal(1), "minimum": 0, "maximum": 0, "codes": ()}
    name: str
    kind: str
    size: int
    unit: str
    scale: Decimal
    minimum: int
    maximum: int
    codes: Tuple[Tuple[int, object], ...]


def _measure(name: str, size: int, unit: str, maximum: int, scale: str = "1",
             minimum: int = 0, signed: bool = False) -> PropertySpec:
    return PropertySpec(name, "int" if signed else "uint", size, unit, Decimal(scale), minimum, maximum)


def _switch(name: str, true_code: int, false_code: int) -> PropertySpec:
    return PropertySpec(name, "switch", 1, codes=((true_code, True), (false_code, False)))


def _codes(name: str, **codes: int) -> PropertySpec:
    return PropertySpec(name, "code", 1, codes=tuple(sorted((code, label.replace("_", " "))
                                                            for label, code in codes.items())))


_ENERGY_MAX = 0x3B9AC9FF          # 999,999,999 x 0.001 kWh
_SUPER_CLASS = {
    0x80: _switch("operation status", 0x30, 0x31),
    0x84: _measure("instantaneous power consumption", 2, "W", 0xFFFD),
    0x85: _measure("cumulative energy consumption", 4, "kWh", _ENERGY_MAX, "0.001"),
}

_BATTERY_MODES = dict(other=0x40, rapid_charging=0x41, charging=0x42, discharging=0x43, standby=0x44,
                      test=0x45, automatic=0x46, restart=0x48, capacity_recalculation=0x49)

DEVICE_PROPERTIES = {
    WATER_HEATER_CLASS: {**_SUPER_CLASS,
        0xB0: _codes("automatic water heating setting", automatic=0x41, manual_heating=0x42,
                     manual_stop=0x43),
        0xB2: _switch("water heating status (heating)", 0x41, 0x42),
        0xC1: _measure("water temperature in the tank", 1, "degC", 0x64),
        0xC3: _switch("hot water supply status (supplying)", 0x41, 0x42),
        0xD1: _measure("hot water temperature setting", 1, "degC", 0x64),
        0xE1: _measure("remaining hot water", 2, "L", 0xFFFD),
        0xE2: _measure("tank capacity", 2, "L", 0xFFFD),
    },
    STORAGE_BATTERY_CLASS: {**_SUPER_CLASS,
        0xCF: _codes("working operation status", **_BATTERY_MODES),
        0xD0: _measure("rated electric energy", 4, "Wh", 0x3B9AC9FF),
        # positive = charging, negative = discharging
        0xD3: _measure("charging/discharging power", 4, "W", 0x3B9AC9FF, minimum=-0x3B9AC9FF, signed=True),
        0xD6: _measure("cumulative discharging energy", 4, "kWh", _ENERGY_MAX, "0.001"),
        0xD8: _measure("cumulative charging energy", 4, "kWh", _ENERGY_MAX, "0.001"),
        0xDA: _codes("operation mode setting", **_BATTERY_MODES),
        0xE2: _measure("remaining stored electricity", 4, "Wh", 0x3B9AC9FF),
        0xE4: _measure("remaining stored electricity (state of charge)", 1, "%", 0x64),
    },
    SOLAR_CLASS: {**_SUPER_CLASS,
        0xE0: _measure("instantaneous generation", 2, "W", 0xFFFD),
        0xE1: _measure("cumulative energy generated", 4, "kWh", _ENERGY_MAX, "0.001"),
        0xE3: _measure("cumulative energy sold", 4, "kWh", _ENERGY_MAX, "0.001"),
    },
}

# What a reader asks each class for by default: every property above.
DEFAULT_EPCS = {cls: tuple(sorted(props)) for cls, props in DEVICE_PROPERTIES.items()}

# Property maps (9D/9E/9F) are answered by every class.
_MAP_EPCS = (0x9D, 0x9E, 0x9F)

_GENERIC_CODES = {
    # (kind, size): (overflow, underflow)
    ("uint", 1): (0xFF, 0xFE), ("uint", 2): (0xFFFF, 0xFFFE), ("uint", 4): (0xFFFFFFFF, 0xFFFFFFFE),
    ("int", 1): (0x7F, -0x80), ("int", 2): (0x7FFF, -0x8000), ("int", 4): (0x7FFFFFFF, -0x80000000),
}


def device_property_spec(eoj: int, epc: int) -> Optional[PropertySpec]:
    """The PropertySpec of ``epc`` on object ``eoj``, or None if kei does not know it."""
    return DEVICE_PROPERTIES.get(eoj_class(eoj), {}).get(epc)


def _scaled(raw: int, scale: Decimal):
    if scale == 1:
        return raw
    return float(Decimal(raw) * scale)


def decode_device_property(eoj: int, epc: int, edt: bytes):
    """Typed value of a LAN device property (water heater, battery, solar).

    Measured numbers come scaled to their unit (int when the scale is 1,
    float otherwise, e.g. 0x85 in kWh); overflow/underflow codes give
    NoValue; two-state properties give bool; modes give ``Code``; property
    maps a tuple of EPCs.  Unknown EPCs come back as the EDT bytes.
    """
    edt = bytes(edt)
    if epc in _MAP_EPCS:
        return decode_property_map(edt, epc)
    spec = device_property_spec(eoj, epc)
    if spec is None:
        return edt
    _need_len(epc, edt, spec.size)
    if spec.kind == "switch":
        return _decode_choice(epc, edt, spec.codes[0][0], spec.codes[1][0])
    if spec.kind == "code":
        names = dict(spec.codes)
        if edt[0] not in names:
            raise FrameError("EPC %02X (%s): unknown code %02X" % (epc, spec.name, edt[0]))
        return Code(edt[0], names[edt[0]])
    raw = int.from_bytes(edt, "big", signed=spec.kind == "int")
    overflow, underflow = _GENERIC_CODES[(spec.kind, spec.size)]
    if raw == overflow:
        return OVERFLOW
    if raw == underflow:
        return UNDERFLOW
    if not spec.minimum <= raw <= spec.maximum:
        raise FrameError("EPC %02X (%s): %d outside %d..%d" % (epc, spec.name, raw, spec.minimum, spec.maximum))
    return _scaled(raw, spec.scale)


def encode_device_property(eoj: int, epc: int, value) -> bytes:
    """Inverse of ``decode_device_property`` (ValueError for what the wire cannot carry)."""
    if epc in _MAP_EPCS:
        return encode_property_map(value)
    spec = device_property_spec(eoj, epc)
    if spec is None:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        raise ValueError("no encoder for EPC %02X of class %04X" % (epc, eoj_class(eoj)))
    if spec.kind == "switch":
        return bytes([spec.codes[0][0] if value else spec.codes[1][0]])
    if spec.kind == "code":
        code = value.code if isinstance(value, Code) else int(value)
        if code not in dict(spec.codes):
            raise ValueError("EPC %02X: unknown code %r" % (epc, code))
        return bytes([code])
    overflow, underflow = _GENERIC_CODES[(spec.kind, spec.size)]
    if value == OVERFLOW or value == UNDERFLOW:
        raw = overflow if value == OVERFLOW else underflow
    else:
        exact = Decimal(str(value)) / spec.scale
        raw = int(exact.to_integral_value())
        if raw != exact or not spec.minimum <= raw <= spec.maximum:
            raise ValueError("EPC %02X: %r is not a valid %s" % (epc, value, spec.name))
    return raw.to_bytes(spec.size, "big", signed=spec.kind == "int")


def record_value(value) -> Optional[Union[int, float]]:
    """The number kei records for a decoded device value, or None for no number.

    bool -> 1/0, Code -> its code byte, numbers unchanged; NoValue and
    anything else (bytes, maps) -> None.
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Code):
        return value.code
    if isinstance(value, (int, float)):
        return value
    return None


# Node profile: more of its properties, for discovery and for answering it.


class NodeVersion(namedtuple("NodeVersion", "major minor")):
    """Node profile 0x82: the ECHONET Lite version (1.13 -> major 1, minor 13)."""

    __slots__ = ()
    major: int
    minor: int


def _decode_node_version(edt: bytes) -> NodeVersion:
    _need_len(0x82, edt, 4)
    return NodeVersion(edt[0], edt[1])


def _decode_identification(edt: bytes) -> bytes:
    # 0xFE, 3-byte maker code, 13 bytes unique to the node: kept as bytes.
    _need_len(0x83, edt, 17)
    return bytes(edt)


def _decode_product_code(edt: bytes) -> str:
    _need_len(0x8C, edt, 12)
    return edt.rstrip(b"\x00 ").decode("ascii", "replace")


def decode_class_list(edt: bytes, epc: int = 0xD7) -> Tuple[int, ...]:
    """Node profile D7 (self-node class list S): a count, then 2-byte class codes."""
    if not edt:
        raise FrameError("EPC %02X: empty class list" % epc)
    _need_len(epc, edt, 1 + 2 * min(edt[0], 8))
    return tuple(int.from_bytes(edt[i:i + 2], "big") for i in range(1, len(edt), 2))


def encode_class_list(classes: Sequence[int]) -> bytes:
    """Node profile D7 EDT (at most 8 classes are listed; the count says all)."""
    listed = list(classes)[:8]
    return bytes([len(classes)]) + b"".join(int(cls).to_bytes(2, "big") for cls in listed)


_NODE_DECODERS.update({
    0x82: _decode_node_version,
    0x83: _decode_identification,
    0x8C: _decode_product_code,
    0xD7: decode_class_list,
})


def encode_node_property(epc: int, value) -> bytes:
    """Inverse of ``decode_node_property`` for the node profile EPCs."""
    if epc == 0x80:
        return b"\x30" if value else b"\x31"
    if epc == 0x82:
        return bytes([value.major, value.minor, 0x01, 0x00])
    if epc == 0x8A:
        return int(value).to_bytes(3, "big")
    if epc == 0x8C:
        raw = value.encode("ascii")
        if len(raw) > 12:
            raise ValueError("product code longer than 12 characters")
        return raw.ljust(12, b"\x00")
    if epc in _MAP_EPCS:
        return encode_property_map(value)
    if epc == 0xD3:
        return int(value).to_bytes(3, "big")
    if epc == 0xD4:
        return int(value).to_bytes(2, "big")
    if epc in (0xD5, 0xD6):
        return encode_instance_list(value)
    if epc == 0xD7:
        return encode_class_list(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise ValueError("no encoder for node profile EPC %02X" % epc)
