"""An emulated SKSTACK-IP Wi-SUN module joined to a simulated smart meter.

``WisunModule`` is a simulated device (interface: ``keilib.sim.transport``):
the host writes SK commands, the module answers as the real firmware does and
reaches a ``keilib.sim.meter.SmartMeter`` over an imaginary radio.  Reference:
shared/docs/skstack.md (section numbers below refer to it).

Module kinds (``MODULE_KINDS``; differences are data, not code paths)
--------------------------------------------------------------------
=========  ==============================  ======  ===============  =============  ========
kind       product                         stack   ERXUDP payload   WOPT/ROPT      EVER
=========  ==============================  ======  ===============  =============  ========
ips        Tessera RL7023 Stick-D/IPS      single  hex ASCII        FAIL ER04      1.2.8
dss        Tessera RL7023 Stick-D/DSS      dual    hex ASCII        FAIL ER04      1.5.2 [?]
bp35a1     ROHM BP35A1                     single  binary (WOPT 00) yes            1.2.10
bp35c2     ROHM BP35C0 / BP35C2            dual    binary (WOPT 00) yes            1.5.2
=========  ==============================  ======  ===============  =============  ========

Host -> module (every SK line ends CR LF; bare LF is accepted too)::

    SKVER | SKAPPVER | SKINFO | SKRESET
    SKSREG <Sxx> [<hex value>]            SKSETPWD <LEN> <PWD>      SKSETRBID <ID>
    SKSCAN <MODE> <MASK> <DUR>[ <SIDE>]   SKLL64 <ADDR64>           SKJOIN <IPADDR>
    SKREJOIN | SKTERM                     SKPING [<SIDE> ]<IPADDR>
    SKSENDTO <H> <IP> <PORT> <SEC>[ <SIDE>] <LEN> <LEN raw bytes, no terminator>
    SKUDPPORT <H> <PORT> | SKADDNBR <IP> <MAC> | SKSETPSK <LEN> <KEY>
    SKTABLE 1|2|E | SKSAVE | SKLOAD | SKERASE
    WOPT <MODE>\\r | ROPT\\r | WUART <MODE>\\r | RUART\\r     (CR only; ROHM kinds)

``[ <SIDE>]`` is present exactly on dual-stack kinds.  Hex arguments may omit
leading zeros and may be lower case; addresses must be the full colon form.

Module -> host: every line ends CR LF and is written in one piece, except the
product-command replies (``OK\\r``, ``OK 01\\r``).  With SFE=1 (power-on) the
input is echoed as it arrives; the SKSENDTO payload never is (the header echo
is followed by CR LF once the payload is complete; a bare CR LF with SFE=0).
Lines the module prints::

    OK | FAIL ERxx | EVER v | EAPPVER v | ESREG v | <IPADDR> (SKLL64: no OK)
    EINFO <LL> <MAC> <CH> <PAN> <FFFE | SIDE>
    EVENT <NUM> <SENDER>[ <SIDE>][ <PARAM>]
    EPANDESC, then "  Channel:xx" "  Channel Page:09" "  Pan ID:xxxx" "  Addr:<16>"
              "  LQI:xx" ["  Side:0"] ["  PairID:<8>"]
    ERXUDP <SRC> <DST> <RPORT> <LPORT> <SRCMAC>[ <RSSI>] <SEC>[ <SIDE>] <LEN> <DATA>
           (RSSI: dual with SA2=1; DATA hex, or LEN raw bytes in binary mode)
    EPONG <IPADDR> | EEDSCAN + "<[SIDE ]CH RSSI ...>" | EPORT/EADDR/ENEIGHBOR tables

FAIL codes: ER04 unknown command, ER05 wrong argument count, ER06 bad
format/range or read-only register, ER09 input line overflow, ER10 execution
failed (no session for SKTERM/SKREJOIN, unused UDP handle).

Asynchronous behaviour: scan timeline (EVENT 20, EPANDESC, EVENT 22, delays by
DURATION per section 3.8, meter found only from ``scan_min`` on); PANA join
(EVENT 21 02, EVENT 02, four PANA requests on 02CC each answered by EVENT 21
00, EVENT 25, the meter's instance-list INF to FF02::1 about 3 s later);
SKSENDTO (EVENT 21 then OK, the meter's reply after 0.21-0.47 s); the
meter's EA/EB INF after every :00/:30; EVENT 29 at the end of the PANA
session lifetime, then re-authentication ending in EVENT 25 (or 24); EVENT
32/33 from a sliding one-hour transmit-time account (register SFD/SFB).

Choices where the documents are silent [?]: every ESREG answer is one
non-empty token of the register's fixed width, and the dual-stack HAN
registers start "unset" (S0B sixteen '0', S1C 2592000 s, S1F 0; see
REGISTERS); product commands are echoed like any input; RL7023 kinds answer all four product commands ``FAIL ER04\\r\\n``;
simple commands answer at once; EVENT 32/33 carry the module's own address;
SKSTART, SKSEND*, SKCONNECT, SKCLOSE, SKREGDEV, SKRMDEV, SKSETKEY, SKRMKEY,
SKSECENABLE, SKDSLEEP and SKRFLO are not emulated (FAIL ER04).

Faults (``FAULTS``; run time: ``module.inject(name, **params)``, the method
named in the table, or one text command ``module.control("delay_reply 3 1")``
(``CONTROL_GRAMMAR``; the CLI's ``--control`` reads these from stdin);
construction: the keyword/URL option shown)
--------------------------------------------------------------------------
================  ==========================  ===============================================
name              option at construction      effect
================  ==========================  ===============================================
out_of_range      out_of_range=1              meter unreachable: scans find nothing, SKSENDTO
                                              and PANA get EVENT 21 01, joins end in EVENT 24
silent            silent=1                    meter radio up but it answers nothing: no
                                              replies, no INF, joins time out (EVENT 24),
                                              SKTERM -> 28
join_failures     join_failures=N             the next N joins are refused (EVENT 24), as
                                              with a wrong ID/password
session_expiry    lifetime=S, reauth=fail     EVENT 29 now, then re-auth -> EVENT 25, or 24
                                              when reauth='fail'
peer_terminate    terminate_after=S           the meter ends the session: PANA PTR, EVENT 26
tx_limit          tx_limit_after=S            EVENT 32 now, sends refused (EVENT 21 01) for
                  [tx_limit_for=S], or        ``seconds`` (option: tx_limit_for, default
                  tx_budget_ms=N              60), then EVENT 33
garbage           garbage_every=S             raw bytes (default: non-ASCII junk + CR LF)
                                              on the line
bad_erxudp        bad_erxudp=MODE[:N]         the next ``count`` (N, default 1) meter
                                              replies are 'truncated' or 'malformed' ERXUDP
delay_reply       delay_reply=S[:N]           the next ``count`` replies come ``seconds`` late
duplicate_reply   duplicate_reply=N           the next ``count`` replies are sent twice
reset             reset_after=S               unsolicited module reset (state lost, nothing
                                              printed)
unplug / replug   unplug_after=S              the device disappears (port closed, as a pulled
                  [unplug_for=S]              USB stick); it comes back, powered up afresh,
                                              with ``replug`` or ``seconds`` later (option:
                                              unplug_for, default 5)
================  ==========================  ===============================================

Timed start options (``*_after``) fire once, S module seconds (``scale``
applies) after the first PANA session comes up (the first EVENT 25), so a
client has joined before they hit; ``garbage_every`` runs from construction,
every S seconds.  The reply options count the meter's replies to the host's
requests from the first one (not its INF notifications).  Timed faults
survive a module reset.  unplug/replug need a transport to pull:
``bind_transport(t)`` with ``t.unplug()``/``t.replug()`` (``PtyTransport``;
``python3 -m keilib.sim`` binds its pty, a named ``sim://wisun?name=x`` port
binds the registry, as ``keilib.sim.protocol_sim.unplug(name)``/``replug``).
"""

from __future__ import annotations

import logging
import random
import re
import struct
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Tuple

from keilib.clock import SYSTEM_CLOCK, Clock, ScaledClock
from keilib.sim.transport import Scheduler

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# Module kinds
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class ModuleKind:
    key: str
    product: str
    dual: bool                 # SIDE arguments and fields (section 1)
    binary_default: bool       # ERXUDP data raw out of the box (WOPT 00)
    product_commands: bool     # WOPT/ROPT/WUART/RUART exist (ROHM firmware)
    version: str               # EVER
    app_version: str           # EAPPVER [?] except BP35A1
    mac_prefix: str            # own MAC: prefix + seed-derived digits
    s16_min: int               # lowest PANA lifetime S16 accepts


MODULE_KINDS: Dict[str, ModuleKind] = {
    "ips": ModuleKind("ips", "Tessera RL7023 Stick-D/IPS", False, False, False,
                      "1.2.8", "rev26e", "100723FFFEA0", 0x3C),
    "dss": ModuleKind("dss", "Tessera RL7023 Stick-D/DSS", True, False, False,
                      "1.5.2", "rev28a", "100723FFFEA1", 0x60),
    "bp35a1": ModuleKind("bp35a1", "ROHM BP35A1", False, True, True,
                         "1.2.10", "rev26e", "001D1290", 0x3C),
    "bp35c2": ModuleKind("bp35c2", "ROHM BP35C0/BP35C2", True, True, True,
                         "1.5.2", "rev28a", "001D1291", 0x60),
}

DEFAULT_ROUTE_B_ID = "00112233445566778899AABBCCDDEEFF"
DEFAULT_PASSWORD = "0123456789AB"
MULTICAST_ALL_NODES = "FF02:0000:0000:0000:0000:0000:0000:0001"
ECHONET_PORT = 0x0E1A
PANA_PORT = 0x02CC
FIRST_CHANNEL, LAST_CHANNEL = 0x21, 0x3C   # logical channels 33..60

# Delays in seconds of module time, (low, high) drawn uniformly; section 9.3.
REALISTIC_LATENCY: Dict[str, Tuple[float, float]] = {
    "sendto_ack": (0.115, 0.345),    # SKSENDTO -> EVENT 21
    "reply": (0.21, 0.47),           # OK -> the meter's ERXUDP
    "ns": (0.05, 0.12),              # EVENT 21 02 -> EVENT 02 (NA)
    "pana_rtt": (0.13, 0.35),        # module's PANA message -> meter's next one
    "pana_tx": (0.005, 0.02),        # meter's PANA message -> module's EVENT 21
    "pana_final": (1.6, 2.0),        # keys derived -> EVENT 25 (OK -> 25 = ~3.3 s)
    "instance_list": (2.5, 3.5),     # EVENT 25 -> INF D5
    "join_timeout": (20.0, 20.0),    # no answer: PANA retransmissions give up -> EVENT 24
    "term": (0.3, 1.5),              # SKTERM -> EVENT 27
    "term_timeout": (6.0, 6.0),      # SKTERM, meter silent -> EVENT 28
    "ping": (0.05, 0.15),            # SKPING -> EPONG
    "notify": (10.0, 120.0),         # :00/:30 -> EA/EB INF (AIF: within 5 min)
    "channel_overhead": (0.02, 0.02),  # per scanned channel on top of the dwell
}
LATENCIES = ("realistic", "zero")

SESSION_NONE, SESSION_JOINING, SESSION_UP = "none", "joining", "up"
TX_WINDOW = 3600.0                 # seconds; section 9.1
TX_BUDGET_MS = 360_000             # 360 s per hour
AIRTIME_MS_PER_BYTE = 0.08         # 100 kbps
AIRTIME_OVERHEAD_BYTES = 48        # PHY + MAC + 6LoWPAN + UDP, roughly
MAX_LINE = 1024

PRODUCT_COMMANDS = (b"WOPT", b"ROPT", b"WUART", b"RUART")

# Scheduler tags: the meter's timers and the timed faults (``*_after``,
# ``garbage_every``: the test harness, not the firmware) survive a module
# reset, the rest do not.
TAG_METER = "meter"
TAG_FAULT = "fault"
KEEP_ON_RESET = (TAG_METER, TAG_FAULT)
BAD_ERXUDP_MODES = ("truncated", "malformed")


class _Fail(Exception):
    """Raised inside a command handler: answer FAIL ER<code>."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


# --------------------------------------------------------------------------
# Registers (section 3.5)
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Register:
    width: int          # hex digits printed by ESREG; 1 = flag; 0 = 8-char string
    writable: bool
    low: int = 0
    high: int = 0xFFFFFFFF
    initial: Any = 0
    dual_only: bool = False


# Every read answers one non-empty token of fixed width (skstack.md section
# 10.12: output is upper case and fixed width): clients such as keilog take
# ``line.split()[1]`` of every ESREG they read.  Where skstack.md section 3.5
# gives no initial value (the HAN-only rows of the dual-stack kinds), the
# choice made here is the register's "unset" value at its full width:
#   S0B  HAN Pairing ID, 16 characters: "0000000000000000" (none set);
#   S1C  PAA key-update period, 8 hex digits: 2592000 s (30 days; the upper
#        end of the range keilog's register table quotes, 0x60..2592000);
#   S1F  relay-device MAC, 16 hex digits, read-only: 0 (no relay device).
# A single-stack kind has none of the dual-only registers: reading one is
# FAIL ER06 like any unknown register (section 3.5).
HAN_PAIRING_UNSET = "0" * 16
PAA_KEY_PERIOD = 2592000

REGISTERS: Dict[int, Register] = {
    0x01: Register(16, False),                           # own MAC (value filled at run time)
    0x02: Register(2, True, 0x21, 0x3C, 0x21),           # channel
    0x03: Register(4, True, 0, 0xFFFF, 0xFFFF),          # PAN ID
    0x07: Register(8, False),                            # MAC frame counter
    0x0A: Register(0, True, initial="CCDDEEFF"),         # Pairing ID
    0x0B: Register(0, True, initial=HAN_PAIRING_UNSET, dual_only=True),  # HAN Pairing ID
    0x15: Register(1, True, 0, 1, 0),
    0x16: Register(8, True, 0x3C, 0xFFFFFFFF, 0x384),    # PANA lifetime (low: per kind)
    0x17: Register(1, True, 0, 1, 1),
    0x1C: Register(8, True, 0x60, PAA_KEY_PERIOD, PAA_KEY_PERIOD, dual_only=True),  # HAN key period
    0x1F: Register(16, False, dual_only=True),           # HAN relay-device MAC
    0xA0: Register(1, True, 0, 1, 1),
    0xA1: Register(1, True, 0, 1, 1),
    0xA2: Register(1, True, 0, 1, 0),                    # dual: RSSI in ERXUDP
    0xA9: Register(1, True, 0, 1, 1, dual_only=True),
    0xF0: Register(1, True, 0, 1, 0, dual_only=True),
    0xFB: Register(1, False),                            # TX-time limit active
    0xFD: Register(16, True, 0, 0),                      # cumulative TX ms; only 0 writable
    0xFE: Register(1, True, 0, 1, 1),                    # echo back
    0xFF: Register(1, True, 0, 1, 0),
}


# --------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------
_IPV6 = re.compile(r"^[0-9A-Fa-f]{4}(:[0-9A-Fa-f]{4}){7}$")


def link_local(mac: str) -> str:
    """SKLL64: FE80::/64 + the MAC with the U/L bit (0x02 of byte 0) inverted."""
    raw = bytearray(bytes.fromhex(mac))
    raw[0] ^= 0x02
    groups = ["%02X%02X" % (raw[i], raw[i + 1]) for i in range(0, 8, 2)]
    return "FE80:0000:0000:0000:" + ":".join(groups)


def parse_hex(token: str, max_digits: int, low: int = 0, high: Optional[int] = None) -> int:
    """An SK number: hex, leading zeros optional, any case; else FAIL ER06."""
    if not token or len(token) > max_digits or not re.fullmatch(r"[0-9A-Fa-f]+", token):
        raise _Fail(6)
    value = int(token, 16)
    if value < low or (high is not None and value > high):
        raise _Fail(6)
    return value


def parse_ipv6(token: str) -> str:
    if not _IPV6.match(token):
        raise _Fail(6)
    return token.upper()


def parse_mac(token: str) -> str:
    if not re.fullmatch(r"[0-9A-Fa-f]{16}", token):
        raise _Fail(6)
    return token.upper()


def _avp(code: int, value: bytes) -> bytes:
    """A PANA AVP (RFC 5191 section 8.1): code, flags, length, reserved, value, padding."""
    body = struct.pack(">HHHH", code, 0, len(value), 0) + value
    return body + b"\0" * (-len(body) % 4)


def pana_message(flags: int, msg_type: int, session_id: int, seq: int, avps: List[bytes]) -> bytes:
    body = b"".join(avps)
    return struct.pack(">HHHHII", 0, 16 + len(body), flags, msg_type, session_id, seq) + body


# PANA AVP codes and flags (RFC 5191)
AVP_AUTH, AVP_EAP, AVP_INTEGRITY, AVP_KEY_ID, AVP_NONCE, AVP_PRF, AVP_RESULT, AVP_LIFETIME = range(1, 9)
PANA_AUTH, PANA_TERMINATION = 2, 4
FLAG_REQUEST, FLAG_START, FLAG_COMPLETE = 0x8000, 0x4000, 0x2000


# --------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------
class WisunModule:
    """One emulated module plus the meter it reaches (see the module docstring).

    ``meter`` needs ``handle(frame, now)``, ``instance_list_inf()`` and
    ``notifications_due(now)``; default: ``keilib.sim.meter.SmartMeter(seed)``.
    ``clock`` drives every delay and the meter's wall time.  ``latency`` is
    'realistic' (section 9.3 figures, jittered by ``seed``) or 'zero'.
    """

    def __init__(self, kind: str = "bp35c2", meter: Any = None,
                 route_b_id: str = DEFAULT_ROUTE_B_ID, password: str = DEFAULT_PASSWORD,
                 clock: Optional[Clock] = None, latency: str = "realistic", seed: int = 1,
                 mac: Optional[str] = None, meter_mac: Optional[str] = None,
                 channel: int = 0x3B, pan_id: Optional[int] = None, lqi: int = 0xE1,
                 pairing_id: Optional[str] = None, scan_min: int = 4,
                 lifetime: float = 86400.0, reauth: str = "ok", join_failures: int = 0,
                 out_of_range: bool = False, silent: bool = False,
                 tx_budget_ms: int = TX_BUDGET_MS,
                 terminate_after: Optional[float] = None,
                 tx_limit_after: Optional[float] = None, tx_limit_for: float = 60.0,
                 garbage_every: Optional[float] = None,
                 bad_erxudp: Optional[Tuple[str, int]] = None,
                 delay_reply: Optional[Tuple[float, int]] = None, duplicate_reply: int = 0,
                 reset_after: Optional[float] = None,
                 unplug_after: Optional[float] = None, unplug_for: float = 5.0):
        if kind not in MODULE_KINDS:
            raise ValueError("unknown module kind %r (one of %s)" % (kind, ", ".join(MODULE_KINDS)))
        if latency not in LATENCIES:
            raise ValueError("latency must be one of %s" % ", ".join(LATENCIES))
        if reauth not in ("ok", "fail"):
            raise ValueError("reauth must be 'ok' or 'fail'")
        if not FIRST_CHANNEL <= channel <= LAST_CHANNEL:
            raise ValueError("channel must be 21..3C (hex)")
        for name, value in (("terminate_after", terminate_after), ("tx_limit_after", tx_limit_after),
                            ("reset_after", reset_after), ("unplug_after", unplug_after)):
            if value is not None and not 0 <= value < float("inf"):
                raise ValueError("%s must be a number of seconds >= 0, got %r" % (name, value))
        for name, value in (("tx_limit_for", tx_limit_for), ("unplug_for", unplug_for),
                            ("garbage_every", garbage_every)):
            if value is not None and not 0 < value < float("inf"):
                raise ValueError("%s must be a number of seconds > 0, got %r" % (name, value))
        if bad_erxudp is not None and (bad_erxudp[0] not in BAD_ERXUDP_MODES or bad_erxudp[1] < 1):
            raise ValueError("bad_erxudp must be (truncated|malformed, count >= 1), got %r"
                             % (bad_erxudp,))
        if delay_reply is not None and not (0 < delay_reply[0] < float("inf") and delay_reply[1] >= 1):
            raise ValueError("delay_reply must be (seconds > 0, count >= 1), got %r" % (delay_reply,))
        if duplicate_reply < 0:
            raise ValueError("duplicate_reply must be >= 0, got %r" % (duplicate_reply,))
        self.kind = MODULE_KINDS[kind]
        self.clock = clock or SYSTEM_CLOCK
        self.latency = latency
        self._rng = random.Random(seed)
        if meter is None:
            from keilib.sim.meter import SmartMeter
            meter = SmartMeter(seed=seed)
        self.meter = meter

        prefix = self.kind.mac_prefix
        self.mac = parse_mac(mac) if mac else (
            prefix + "%0*X" % (16 - len(prefix), self._rng.getrandbits(4 * (16 - len(prefix)))))
        self.address = link_local(self.mac)
        # The meter and the network it sits on (section 11 "persona config").
        self.meter_mac = parse_mac(meter_mac) if meter_mac else (
            "001C6400" + "%08X" % self._rng.getrandbits(32))
        self.meter_address = link_local(self.meter_mac)
        self.channel = channel
        self.pan_id = int(self.meter_mac[-4:], 16) if pan_id is None else pan_id
        self.lqi = lqi
        self.route_b_id = route_b_id
        self.password = password
        self.pairing_id = pairing_id if pairing_id is not None else route_b_id[-8:]
        self.scan_min = scan_min
        self.lifetime = float(lifetime)
        self.reauth = reauth
        self.tx_budget_ms = tx_budget_ms
        # Faults that are states (see FAULTS)
        self.out_of_range = out_of_range
        self.silent = silent
        self.join_failures = join_failures
        self._reply_faults: Deque[Tuple[str, Any]] = deque()
        # Faults set at construction: timed ones wait for the first session.
        self._transport: Any = None               # bind_transport(): what unplug pulls
        self.unplug_after, self.unplug_for = unplug_after, unplug_for
        self._timed_faults: List[Tuple[float, Callable[[], None]]] = []
        if terminate_after is not None:
            self._timed_faults.append((terminate_after, self.terminate_session))
        if tx_limit_after is not None:
            self._timed_faults.append((tx_limit_after, lambda: self.restrict_tx(tx_limit_for)))
        if reset_after is not None:
            self._timed_faults.append((reset_after, self.reset))
        if unplug_after is not None:
            self._timed_faults.append((unplug_after, lambda: self.unplug(unplug_for)))
        self._first_session = True
        if bad_erxudp is not None:
            self._reply_faults.extend([("corrupt", bad_erxudp[0])] * bad_erxudp[1])
        if delay_reply is not None:
            self._reply_faults.extend([("delay", float(delay_reply[0]))] * delay_reply[1])
        self._reply_faults.extend([("duplicate", None)] * duplicate_reply)

        self._lock = threading.RLock()
        self._sink: Optional[Callable[[bytes], None]] = None
        self._wopt = 0 if self.kind.binary_default else 1   # kept in "flash": survives resets
        self._wuart = 0
        self._scheduler = Scheduler(self.clock, name="sim-wisun-%s" % kind)
        self._closed = False
        self._reset_state()
        # The meter counts half-hours from now on; the module relays its INF.
        self.meter.notifications_due(self.clock.now())
        self._schedule_notification()
        if garbage_every is not None:
            self._scheduler.call_later(garbage_every, self._garbage_tick, garbage_every,
                                       tag=TAG_FAULT)

    # -- device interface ------------------------------------------------
    def attach(self, write: Optional[Callable[[bytes], None]]) -> None:
        with self._lock:
            self._sink = write

    def receive(self, data: bytes) -> None:
        with self._lock:
            if self._busy:
                self._backlog += data   # the UART buffers while the firmware is busy
                return
            self._consume(bytes(data))

    def reset(self) -> None:
        """Power-on reset (also the 'reset' fault): every volatile state is lost."""
        with self._lock:
            self._scheduler.cancel_all(keep=KEEP_ON_RESET)
            self._reset_state()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sink = None
            self._transport = None
        self._scheduler.close()

    def bind_transport(self, transport: Any) -> None:
        """What the unplug/replug faults pull: an object with ``unplug()`` and ``replug()``."""
        self._transport = transport

    @property
    def needs_transport(self) -> bool:
        """True when an unplug is scheduled at construction (``unplug_after``)."""
        return self.unplug_after is not None

    # -- inspection for tests --------------------------------------------
    @property
    def session_up(self) -> bool:
        return self._session == SESSION_UP

    @property
    def sfe(self) -> int:
        return self._regs[0xFE]

    @property
    def tx_restricted(self) -> bool:
        return bool(self._regs[0xFB])

    # -- faults ----------------------------------------------------------
    def inject(self, fault: str, **params: Any) -> None:
        """Switch on fault ``fault`` (a FAULTS key) with its parameters."""
        if fault not in FAULTS:
            raise ValueError("unknown fault %r (one of %s)" % (fault, ", ".join(FAULTS)))
        method = FAULTS[fault][0]
        if method is None:
            raise ValueError("fault %r is a transport action: %s" % (fault, FAULTS[fault][1]))
        getattr(self, method)(**params)

    def set_out_of_range(self, on: bool = True) -> None:
        """Meter unreachable (on) or back (off): scans, sends and joins fail at radio level."""
        with self._lock:
            self.out_of_range = on

    def set_silent(self, on: bool = True) -> None:
        """The meter stops (on) or resumes (off) answering anything; its MAC still ACKs."""
        with self._lock:
            self.silent = on

    def fail_joins(self, count: int = 1) -> None:
        """Refuse the next ``count`` PANA authentications (EVENT 24)."""
        with self._lock:
            self.join_failures = count

    def expire_session(self, reauth: Optional[str] = None) -> None:
        """End the PANA session lifetime now: EVENT 29, re-auth, EVENT 25 (or 24 if 'fail')."""
        with self._lock:
            if reauth is not None:
                if reauth not in ("ok", "fail"):
                    raise ValueError("reauth must be 'ok' or 'fail'")
                self.reauth = reauth
            if self._session == SESSION_UP:
                self._scheduler.cancel("session")
                self._lifetime_expired()

    def terminate_session(self) -> None:
        """The meter ends the session: PANA termination request (ERXUDP 02CC), EVENT 26."""
        with self._lock:
            if self._session != SESSION_UP:
                return
            self._scheduler.cancel("session")
            self._session = SESSION_NONE
            self._pana_erxudp(pana_message(FLAG_REQUEST, PANA_TERMINATION, self._pana_session,
                                           self._next_pana_seq(), [_avp(AVP_RESULT, b"\0\0\0\0")]))
            self._event(0x26, self.meter_address)

    def restrict_tx(self, seconds: float = 60.0) -> None:
        """Force the transmit-time limit: EVENT 32 now, EVENT 33 after ``seconds``."""
        with self._lock:
            self._forced_restriction = True
            self._set_restricted(True)
            self._after(seconds, self._end_forced_restriction, tag="tx")

    def inject_garbage(self, data: Optional[bytes] = None) -> None:
        """Write raw bytes on the line (default: non-ASCII junk, then CR LF)."""
        with self._lock:
            self._write(data if data is not None else b"\x00\xff\xfe\x80 EVE\xe3\x81\x82#%\r\n")

    def corrupt_next_reply(self, mode: str = "truncated", count: int = 1) -> None:
        """The next ``count`` meter replies are 'truncated' or 'malformed' ERXUDP lines."""
        if mode not in BAD_ERXUDP_MODES:
            raise ValueError("mode must be 'truncated' or 'malformed'")
        with self._lock:
            self._reply_faults.extend([("corrupt", mode)] * count)

    def delay_next_reply(self, seconds: float = 5.0, count: int = 1) -> None:
        """The next ``count`` meter replies arrive ``seconds`` (module time) late."""
        with self._lock:
            self._reply_faults.extend([("delay", seconds)] * count)

    def duplicate_next_reply(self, count: int = 1) -> None:
        """The next ``count`` meter replies are sent twice."""
        with self._lock:
            self._reply_faults.extend([("duplicate", None)] * count)

    def unplug(self, seconds: Optional[float] = None) -> None:
        """The device disappears from the host (the bound transport's ``unplug()``);
        with ``seconds``, it is plugged back in that many module seconds later."""
        transport = self._transport
        if transport is None:
            raise ValueError("fault 'unplug' needs a transport: bind_transport() (done by "
                             "python3 -m keilib.sim and by a named sim://wisun?name=... port)")
        if seconds is not None and not 0 < seconds < float("inf"):
            raise ValueError("seconds must be > 0, got %r" % (seconds,))
        logger.info("wisun sim: unplugged%s", " for %g s" % seconds if seconds else "")
        transport.unplug()
        if seconds is not None:
            self._scheduler.call_later(seconds, self._unlocked, self.replug, tag=TAG_FAULT)

    def replug(self) -> None:
        """The device comes back, powered up afresh (the bound transport's ``replug()``)."""
        transport = self._transport
        if transport is None:
            raise ValueError("fault 'replug' needs a transport: bind_transport()")
        transport.replug()
        logger.info("wisun sim: plugged back in")

    def control(self, command: str) -> None:
        """One text fault command (``CONTROL_GRAMMAR``), e.g. 'silent on', 'delay_reply 3 1'."""
        tokens = command.split()
        if not tokens:
            raise ValueError("empty command; expected %s" % CONTROL_GRAMMAR)
        name, texts = tokens[0], tokens[1:]
        if name not in FAULTS:
            raise ValueError("unknown fault %r; expected %s" % (name, CONTROL_GRAMMAR))
        spec = FAULT_ARGS[name]
        if len(texts) > len(spec):
            raise ValueError("%s takes at most %d argument(s); usage: %s"
                             % (name, len(spec), _control_usage(name)))
        params: Dict[str, Any] = {}
        for (keyword, convert, _), text in zip(spec, texts):
            try:
                params[keyword] = convert(text)
            except ValueError as exc:
                raise ValueError("bad value %r for %s (%s); usage: %s"
                                 % (text, keyword, exc, _control_usage(name))) from None
        self.inject(name, **params)

    # -- timed faults (construction options) ------------------------------
    def _unlocked(self, fn: Callable[[], Any]) -> None:
        """A scheduled fault that takes its own locks (unplug/replug reach the transport)."""
        if not self._closed:
            fn()

    def _arm_timed_faults(self) -> None:
        """The first session is up: the ``*_after`` options start counting."""
        if not self._first_session:
            return
        self._first_session = False
        for delay, fn in self._timed_faults:
            self._scheduler.call_later(delay, self._unlocked, fn, tag=TAG_FAULT)

    def _garbage_tick(self, every: float) -> None:
        if self._closed:
            return
        self.inject_garbage()
        self._scheduler.call_later(every, self._garbage_tick, every, tag=TAG_FAULT)

    # -- state -----------------------------------------------------------
    def _reset_state(self) -> None:
        self._regs: Dict[int, Any] = {num: reg.initial for num, reg in REGISTERS.items()
                                      if not reg.dual_only or self.kind.dual}
        self._regs[0x01] = int(self.mac, 16)
        self._rbid: Optional[str] = None      # secrets: never logged
        self._pwd: Optional[str] = None
        self._session = SESSION_NONE
        self._session_peer: Optional[str] = None
        self._announce = False
        self._pana_session = 0
        self._pana_seq = 0
        self._neighbours: set = set()
        self._udp_ports = [ECHONET_PORT, PANA_PORT, 0, 0, 0, 0]
        self._scanning = False
        self._line = bytearray()
        self._send_header: Optional[List[str]] = None
        self._payload = bytearray()
        self._payload_left = 0
        self._busy = False
        self._backlog = bytearray()
        self._tx_log: Deque[Tuple[float, float]] = deque()
        self._tx_total_ms = 0.0
        self._forced_restriction = False

    def _delay(self, name: str) -> float:
        if self.latency == "zero":
            return 0.0
        low, high = REALISTIC_LATENCY[name]
        return self._rng.uniform(low, high)

    def _after(self, delay: float, fn: Callable[..., Any], *args: Any, tag: str = "") -> None:
        """Run ``fn`` after ``delay`` module seconds; at once (inline) when 0 to keep order."""
        if delay <= 0:
            fn(*args)
        else:
            self._scheduler.call_later(delay, self._locked, fn, args, tag=tag)

    def _locked(self, fn: Callable[..., Any], args: tuple) -> None:
        with self._lock:
            if not self._closed:
                fn(*args)

    # -- output ----------------------------------------------------------
    def _write(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:
            sink(data)

    def _line_out(self, text: str) -> None:
        self._write(text.encode("ascii") + b"\r\n")

    def _side(self) -> str:
        return " 0" if self.kind.dual else ""

    def _event(self, num: int, sender: str, param: Optional[int] = None) -> None:
        text = "EVENT %02X %s%s" % (num, sender, self._side())
        if param is not None:
            text += " %02X" % param
        self._line_out(text)

    def _erxudp(self, src: str, src_mac: str, port: int, secured: int, data: bytes,
                dst: Optional[str] = None, corrupt: Optional[str] = None) -> None:
        fields = ["ERXUDP", src, dst or self.address, "%04X" % port, "%04X" % port, src_mac]
        if self.kind.dual and self._regs.get(0xA2):
            fields.append("%02X" % self.lqi)
        fields.append(str(secured))
        if self.kind.dual:
            fields.append("0")
        fields.append("%04X" % len(data))
        if corrupt == "malformed":
            # Fields missing and the data not hex: a reader must reject it.
            self._write(" ".join(fields[:4]).encode() + b" 0E1A ZZ" + data[:3].hex().encode() + b"\r\n")
            return
        if corrupt == "truncated":
            data = data[: max(1, len(data) // 2)]
        head = " ".join(fields).encode("ascii") + b" "
        if self._wopt & 1:
            self._write(head + data.hex().upper().encode("ascii") + b"\r\n")
        else:
            self._write(head + data + b"\r\n")

    def _pana_erxudp(self, message: bytes) -> None:
        self._erxudp(self.meter_address, self.meter_mac, PANA_PORT, 0, message)

    # -- input -----------------------------------------------------------
    def _consume(self, data: bytes) -> None:
        echo = bytearray()
        i = 0
        while i < len(data):
            if self._busy:
                self._flush_echo(echo)
                self._backlog += data[i:]
                return
            if self._payload_left:
                chunk = data[i:i + self._payload_left]
                i += len(chunk)
                self._payload += chunk
                self._payload_left -= len(chunk)
                if not self._payload_left:
                    self._flush_echo(echo)
                    self._finish_sendto()
                continue
            byte = data[i]
            i += 1
            echo.append(byte)
            if byte == 0x0A:                       # LF ends an SK line
                self._flush_echo(echo)
                line = bytes(self._line)
                self._line.clear()
                self._command_line(line)
            elif byte == 0x0D:                     # CR ends a product command
                name = self._line.split(b" ", 1)[0]
                if name in PRODUCT_COMMANDS:
                    self._flush_echo(echo)
                    line = bytes(self._line)
                    self._line.clear()
                    self._product_command(line)
            else:
                self._line.append(byte)
                if len(self._line) > MAX_LINE:
                    self._flush_echo(echo)
                    self._line.clear()
                    self._line_out("FAIL ER09")
                elif byte == 0x20 and self._line.startswith(b"SKSENDTO "):
                    self._sendto_header_space(echo)
        self._flush_echo(echo)

    def _flush_echo(self, echo: bytearray) -> None:
        if echo and self._regs[0xFE]:
            self._write(bytes(echo))
        echo.clear()

    def _command_line(self, raw: bytes) -> None:
        if not raw.strip(b" "):
            return                                 # empty lines are ignored (section 2.1)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            self._line_out("FAIL ER04")           # garbage cannot name a command
            return
        tokens = text.split()
        if not tokens:
            return
        handler = COMMANDS.get(tokens[0])
        if handler is None:
            logger.debug("wisun sim: unknown command %r", tokens[0][:20])
            self._line_out("FAIL ER04")
            return
        try:
            getattr(self, handler)(tokens[1:])
        except _Fail as fail:
            self._line_out("FAIL ER%02d" % fail.code)

    def _product_command(self, raw: bytes) -> None:
        tokens = raw.decode("ascii", "replace").split()
        if not self.kind.product_commands:
            self._line_out("FAIL ER04")            # unknown to RL7023 firmware
            return
        name, args = tokens[0], tokens[1:]
        expected = 1 if name in ("WOPT", "WUART") else 0
        if len(args) != expected:
            self._write(b"FAIL ER05\r")
            return
        try:
            if name == "WOPT":
                self._wopt = parse_hex(args[0], 2, 0, 1)
                self._write(b"OK\r")
            elif name == "WUART":
                self._wuart = parse_hex(args[0], 2, 0, 0xFF)
                self._write(b"OK\r")
            elif name == "ROPT":
                self._write(b"OK %02X\r" % self._wopt)
            else:
                self._write(b"OK %02X\r" % self._wuart)
        except _Fail as fail:
            self._write(b"FAIL ER%02d\r" % fail.code)

    # -- SKSENDTO: header, raw payload, then the send ----------------------
    def _sendto_header_space(self, echo: bytearray) -> None:
        tokens = self._line.decode("latin-1").split()
        needed = 7 if self.kind.dual else 6       # SKSENDTO H IP PORT SEC [SIDE] LEN
        if len(tokens) < needed:
            return
        self._flush_echo(echo)
        self._line.clear()
        try:
            length = parse_hex(tokens[-1], 4, 0, 0x4D0) if len(tokens[-1]) == 4 else None
        except _Fail:
            length = None
        if length is None:
            # Without a valid DATALEN the payload cannot be delimited: refuse at once.
            self._line_out("FAIL ER06")
            return
        self._send_header = tokens[1:]
        self._payload = bytearray()
        self._payload_left = length
        if length == 0:
            self._finish_sendto()

    def _finish_sendto(self) -> None:
        args, payload = self._send_header or [], bytes(self._payload)
        self._send_header = None
        self._payload = bytearray()
        self._write(b"\r\n")                       # ends the echo line; bare CR LF with SFE=0
        try:
            handle = parse_hex(args[0], 1, 1, 6)
            dest = parse_ipv6(args[1])
            if len(args[2]) != 4:
                raise _Fail(6)
            port = parse_hex(args[2], 4)
            if len(args[3]) != 1:
                raise _Fail(6)
            sec = parse_hex(args[3], 1, 0, 2)
            side = parse_hex(args[4], 1, 0, 1) if self.kind.dual else 0
            if self._udp_ports[handle - 1] == 0:
                raise _Fail(10)
        except _Fail as fail:
            self._line_out("FAIL ER%02d" % fail.code)
            return
        self._busy = True
        self._after(self._delay("sendto_ack"), self._complete_sendto,
                    dest, port, sec, side, self._udp_ports[handle - 1], payload, tag="send")

    def _complete_sendto(self, dest: str, port: int, sec: int, side: int,
                         source_port: int, payload: bytes) -> None:
        multicast = dest == MULTICAST_ALL_NODES
        to_meter = (dest == self.meter_address or multicast) and side == 0
        # Registered with security = the PANA peer (multicast: SA0 encrypts broadcasts).
        in_session = self._session == SESSION_UP and (dest == self._session_peer or multicast)
        secured = sec in (1, 2) and in_session
        delivered = False
        if sec == 1 and not secured:
            self._event(0x21, dest, 0x01)          # SEC=1 without a session: not sent
        elif not to_meter or not self._reachable() or not self._transmit(len(payload)):
            # Nobody there (NS unanswered), or cancelled by the TX-time limit.
            if dest not in self._neighbours and not multicast:
                self._event(0x21, dest, 0x02)
            self._event(0x21, dest, 0x01)
        else:
            if dest not in self._neighbours and not multicast:
                self._event(0x21, dest, 0x02)      # NS first; the UDP packet follows the NA
                self._neighbours.add(dest)
            self._sent(dest)
            delivered = True
        self._line_out("OK")
        self._busy = False
        # The meter talks ECHONET only inside the PANA session (encrypted frames).
        if delivered and secured and port == ECHONET_PORT and source_port == ECHONET_PORT:
            self._meter_request(payload)
        if self._backlog:
            pending = bytes(self._backlog)
            self._backlog.clear()
            self._consume(pending)

    def _meter_request(self, frame: bytes) -> None:
        if self.silent:
            return
        try:
            replies = self.meter.handle(frame, self.clock.now())
        except Exception:  # noqa: BLE001 - a model bug must not kill the line
            logger.exception("simulated meter failed on frame %s", frame.hex())
            return
        for reply in replies:
            fault = self._reply_faults.popleft() if self._reply_faults else (None, None)
            delay = self._delay("reply") + (fault[1] if fault[0] == "delay" else 0.0)
            corrupt = fault[1] if fault[0] == "corrupt" else None
            copies = 2 if fault[0] == "duplicate" else 1
            for _ in range(copies):
                self._after(delay, self._deliver, reply, corrupt, tag="reply")

    def _deliver(self, frame: bytes, corrupt: Optional[str] = None,
                 dst: Optional[str] = None) -> None:
        if self._session != SESSION_UP or self.silent or not self._reachable():
            return
        self._erxudp(self.meter_address, self.meter_mac, ECHONET_PORT, 1, frame,
                     dst=dst, corrupt=corrupt)

    # -- radio helpers ----------------------------------------------------
    def _reachable(self) -> bool:
        """The meter hears us: in range, and we are on its channel and PAN."""
        return (not self.out_of_range and self._regs[0x02] == self.channel
                and self._regs[0x03] == self.pan_id)

    def _transmit(self, payload_len: int) -> bool:
        """Account one frame's airtime; False if the TX-time limit forbids sending."""
        if self._regs[0xFB]:
            return False
        now = self.clock.monotonic()
        airtime = (payload_len + AIRTIME_OVERHEAD_BYTES) * AIRTIME_MS_PER_BYTE
        self._tx_log.append((now, airtime))
        self._tx_total_ms += airtime
        self._regs[0x07] = (self._regs[0x07] + 1) & 0xFFFFFFFF
        return True

    def _sent(self, peer: str, param: int = 0x00) -> None:
        """EVENT 21 for a frame just transmitted; then EVENT 32 if it used up the budget."""
        self._event(0x21, peer, param)
        if not self._regs[0xFB] and self._window_ms(self.clock.monotonic()) >= self.tx_budget_ms:
            self._set_restricted(True)
            self._schedule_release()

    def _window_ms(self, now: float) -> float:
        while self._tx_log and self._tx_log[0][0] <= now - TX_WINDOW:
            self._tx_log.popleft()
        return sum(ms for _, ms in self._tx_log)

    def _schedule_release(self) -> None:
        if self._tx_log:
            wait = self._tx_log[0][0] + TX_WINDOW - self.clock.monotonic()
            self._scheduler.call_later(max(wait, 0.0), self._locked, self._check_release, (),
                                       tag="tx")

    def _check_release(self) -> None:
        if self._forced_restriction or not self._regs[0xFB]:
            return
        if self._window_ms(self.clock.monotonic()) < self.tx_budget_ms:
            self._set_restricted(False)
        else:
            self._schedule_release()

    def _end_forced_restriction(self) -> None:
        self._forced_restriction = False
        if self._window_ms(self.clock.monotonic()) < self.tx_budget_ms:
            self._set_restricted(False)
        else:
            self._schedule_release()

    def _set_restricted(self, on: bool) -> None:
        if bool(self._regs[0xFB]) == on:
            return
        self._regs[0xFB] = 1 if on else 0
        self._event(0x32 if on else 0x33, self.address)

    # -- SK commands -------------------------------------------------------
    @staticmethod
    def _argc(args: List[str], *counts: int) -> None:
        if len(args) not in counts:
            raise _Fail(5)

    def cmd_skver(self, args: List[str]) -> None:
        self._argc(args, 0)
        self._line_out("EVER " + self.kind.version)
        self._line_out("OK")

    def cmd_skappver(self, args: List[str]) -> None:
        self._argc(args, 0)
        self._line_out("EAPPVER " + self.kind.app_version)
        self._line_out("OK")

    def cmd_skinfo(self, args: List[str]) -> None:
        self._argc(args, 0)
        last = "0" if self.kind.dual else "FFFE"   # SIDE vs ADDR16: clients detect the kind
        self._line_out("EINFO %s %s %02X %04X %s" % (self.address, self.mac, self._regs[0x02],
                                                     self._regs[0x03], last))
        self._line_out("OK")

    def cmd_skreset(self, args: List[str]) -> None:
        self._argc(args, 0)
        self._scheduler.cancel_all(keep=KEEP_ON_RESET)
        self._reset_state()
        self._line_out("OK")

    def cmd_sksreg(self, args: List[str]) -> None:
        self._argc(args, 1, 2)
        name = args[0].upper()
        if not name.startswith("S"):
            raise _Fail(6)
        number = parse_hex(name[1:], 2)
        reg = REGISTERS.get(number)
        if reg is None or number not in self._regs:
            raise _Fail(6)
        if len(args) == 1:
            self._line_out("ESREG " + self._format_register(number, reg))
            self._line_out("OK")
            return
        if not reg.writable:
            raise _Fail(6)
        if reg.width == 0:
            value: Any = args[1]
            if len(value) > (16 if number == 0x0B else 8):
                raise _Fail(6)
        else:
            low = self.kind.s16_min if number == 0x16 else reg.low
            value = parse_hex(args[1], max(reg.width, 2), low, reg.high)
        if number == 0xFD:
            self._tx_total_ms = 0.0
        self._regs[number] = value
        self._line_out("OK")

    def _format_register(self, number: int, reg: Register) -> str:
        if number == 0xFD:
            return "%016X" % int(self._tx_total_ms)
        value = self._regs[number]
        if reg.width == 0:
            return value
        if reg.width == 1:
            return "%X" % value
        return "%0*X" % (reg.width, value)

    def cmd_sksetpwd(self, args: List[str]) -> None:
        self._argc(args, 2)
        length = parse_hex(args[0], 2, 1, 0x20)
        # A password shorter than LEN leaves undefined bytes: it will not authenticate.
        self._pwd = args[1][:length].ljust(length, "\0")
        self._line_out("OK")

    def cmd_sksetrbid(self, args: List[str]) -> None:
        self._argc(args, 1)
        self._rbid = args[0]
        self._regs[0x0A] = args[0][-8:]            # Pairing ID = last 8 characters
        self._line_out("OK")

    def cmd_skscan(self, args: List[str]) -> None:
        self._argc(args, 4 if self.kind.dual else 3)
        mode = parse_hex(args[0], 1)
        if mode not in (0, 2, 3):
            raise _Fail(6)
        mask = parse_hex(args[1], 8)
        duration = parse_hex(args[2], 2, 0, 14)
        side = parse_hex(args[3], 1, 0, 1) if self.kind.dual else 0
        self._line_out("OK")
        if self._scanning:
            return          # a second SKSCAN during a scan is acknowledged and ignored
        self._scanning = True
        channels = [FIRST_CHANNEL + bit for bit in range(LAST_CHANNEL - FIRST_CHANNEL + 1)
                    if mask >> bit & 1]
        dwell = 0.0 if self.latency == "zero" else (
            0.0096 * (2 ** duration + 1) + self._delay("channel_overhead"))
        total = dwell * len(channels)
        if mode == 0:
            self._after(total, self._ed_scan_done, channels, tag="scan")
            return
        found = (side == 0 and not self.out_of_range and duration >= self.scan_min
                 and self.channel in channels
                 and (mode == 3 or self._regs[0x0A] == self.pairing_id))
        if found:
            index = channels.index(self.channel)
            beacon = dwell * index + self._rng.uniform(0.2, 0.8) * dwell
            self._after(beacon, self._event, 0x20, self.address, tag="scan")
            self._after(dwell * (index + 1), self._pan_descriptor, mode, tag="scan")
        self._after(total, self._scan_done, tag="scan")

    def _pan_descriptor(self, mode: int) -> None:
        lines = ["EPANDESC", "  Channel:%02X" % self.channel, "  Channel Page:09",
                 "  Pan ID:%04X" % self.pan_id, "  Addr:%s" % self.meter_mac, "  LQI:%02X" % self.lqi]
        if self.kind.dual:
            lines.append("  Side:0")
        if mode == 2:
            lines.append("  PairID:%s" % self.pairing_id)
        for line in lines:
            self._line_out(line)

    def _scan_done(self) -> None:
        self._scanning = False
        self._event(0x22, self.address)

    def _ed_scan_done(self, channels: List[int]) -> None:
        self._scanning = False
        self._event(0x1F, self.address)
        self._line_out("EEDSCAN")
        pairs = []
        for ch in channels:
            level = self.lqi if ch == self.channel and not self.out_of_range else self._rng.randint(0, 0x18)
            pairs.append("%02X %02X" % (ch, level))
        self._line_out(("0 " if self.kind.dual else "") + " ".join(pairs))

    def cmd_skll64(self, args: List[str]) -> None:
        self._argc(args, 1)
        self._line_out(link_local(parse_mac(args[0])))   # no OK (section 3.9)

    def cmd_skjoin(self, args: List[str]) -> None:
        self._argc(args, 1)
        peer = parse_ipv6(args[0])
        self._line_out("OK")
        self._scheduler.cancel("session")
        self._session = SESSION_JOINING
        self._session_peer = peer
        self._announce = True          # a new PANA session: the meter's node starts up again
        self._pana_session = self._rng.getrandbits(32)
        self._after(self._delay("ns"), self._pana_start, peer, tag="session")

    def cmd_skrejoin(self, args: List[str]) -> None:
        self._argc(args, 0)
        if self._session != SESSION_UP:
            raise _Fail(10)
        self._line_out("OK")
        self._scheduler.cancel("session")
        self._session = SESSION_JOINING
        self._after(self._delay("ns"), self._pana_start, self._session_peer, tag="session")

    def cmd_skterm(self, args: List[str]) -> None:
        self._argc(args, 0)
        if self._session != SESSION_UP:
            raise _Fail(10)
        peer = self._session_peer
        self._line_out("OK")
        self._scheduler.cancel("session")
        self._session = SESSION_NONE
        self._transmit(16)
        self._sent(peer)                           # PANA-Termination-Request sent
        if self.silent or not self._reachable():
            self._after(self._delay("term_timeout"), self._event, 0x28, peer, tag="session")
        else:
            self._after(self._delay("term"), self._term_answer, peer, tag="session")

    def _term_answer(self, peer: str) -> None:
        self._pana_erxudp(pana_message(0, PANA_TERMINATION, self._pana_session,
                                       self._next_pana_seq(), []))
        self._event(0x27, peer)

    def cmd_skping(self, args: List[str]) -> None:
        # Dual stack: the SIDE argument is unverified, so both forms are accepted.
        if self.kind.dual:
            self._argc(args, 1, 2)
        else:
            self._argc(args, 1)
        if len(args) == 2:
            parse_hex(args[0], 1, 0, 1)
        dest = parse_ipv6(args[-1])
        self._line_out("OK")
        if dest == self.meter_address and self._reachable() and not self.silent:
            self._after(self._delay("ping"), self._line_out, "EPONG " + dest, tag="ping")

    def cmd_skudpport(self, args: List[str]) -> None:
        self._argc(args, 2)
        handle = parse_hex(args[0], 1, 1, 6)
        port = parse_hex(args[1], 4, 0, 0xFFFE)
        self._udp_ports[handle - 1] = port
        self._line_out("OK")

    def cmd_skaddnbr(self, args: List[str]) -> None:
        self._argc(args, 2)
        address = parse_ipv6(args[0])
        parse_mac(args[1])
        self._neighbours.add(address)
        self._line_out("OK")

    def cmd_sksetpsk(self, args: List[str]) -> None:
        self._argc(args, 2)
        if parse_hex(args[0], 2) != 0x10 or not re.fullmatch(r"[0-9A-Fa-f]{32}", args[1]):
            raise _Fail(6)
        self._line_out("OK")

    def cmd_sktable(self, args: List[str]) -> None:
        self._argc(args, 1)
        mode = parse_hex(args[0], 1)
        if mode == 1:
            lines = ["EADDR", self.address]
        elif mode == 2:
            lines = ["ENEIGHBOR"] + ["%s %s FFFF" % (address, self.meter_mac)
                                     for address in sorted(self._neighbours)
                                     if address == self.meter_address]
        elif mode == 0xE:
            lines = ["EPORT"] + ["%d" % port for port in self._udp_ports] + ["", "3610", "0", "0", "0"]
        else:
            raise _Fail(6)
        for line in lines:
            self._line_out(line)
        self._line_out("OK")

    def cmd_flash(self, args: List[str]) -> None:
        """SKSAVE / SKLOAD / SKERASE: no flash to speak of; accepted."""
        self._argc(args, 0)
        self._line_out("OK")

    # -- PANA (sections 3.10 and 8) ---------------------------------------
    def _next_pana_seq(self) -> int:
        self._pana_seq = (self._pana_seq + 1) & 0xFFFFFFFF
        return self._pana_seq

    def _pana_start(self, peer: str) -> None:
        """PANA-Client-Initiation, after a neighbour solicitation (EVENT 21 02)."""
        self._event(0x21, peer, 0x02)
        if peer != self.meter_address or not self._reachable() or self.silent:
            self._after(self._delay("join_timeout"), self._join_failed, peer, tag="session")
            return
        self._neighbours.add(peer)
        self._transmit(16)                         # PANA-Client-Initiation
        self._event(0x02, peer)
        self._after(self._delay("pana_rtt"), self._pana_step, peer, 1, tag="session")

    def _pana_step(self, peer: str, step: int) -> None:
        """The meter's PANA message number ``step``, then the module's answer (EVENT 21)."""
        if not self._reachable() or self.silent:
            self._after(self._delay("join_timeout"), self._join_failed, peer, tag="session")
            return
        rand = self._rng.getrandbits
        sid, seq = self._pana_session, self._next_pana_seq()
        accepted = (self.join_failures == 0 and self._rbid == self.route_b_id
                    and self._pwd == self.password)
        if step == 1:     # PAR 'S': PRF HMAC-SHA2-256, integrity HMAC-SHA2-256-128
            message = pana_message(FLAG_REQUEST | FLAG_START, PANA_AUTH, sid, seq,
                                   [_avp(AVP_PRF, struct.pack(">I", 5)),
                                    _avp(AVP_INTEGRITY, struct.pack(">I", 0x0C))])
        elif step == 2:   # PAR: Nonce + EAP-PSK first message (RAND_S, ID_S)
            id_s = ("SM" + "0" * 24 + self.pairing_id).encode("ascii")
            eap = struct.pack(">BBHBB", 1, 1, 6 + 16 + len(id_s), 0x2F, 0x00) + \
                rand(128).to_bytes(16, "big") + id_s
            message = pana_message(FLAG_REQUEST, PANA_AUTH, sid, seq,
                                   [_avp(AVP_NONCE, rand(128).to_bytes(16, "big")), _avp(AVP_EAP, eap)])
        elif step == 3 and accepted:   # EAP-PSK third message (RAND_S, MAC_S, PCHANNEL)
            eap = struct.pack(">BBHBB", 1, 2, 59, 0x2F, 0x80) + rand(8 * 53).to_bytes(53, "big")
            message = pana_message(FLAG_REQUEST, PANA_AUTH, sid, seq, [_avp(AVP_EAP, eap)])
        elif step == 3:   # the meter could not verify MAC_P: PAR 'C' with a rejection
            self.join_failures = max(0, self.join_failures - 1)
            message = pana_message(FLAG_REQUEST | FLAG_COMPLETE, PANA_AUTH, sid, seq,
                                   [_avp(AVP_RESULT, struct.pack(">I", 2)),
                                    _avp(AVP_EAP, struct.pack(">BBH", 4, 2, 4))])
            self._pana_erxudp(message)
            self._after(self._delay("pana_tx"), self._pana_answer_then, peer,
                        lambda: self._join_failed(peer), tag="session")
            return
        else:             # PAR 'C': success, key id, session lifetime, AUTH
            message = pana_message(FLAG_REQUEST | FLAG_COMPLETE, PANA_AUTH, sid, seq,
                                   [_avp(AVP_RESULT, struct.pack(">I", 0)),
                                    _avp(AVP_EAP, struct.pack(">BBH", 3, 3, 4)),
                                    _avp(AVP_KEY_ID, struct.pack(">I", rand(32))),
                                    _avp(AVP_LIFETIME, struct.pack(">I", min(int(self.lifetime), 0xFFFFFFFF))),
                                    _avp(AVP_AUTH, rand(128).to_bytes(16, "big"))])
        self._pana_erxudp(message)
        if step < 4:
            after = lambda: self._after(self._delay("pana_rtt"), self._pana_step, peer, step + 1,
                                        tag="session")
        else:
            after = lambda: self._after(self._delay("pana_final"), self._join_done, peer,
                                        tag="session")
        self._after(self._delay("pana_tx"), self._pana_answer_then, peer, after, tag="session")

    def _pana_answer_then(self, peer: str, then: Callable[[], Any]) -> None:
        """The module answers the meter's PANA message (EVENT 21 00), then ``then()``."""
        self._transmit(16)
        self._sent(peer)
        then()

    def _join_done(self, peer: str) -> None:
        self._session = SESSION_UP
        self._event(0x25, peer)
        self._arm_timed_faults()
        self._after(self.lifetime, self._lifetime_expired, tag="session")
        if self._announce:             # not after a re-authentication
            self._announce = False
            self._after(self._delay("instance_list"), self._instance_list, tag="session")

    def _join_failed(self, peer: str) -> None:
        self._session = SESSION_NONE
        self._event(0x24, peer)

    def _instance_list(self) -> None:
        self._deliver(self.meter.instance_list_inf(), dst=MULTICAST_ALL_NODES)

    def _lifetime_expired(self) -> None:
        """EVENT 29, then the automatic re-authentication (section 9.2)."""
        if self._session != SESSION_UP:
            return
        peer = self._session_peer
        self._session = SESSION_JOINING
        self._event(0x29, peer)
        if self.reauth == "fail":
            self.join_failures = max(self.join_failures, 1)
        self._after(self._delay("ns"), self._pana_start, peer, tag="session")

    # -- the meter's half-hourly notification --------------------------------
    def _schedule_notification(self) -> None:
        now = self.clock.now()
        seconds_into_half_hour = (now.minute % 30) * 60 + now.second + now.microsecond / 1e6
        wait = 1800.0 - seconds_into_half_hour
        self._scheduler.call_later(wait + self._delay("notify"), self._locked, self._notify, (), tag=TAG_METER)

    def _notify(self) -> None:
        try:
            frames = self.meter.notifications_due(self.clock.now())
        except Exception:  # noqa: BLE001
            logger.exception("simulated meter failed to build its notification")
            frames = []
        for frame in frames:
            self._deliver(frame)
        self._schedule_notification()


# Command name -> handler method (dispatch table)
COMMANDS: Dict[str, str] = {
    "SKVER": "cmd_skver", "SKAPPVER": "cmd_skappver", "SKINFO": "cmd_skinfo",
    "SKRESET": "cmd_skreset", "SKSREG": "cmd_sksreg", "SKSETPWD": "cmd_sksetpwd",
    "SKSETRBID": "cmd_sksetrbid", "SKSCAN": "cmd_skscan", "SKLL64": "cmd_skll64",
    "SKJOIN": "cmd_skjoin", "SKREJOIN": "cmd_skrejoin", "SKTERM": "cmd_skterm",
    "SKPING": "cmd_skping", "SKUDPPORT": "cmd_skudpport", "SKADDNBR": "cmd_skaddnbr",
    "SKSETPSK": "cmd_sksetpsk", "SKTABLE": "cmd_sktable",
    "SKSAVE": "cmd_flash", "SKLOAD": "cmd_flash", "SKERASE": "cmd_flash",
}

# Fault name -> (method, description)
FAULTS: Dict[str, Tuple[Optional[str], str]] = {
    "out_of_range": ("set_out_of_range", "meter unreachable (on=True/False)"),
    "silent": ("set_silent", "meter answers nothing (on=True/False)"),
    "join_failures": ("fail_joins", "refuse the next count joins"),
    "session_expiry": ("expire_session", "EVENT 29 now; reauth='ok'|'fail'"),
    "peer_terminate": ("terminate_session", "the meter ends the session: EVENT 26"),
    "tx_limit": ("restrict_tx", "EVENT 32 now, EVENT 33 after seconds"),
    "garbage": ("inject_garbage", "raw bytes on the line (data=bytes)"),
    "bad_erxudp": ("corrupt_next_reply", "mode='truncated'|'malformed', count"),
    "delay_reply": ("delay_next_reply", "seconds, count"),
    "duplicate_reply": ("duplicate_next_reply", "count"),
    "reset": ("reset", "unsolicited module reset"),
    "unplug": ("unplug", "the device disappears (needs bind_transport); back after seconds"),
    "replug": ("replug", "the device comes back, powered up afresh"),
}


# --------------------------------------------------------------------------
# Options shared by the sim:// URL and the command line
# --------------------------------------------------------------------------
def _choice(*allowed: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text not in allowed:
            raise ValueError("expected one of %s" % "|".join(allowed))
        return text
    return convert


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError("must be positive")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError("must be a number of seconds >= 0")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be a whole number >= 1")
    return value


def _switch(text: str) -> bool:
    """A yes/no option or control argument: 1/0, on/off, true/false, yes/no."""
    table = {"on": True, "1": True, "true": True, "yes": True,
             "off": False, "0": False, "false": False, "no": False}
    if text.lower() not in table:
        raise ValueError("expected on or off")
    return table[text.lower()]


def _bad_erxudp(text: str) -> Tuple[str, int]:
    mode, _, count = text.partition(":")
    if mode not in BAD_ERXUDP_MODES:
        raise ValueError("expected truncated[:N] or malformed[:N]")
    return mode, _count(count) if count else 1


def _delay_reply(text: str) -> Tuple[float, int]:
    seconds, _, count = text.partition(":")
    return _positive(seconds), _count(count) if count else 1


def _hex_bytes(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError("expected hex digits") from None


# Fault -> its parameters for control(): (keyword, converter, usage), all optional, in order.
FAULT_ARGS: Dict[str, List[Tuple[str, Callable[[str], Any], str]]] = {
    "out_of_range": [("on", _switch, "on|off")],
    "silent": [("on", _switch, "on|off")],
    "join_failures": [("count", _count, "N")],
    "session_expiry": [("reauth", _choice("ok", "fail"), "ok|fail")],
    "peer_terminate": [],
    "tx_limit": [("seconds", _positive, "S")],
    "garbage": [("data", _hex_bytes, "HEX")],
    "bad_erxudp": [("mode", _choice(*BAD_ERXUDP_MODES), "|".join(BAD_ERXUDP_MODES)),
                   ("count", _count, "N")],
    "delay_reply": [("seconds", _positive, "S"), ("count", _count, "N")],
    "duplicate_reply": [("count", _count, "N")],
    "reset": [],
    "unplug": [("seconds", _positive, "S")],
    "replug": [],
}


def _control_usage(name: str) -> str:
    return " ".join([name] + ["[%s]" % usage for _, _, usage in FAULT_ARGS[name]])


CONTROL_GRAMMAR = " | ".join(_control_usage(name) for name in FAULTS)


# option -> (converter, constructor keyword, help)
WISUN_OPTIONS: Dict[str, Tuple[Callable[[str], Any], str, str]] = {
    "kind": (_choice(*MODULE_KINDS), "kind", "|".join(MODULE_KINDS)),
    "id": (str, "route_b_id", "Route-B ID the meter accepts (32 chars)"),
    "password": (str, "password", "Route-B password the meter accepts"),
    "scale": (_positive, "", "time runs this many times faster (ScaledClock)"),
    "seed": (int, "seed", "seed of the meter model and the jitter"),
    "latency": (_choice(*LATENCIES), "latency", "|".join(LATENCIES)),
    "mac": (str, "mac", "the module's own MAC (16 hex)"),
    "meter_mac": (str, "meter_mac", "the meter's MAC (16 hex)"),
    "channel": (lambda text: int(text, 16), "channel", "meter channel, hex 21..3C"),
    "pan": (lambda text: int(text, 16), "pan_id", "meter PAN ID, hex"),
    "lqi": (lambda text: int(text, 16), "lqi", "link quality, hex 00..FF"),
    "scan_min": (int, "scan_min", "smallest SKSCAN duration that finds the meter"),
    "lifetime": (_positive, "lifetime", "PANA session lifetime in seconds"),
    "reauth": (_choice("ok", "fail"), "reauth", "ok|fail: outcome of re-authentication"),
    "join_failures": (int, "join_failures", "refuse this many joins first"),
    "out_of_range": (_switch, "out_of_range", "0|1: meter unreachable"),
    "silent": (_switch, "silent", "0|1: meter answers nothing"),
    "tx_budget_ms": (int, "tx_budget_ms", "transmit-time budget per hour in ms"),
    # Timed faults: S seconds after the first EVENT 25 (garbage_every: from the start)
    "terminate_after": (_seconds, "terminate_after",
                        "S after the first EVENT 25: the meter ends the session (EVENT 26)"),
    "tx_limit_after": (_seconds, "tx_limit_after", "S after the first EVENT 25: EVENT 32, sends refused"),
    "tx_limit_for": (_positive, "tx_limit_for", "S until EVENT 33, default 60"),
    "garbage_every": (_positive, "garbage_every", "S between non-ASCII junk lines"),
    "bad_erxudp": (_bad_erxudp, "bad_erxudp", "truncated|malformed[:N]: the first N replies"),
    "delay_reply": (_delay_reply, "delay_reply", "S[:N]: the first N replies S late"),
    "duplicate_reply": (_count, "duplicate_reply", "N: the first N replies sent twice"),
    "reset_after": (_seconds, "reset_after", "S after the first EVENT 25: module reset"),
    "unplug_after": (_seconds, "unplug_after", "S after the first EVENT 25: the device disappears"),
    "unplug_for": (_positive, "unplug_for", "S until it comes back, default 5"),
    "reverse": (_switch, "", "0|1: the meter measures reverse flow (EB)"),
    "history2": (_switch, "", "0|1: the meter has EC/ED (default 1; 0: history only by E5 + E2/E4)"),
    "one_minute": (_switch, "", "0|1: the meter has D0, one-minute energy (default 0)"),
}

URL_GRAMMAR = "sim://wisun?" + "&".join("%s=<%s>" % (name, spec[2]) for name, spec in
                                       WISUN_OPTIONS.items())


def from_options(options: Mapping[str, str]) -> WisunModule:
    """Build a module (and its meter and clock) from string options (URL / CLI)."""
    unknown = sorted(set(options) - set(WISUN_OPTIONS))
    if unknown:
        raise ValueError("unknown option(s) %s; expected %s" % (", ".join(unknown), URL_GRAMMAR))
    values: Dict[str, Any] = {}
    for name, text in options.items():
        converter = WISUN_OPTIONS[name][0]
        try:
            values[name] = converter(text)
        except ValueError as exc:
            raise ValueError("bad value %r for option %r (%s); expected %s"
                             % (text, name, exc, URL_GRAMMAR)) from None
    for option, needs in (("tx_limit_for", "tx_limit_after"), ("unplug_for", "unplug_after")):
        if option in values and needs not in values:
            raise ValueError("option %r needs %r; expected %s" % (option, needs, URL_GRAMMAR))
    kwargs = {WISUN_OPTIONS[name][1]: value for name, value in values.items()
              if WISUN_OPTIONS[name][1]}
    if "scale" in values:
        kwargs["clock"] = ScaledClock(values["scale"])
    from keilib.sim.meter import SmartMeter
    kwargs["meter"] = SmartMeter(seed=values.get("seed", 1), reverse=values.get("reverse", False),
                                 history2=values.get("history2", True),
                                 one_minute=values.get("one_minute", False))
    return WisunModule(**kwargs)


__all__ = ["WisunModule", "ModuleKind", "MODULE_KINDS", "FAULTS", "FAULT_ARGS", "CONTROL_GRAMMAR",
           "COMMANDS", "WISUN_OPTIONS", "URL_GRAMMAR", "from_options", "link_local", "pana_message"]
