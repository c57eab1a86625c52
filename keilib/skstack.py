"""SKSTACK-IP: the serial line protocol of Route-B Wi-SUN modules.

This module knows the module's text protocol and nothing of ECHONET Lite.
It has a pure, incremental line parser (``SkParser``) and one driver class per
module family, all behind the ``SkDevice`` interface.  Ports are opened with
``serial.serial_for_url()`` so ``/dev/ttyUSB0``, ``socket://``, ``rfc2217://``
and the simulator's ``sim://`` all work.

Grammar (host -> module; every SK command ends in CR LF)::

    SKVER | SKINFO | SKRESET | SKTERM | SKREJOIN
    SKSREG <reg> [<value>]                  reg: S02, SFE, ...
    SKSETPWD <len hex> <password>           SKSETRBID <32-char id>
    SKSCAN 2 FFFFFFFF <duration> [<side>]   side only on dual-stack modules
    SKLL64 <mac 16 hex>                     answered by an address line, no OK
    SKJOIN <ipv6>
    SKSENDTO <handle> <ipv6> <port> <sec> [<side>] <len 4 hex> <len raw bytes, no CR LF>
    ROPT / WOPT <mode>                      CR only; answered "OK 01" CR

Module -> host (every line ends in CR LF)::

    OK [<value>] | FAIL ER<nn>
    EVENT <num> <sender> [<side>] [<param>]         side only on dual stack
    ERXUDP <src> <dst> <rport> <lport> <mac> [<rssi>] <secured> [<side>] <len> <data>
           data: 2*len hex characters (RL7023, or WOPT 01) or len raw bytes (BP35A1/C2 default)
    EPANDESC, then "  Channel:21", "  Channel Page:09", "  Pan ID:8888",
              "  Addr:001D129012345678", "  LQI:E1", ["  Side:0"], "  PairID:CCDDEEFF"
    EVER <version> | EINFO <ip> <mac> <ch> <pan> <addr16|side> | ESREG <value>
    EPONG <ipv6> | FE80:... (SKLL64's answer) | echo lines (register SFE)

Anything else, including non-ASCII bytes, is an ``Unknown`` item: logged at
DEBUG and skipped by the driver.

The Route-B ID and password never appear in a log line: the driver masks them
in what it sends and in echoes it receives.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque

import serial

from keilib import validate
from keilib.clock import SYSTEM_CLOCK, Clock
from keilib.errors import DeviceError, DeviceGone, DeviceTimeout
from keilib.frozen import Frozen
from keilib.logutil import LogLimiter
from keilib.ports import MAX_BAUD, MIN_BAUD, PORT_PATTERN, cancel_read, is_local_device, open_port

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Callable, Deque, List, Optional, Tuple, Union

logger = logging.getLogger(__name__)

ECHONET_PORT = 0x0E1A
PANA_PORT = 0x02CC
MAX_DATALEN = 0x04D0
MAX_LINE = 2048


# -- parsed items (what the module says) -------------------------------------

class Ok(Frozen):
    __slots__ = ("value",)
    DEFAULTS = {"value": None}
    value: Optional[str]


class Fail(Frozen):
    __slots__ = ("code",)
    code: int


class Event(Frozen):
    __slots__ = ("num", "sender", "side", "param")
    DEFAULTS = {"side": None, "param": None}
    num: int
    sender: str
    side: Optional[int]
    param: Optional[int]


class ErxUdp(Frozen):
    __slots__ = ("sender", "dest", "rport", "lport", "sender_mac", "secured", "data", "side", "rssi")
    DEFAULTS = {"side": None, "rssi": None}
    sender: str
    dest: str
    rport: int
    lport: int
    sender_mac: str
    secured: bool
    data: bytes
    side: Optional[int]
    rssi: Optional[int]


class PanDesc(Frozen):
    __slots__ = ("channel", "channel_page", "pan_id", "addr", "lqi", "pair_id", "side")
    DEFAULTS = {"pair_id": None, "side": None}
    channel: int
    channel_page: int
    pan_id: int
    addr: str
    lqi: int
    pair_id: Optional[str]
    side: Optional[int]


class Info(Frozen):
    """A body line of a command: EVER, EAPPVER, EINFO, ESREG, EPONG, EADDR ..."""

    __slots__ = ("name", "args")
    name: str
    args: Tuple[str, ...]


class Address(Frozen):
    """SKLL64's answer: a bare IPv6 address line."""

    __slots__ = ("ipv6",)
    ipv6: str


class Text(Frozen):
    """Any other printable line: an echo of a command, or a line we do not know."""

    __slots__ = ("line",)
    line: str


class Unknown(Frozen):
    """A line that is not printable ASCII, or a malformed event."""

    __slots__ = ("raw", "reason")
    raw: bytes
    reason: str


if TYPE_CHECKING:
    Item = Union[Ok, Fail, Event, ErxUdp, PanDesc, Info, Address, Text, Unknown]

_HEX = re.compile(rb"^[0-9A-Fa-f]+$")
_EOL = re.compile(rb"[\r\n]")
_HEX_DIGITS = frozenset(b"0123456789ABCDEFabcdef")
_IPV6 = re.compile(r"^[0-9A-F]{4}(:[0-9A-F]{4}){7}$")
_INFO_NAMES = {"EVER", "EAPPVER", "EINFO", "ESREG", "EPONG", "EADDR", "ENEIGHBOR", "EPORT",
               "EHANDLE", "EEDSCAN"}
_PANDESC_KEYS = {"Channel": "channel", "Channel Page": "channel_page", "Pan ID": "pan_id",
                 "Addr": "addr", "LQI": "lqi", "PairID": "pair_id", "Side": "side"}


def _hex(token: str, width: Optional[int] = None) -> int:
    if not token or (width is not None and len(token) != width) or not _HEX.match(token.encode()):
        raise ValueError("not a hex field: %r" % token)
    return int(token, 16)


def _ipv6(token: str) -> str:
    if not _IPV6.match(token.upper()):
        raise ValueError("not a full IPv6 address: %r" % token)
    return token.upper()


def parse_event(tokens: List[str], dual: bool) -> Event:
    """``EVENT <num> <sender> [<side>] [<param>]`` split into tokens."""
    if len(tokens) < 3:
        raise ValueError("EVENT needs a number and a sender")
    num = _hex(tokens[1], 2)
    sender = _ipv6(tokens[2])
    rest = tokens[3:]
    side = None
    if dual and rest:
        side = _hex(rest.pop(0), 1)
    if len(rest) > 1:
        raise ValueError("too many EVENT fields")
    param = _hex(rest[0]) if rest else None
    return Event(num, sender, side, param)


def parse_erxudp_header(tokens: List[str]) -> Tuple[dict, int]:
    """Fields of an ERXUDP line up to DATALEN; returns (fields, datalen).

    ``tokens`` excludes ``ERXUDP`` and the data.  Layouts: single stack
    ``src dst rport lport mac sec len``; dual ``... mac sec side len``; dual
    with SA2=1 ``... mac rssi sec side len``.
    """
    if len(tokens) not in (7, 8, 9):
        raise ValueError("ERXUDP has %d header fields" % len(tokens))
    fields = dict(sender=_ipv6(tokens[0]), dest=_ipv6(tokens[1]), rport=_hex(tokens[2], 4),
                  lport=_hex(tokens[3], 4), sender_mac=tokens[4].upper())
    _hex(tokens[4], 16)
    middle = tokens[5:-1]
    if len(middle) == 3:
        fields["rssi"] = _hex(middle.pop(0), 2)
    fields["secured"] = bool(_hex(middle[0], 1))
    if len(middle) == 2:
        fields["side"] = _hex(middle[1], 1)
    datalen = _hex(tokens[-1], 4)
    if datalen > MAX_DATALEN:
        raise ValueError("ERXUDP length %d too long" % datalen)
    return fields, datalen


class SkParser:
    """Incremental parser: ``feed(bytes)`` returns the complete items so far.

    ERXUDP payloads are read by length, as hex text or raw bytes (which may
    contain CR, LF or spaces).  EPANDESC blocks are returned as one ``PanDesc``
    when a line that does not belong to the block arrives (or on ``flush()``).
    """

    def __init__(self, dual: bool) -> None:
        self.dual = dual
        self.buffer = bytearray()
        self.pandesc: Optional[dict] = None

    def feed(self, data: bytes) -> List[Item]:
        self.buffer += data
        items: List[Item] = []
        while True:
            item = self._next()
            if item is None:
                break
            if item is not _SKIP:
                items.append(item)  # type: ignore[arg-type]
        if len(self.buffer) > MAX_LINE and b"\n" not in self.buffer:
            items.append(Unknown(bytes(self.buffer[:80]), "line longer than %d bytes" % MAX_LINE))
            self.buffer.clear()
        return items

    def flush(self) -> List[Item]:
        """End a pending EPANDESC block (call when the line has gone quiet)."""
        if self.pandesc is None:
            return []
        return [self._end_pandesc()]

    # -- internals --------------------------------------------------------
    def _next(self) -> Optional[Any]:
        if self.buffer.startswith(b"ERXUDP "):
            return self._erxudp()
        # A line ends at CR or LF: product commands (ROPT) answer with CR
        # only; the LF of a CR LF then makes an empty line, which is skipped.
        match = _EOL.search(self.buffer)
        if match is None:
            return None
        end = match.start()
        raw = bytes(self.buffer[:end + 1])
        del self.buffer[:end + 1]
        line = raw.rstrip(b"\r\n")
        if self.pandesc is not None:
            if not line:
                return _SKIP
            if line.startswith(b"  "):
                self._pandesc_line(line)
                return _SKIP
            block = self._end_pandesc()
            self.buffer[:0] = raw           # the line is read again next time
            return block
        return self._line(line, raw)

    def _line(self, line: bytes, raw: bytes) -> Any:
        if not line.strip():
            return _SKIP
        if any(b < 0x20 or b > 0x7E for b in line):
            return Unknown(raw, "not printable ASCII")
        text = line.decode("ascii").strip()
        tokens = text.split()
        head = tokens[0]
        try:
            if text == "OK" or head == "OK":
                return Ok(tokens[1] if len(tokens) > 1 else None)
            if head == "FAIL":
                code = tokens[1] if len(tokens) > 1 else ""
                return Fail(int(code[2:], 10) if code.startswith("ER") and code[2:].isdigit() else -1)
            if head == "EVENT":
                return parse_event(tokens, self.dual)
            if head == "EPANDESC" and len(tokens) == 1:
                self.pandesc = {}
                return _SKIP
            if head in _INFO_NAMES:
                return Info(head, tuple(tokens[1:]))
            if len(tokens) == 1 and _IPV6.match(head.upper()):
                return Address(head.upper())
        except ValueError as exc:
            return Unknown(raw, "malformed %s: %s" % (head, exc))
        return Text(text)

    def _pandesc_line(self, line: bytes) -> None:
        text = line.decode("ascii", "replace").strip()
        key, _, value = text.partition(":")
        name = _PANDESC_KEYS.get(key)
        if name and self.pandesc is not None:
            self.pandesc[name] = value.strip()

    def _end_pandesc(self) -> Item:
        fields, self.pandesc = self.pandesc or {}, None
        try:
            return PanDesc(channel=_hex(fields["channel"]), channel_page=_hex(fields.get("channel_page", "09")),
                           pan_id=_hex(fields["pan_id"]), addr=fields["addr"].upper(),
                           lqi=_hex(fields.get("lqi", "0")), pair_id=fields.get("pair_id"),
                           side=_hex(fields["side"]) if "side" in fields else None)
        except (KeyError, ValueError) as exc:
            return Unknown(repr(fields).encode(), "incomplete EPANDESC: %s" % exc)

    def _erxudp(self) -> Optional[Any]:
        # Walk the header token by token: the first 4-character token after
        # the MAC is DATALEN (SECURED and SIDE are 1 character, RSSI 2).
        pos = len(b"ERXUDP ")
        tokens: List[str] = []
        while True:
            space = self.buffer.find(b" ", pos)
            newline = self.buffer.find(b"\n", pos)
            if newline >= 0 and (space < 0 or newline < space):
                return self._bad_erxudp(newline, "line ended before the data")
            if space < 0:
                if len(self.buffer) > 200:
                    return self._bad_erxudp(len(self.buffer) - 1, "no data field")
                return None
            token = self.buffer[pos:space].decode("ascii", "replace")
            tokens.append(token)
            pos = space + 1
            if len(tokens) >= 6 and len(token) == 4:
                break
            if len(tokens) > 9:
                return self._bad_erxudp(self.buffer.find(b"\n", pos), "too many fields")
        try:
            fields, datalen = parse_erxudp_header(tokens)
        except ValueError as exc:
            return self._bad_erxudp(self.buffer.find(b"\n", pos), str(exc))
        if len(self.buffer) <= pos:
            return None
        # Hex text starts with a hex digit; a binary ECHONET (0x10) or PANA
        # (0x00) payload never does.  So one byte tells the format.
        if self.buffer[pos] in _HEX_DIGITS:
            end = pos + 2 * datalen
            eol = _EOL.search(self.buffer, pos)
            if eol is not None and eol.start() < end:
                return self._bad_erxudp(eol.start(), "hex data shorter than its length")
            if len(self.buffer) < end + 2:
                return None
            text = bytes(self.buffer[pos:end])
            if self.buffer[end:end + 2] != b"\r\n" or not _HEX.match(text or b"0"):
                return self._bad_erxudp(self.buffer.find(b"\n", pos), "data does not match its length")
            data = bytes.fromhex(text.decode("ascii"))
        else:
            end = pos + datalen
            if len(self.buffer) < end + 2:
                return None
            if self.buffer[end:end + 2] != b"\r\n":
                return self._bad_erxudp(self.buffer.find(b"\n", end), "data does not match its length")
            data = bytes(self.buffer[pos:end])
        end += 2
        del self.buffer[:end]
        return ErxUdp(data=data, **fields)

    def _bad_erxudp(self, end: int, reason: str) -> Any:
        if end < 0:
            end = len(self.buffer) - 1
        raw = bytes(self.buffer[:end + 1])
        del self.buffer[:end + 1]
        return Unknown(raw[:200], "malformed ERXUDP: %s" % reason)


_SKIP = object()


def ll64(mac: str) -> str:
    """The link-local IPv6 address of a 64-bit MAC, as SKLL64 computes it."""
    value = int(mac, 16) ^ (0x02 << 56)
    text = "%016X" % value
    return "FE80:0000:0000:0000:" + ":".join(text[i:i + 4] for i in range(0, 16, 4))


# -- the drivers ----------------------------------------------------------------

class Cancelled(Exception):
    """The owner asked to stop (``SkDevice.interrupt`` was set) during a wait."""


class ModuleKind(Frozen):
    """What distinguishes one module family from another (data, not code)."""

    __slots__ = ("name", "dual", "has_ropt")
    name: str
    dual: bool            # SIDE arguments and fields (B-route side 0)
    has_ropt: bool        # ROPT/WOPT exist (ROHM parts); RL7023 prints hex always


MODULE_KINDS = {
    "RL7023-IPS": ModuleKind("RL7023 Stick-D/IPS", dual=False, has_ropt=False),
    "RL7023-DSS": ModuleKind("RL7023 Stick-D/DSS", dual=True, has_ropt=False),
    "BP35A1": ModuleKind("BP35A1", dual=False, has_ropt=True),
    "BP35C2": ModuleKind("BP35C0/BP35C2/RS-WSUHA-P", dual=True, has_ropt=True),
}


def _port_label(port: str) -> str:
    # Never log credentials a URL might carry (rfc2217://user:pass@host).
    return re.sub(r"//[^/@]*@", "//***@", port)


class SkDevice:
    """A Wi-SUN module speaking SKSTACK-IP on a serial port (one user thread).

    Items the module sends while a command is waiting for its answer (ERXUDP,
    EVENTs) are kept and handed out by ``receive()`` in order.
    """

    KIND = MODULE_KINDS["BP35C2"]
    COMMAND_TIMEOUT = 5.0
    READ_TIMEOUT = 0.2

    def __init__(self, port: str, baud: int = 115200, clock: Optional[Clock] = None):
        # ConfigError is a ValueError: these run inside keiconf.py.
        validate.text("port", port, PORT_PATTERN, "a device path or pyserial URL")
        validate.number("baud", baud, MIN_BAUD, MAX_BAUD, integer=True)
        self.port = port
        self.baud = baud
        self.clock = clock or SYSTEM_CLOCK
        self.serial: Any = None
        self.parser = SkParser(self.KIND.dual)
        self.pending: Deque[Item] = deque()
        self.secrets: List[str] = []
        self.ascii_payload = not self.KIND.has_ropt
        self.own_address: Optional[str] = None
        # Set by the owning worker to its stop event: every wait then ends
        # within one read timeout by raising Cancelled (at once where the
        # owner calls wake() after setting it).
        self.interrupt: Optional[threading.Event] = None
        # Garbled lines come from the radio and the serial line: logged
        # rate-limited (at DEBUG, which may stay on for days), on the
        # clock the owning worker assigns later.
        self.log_limit = LogLimiter(logger, lambda: self.clock.monotonic())
        # wake() comes from another thread: it must not touch a port being closed.
        self._port_lock = threading.Lock()
        self._port_timeout: Optional[float] = None     # the port's read timeout now

    @property
    def kind(self) -> str:
        return self.KIND.name

    # -- port --------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.serial is not None

    def open(self) -> None:
        self.close()
        try:
            # exclusive: an flock on a local device, so that `kei read` and
            # `kei probe` see that this module is in use (keilib.ports).
            extra = {"exclusive": True} if is_local_device(self.port) else {}
            self.serial = open_port(self.port, baudrate=self.baud, timeout=self.READ_TIMEOUT,
                                    write_timeout=5, **extra)
            self._port_timeout = self.READ_TIMEOUT
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceGone("cannot open %s: %s" % (_port_label(self.port), exc)) from exc
        self.parser = SkParser(self.KIND.dual)
        self.pending.clear()
        logger.info("%s opened on %s at %d baud", self.kind, _port_label(self.port), self.baud)

    def close(self) -> None:
        with self._port_lock:
            if self.serial is not None:
                try:
                    self.serial.close()
                except (serial.SerialException, OSError):
                    pass
                self.serial = None

    def wake(self) -> None:
        """End a blocked read at once; called from another thread after setting
        ``interrupt`` (a stop).  Needs pyserial's ``cancel_read`` (a local
        port, ``sim://``); on other ports a read ends within READ_TIMEOUT."""
        with self._port_lock:
            cancel_read(self.serial)

    def _write(self, data: bytes, shown: str) -> None:
        if self.serial is None:
            raise DeviceGone("port %s is not open" % _port_label(self.port))
        logger.debug(">> %s", self._mask(shown))
        try:
            self.serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise DeviceGone("write to %s failed: %s" % (_port_label(self.port), exc)) from exc

    def _read_items(self, wait: Optional[float] = None) -> List[Item]:
        """Read what the module sent, blocking up to READ_TIMEOUT for it, or up
        to ``wait`` real seconds where wake() can end the read early."""
        if self.interrupt is not None and self.interrupt.is_set():
            raise Cancelled()
        port = self.serial
        if port is None:
            raise DeviceGone("port %s is not open" % _port_label(self.port))
        timeout = self.READ_TIMEOUT
        if wait is not None and wait > timeout and hasattr(port, "cancel_read"):
            timeout = wait
        try:
            current = self._port_timeout
            # Changing it reconfigures the port (tcsetattr): keep one that ends
            # at most READ_TIMEOUT late, as the short reads always did.
            if current is None or not timeout <= current <= timeout + self.READ_TIMEOUT:
                port.timeout = timeout
                self._port_timeout = timeout
            data = port.read(max(1, port.in_waiting))
        except (serial.SerialException, OSError, TypeError) as exc:
            raise DeviceGone("read from %s failed: %s" % (_port_label(self.port), exc)) from exc
        items = self.parser.feed(data) if data else self.parser.flush()
        self.log_limit.flush()
        for item in items:
            if isinstance(item, Unknown):
                # A garbled echo may still hold the Route-B ID or password.
                self.log_limit.message(logging.DEBUG, _port_label(self.port), "garbled lines",
                                       "<< skipped %s: %s", item.reason,
                                       self._mask(repr(item.raw[:120].decode("latin-1"))))
            elif isinstance(item, Text):
                logger.debug("<< %s", self._mask(item.line))
            else:
                logger.debug("<< %s", item)
        return items

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "*" * 8)
        return text

    # -- commands ----------------------------------------------------------
    def command(self, line: str, until: Callable[[Item], bool] = lambda i: isinstance(i, Ok),
                timeout: Optional[float] = None, terminator: bytes = b"\r\n") -> List[Item]:
        """Send ``line`` and collect the answer up to the item ``until`` accepts.

        Returns the answer's items (body lines and the final one).  Raises
        DeviceError for ``FAIL ERxx``, DeviceTimeout when no answer comes.
        Unrelated items (ERXUDP, EVENTs other than the awaited) are queued
        for ``receive()``.
        """
        self._write(line.encode("ascii") + terminator, line)
        return self.collect(until, timeout or self.COMMAND_TIMEOUT, what=line.split()[0])

    def collect(self, until: Callable[[Item], bool], timeout: float, what: str) -> List[Item]:
        deadline = self.clock.monotonic() + timeout
        answer: List[Item] = []
        while True:
            items = self._read_items()
            for index, item in enumerate(items):
                if until(item):
                    answer.append(item)
                    self._stash(items[index + 1:])
                    return answer
                if isinstance(item, Fail):
                    self._stash(items[index + 1:])
                    raise DeviceError("%s failed: FAIL ER%02d" % (what, item.code))
                if isinstance(item, (Info, Address, Ok)):
                    answer.append(item)
                elif isinstance(item, (ErxUdp, Event, PanDesc)):
                    self.pending.append(item)
            if self.clock.monotonic() > deadline:
                raise DeviceTimeout("%s: no answer within %.0f s" % (what, timeout))

    def _stash(self, items: List[Item]) -> None:
        """Keep the unsolicited items that arrived after a command's answer."""
        self.pending.extend(i for i in items if isinstance(i, (ErxUdp, Event, PanDesc)))

    def receive(self, timeout: float) -> Optional[Item]:
        """The next unsolicited item (ERXUDP, EVENT, ...), or None after ``timeout``.

        Sleeps until bytes arrive or the time is up (one wake-up, not one per
        READ_TIMEOUT) where the port lets wake() end the read for a stop."""
        deadline = self.clock.monotonic() + timeout
        while not self.pending:
            left = self.clock.to_real(deadline - self.clock.monotonic())
            for item in self._read_items(wait=left):
                if isinstance(item, (ErxUdp, Event, PanDesc)):
                    self.pending.append(item)
            if self.pending or self.clock.monotonic() >= deadline:
                break
        return self.pending.popleft() if self.pending else None

    def reset(self) -> None:
        """Reset the module, switch echo off, and learn the payload format."""
        # A bare CR LF ends any half-typed line a previous run left behind.
        self._write(b"\r\n", "")
        self.command("SKRESET")
        self.command("SKSREG SFE 0")
        self.pending.clear()
        if self.KIND.has_ropt:
            try:
                answer = self.command("ROPT", terminator=b"\r", timeout=2)
                value = next((i.value for i in answer if isinstance(i, Ok) and i.value), "00")
                self.ascii_payload = bool(int(value, 16) & 1)
            except DeviceError as exc:
                logger.info("ROPT not supported (%s); expecting hex payloads", exc)
                self.ascii_payload = True

    def version(self) -> str:
        answer = self.command("SKVER")
        return next((" ".join(i.args) for i in answer if isinstance(i, Info) and i.name == "EVER"), "")

    def info(self) -> Tuple[str, ...]:
        answer = self.command("SKINFO")
        einfo = next((i for i in answer if isinstance(i, Info) and i.name == "EINFO"), None)
        if einfo is None or len(einfo.args) < 5:
            raise DeviceError("SKINFO gave no usable EINFO line")
        self.own_address = einfo.args[0]
        return einfo.args

    def read_register(self, register: str) -> str:
        answer = self.command("SKSREG %s" % register)
        esreg = next((i for i in answer if isinstance(i, Info) and i.name == "ESREG"), None)
        if esreg is None or not esreg.args:
            raise DeviceError("SKSREG %s gave no ESREG line" % register)
        return esreg.args[0]

    def write_register(self, register: str, value: str) -> None:
        self.command("SKSREG %s %s" % (register, value))

    def setup(self, broute_id: str, password: str) -> None:
        """Give the module the Route-B password and ID (never logged)."""
        self.secrets = [broute_id, password]
        self.command("SKSETPWD %X %s" % (len(password), password))
        self.command("SKSETRBID %s" % broute_id)

    def scan(self, duration: int) -> Optional[PanDesc]:
        """Active scan with the Pairing ID; the meter's PAN, or None."""
        side = " 0" if self.KIND.dual else ""
        # 28 channels, each 9.6 ms x (2^D + 1) plus overhead; allow double.
        limit = 28 * (0.0096 * (2 ** duration + 1) + 0.03) * 2 + 10
        self.command("SKSCAN 2 FFFFFFFF %X%s" % (duration, side))
        found: Optional[PanDesc] = None
        deadline = self.clock.monotonic() + limit
        while True:
            item = self.receive(max(0.0, deadline - self.clock.monotonic()))
            if item is None:
                raise DeviceTimeout("scan (duration %d) did not finish within %.0f s" % (duration, limit))
            if isinstance(item, PanDesc):
                found = item
            elif isinstance(item, Event) and item.num == 0x22:
                # An EPANDESC may trail EVENT 22 (BP35C0); give it a moment.
                late = self.receive(0.5)
                if isinstance(late, PanDesc):
                    found = late
                elif late is not None:
                    self.pending.appendleft(late)
                return found
            elif isinstance(item, Event) and item.num == 0x20:
                continue
            else:
                logger.debug("ignored during scan: %s", item)

    def link_local(self, mac: str) -> str:
        answer = self.command("SKLL64 %s" % mac, until=lambda i: isinstance(i, Address))
        return answer[-1].ipv6  # type: ignore[union-attr]

    def set_pan(self, channel: int, pan_id: int) -> None:
        self.write_register("S2", "%02X" % channel)
        self.write_register("S3", "%04X" % pan_id)

    def join(self, address: str, timeout: float = 60.0) -> bool:
        """PANA authentication with the meter: True on EVENT 25, False on EVENT 24."""
        self.command("SKJOIN %s" % address)
        return self._await_pana(timeout, "join")

    def rejoin(self, timeout: float = 60.0) -> bool:
        self.command("SKREJOIN")
        return self._await_pana(timeout, "rejoin")

    def _await_pana(self, timeout: float, what: str) -> bool:
        deadline = self.clock.monotonic() + timeout
        kept: List[Item] = []
        try:
            while True:
                item = self.receive(max(0.0, deadline - self.clock.monotonic()))
                if item is None:
                    raise DeviceTimeout("%s: no EVENT 24/25 within %.0f s" % (what, timeout))
                if isinstance(item, Event) and item.num in (0x24, 0x25):
                    return item.num == 0x25
                if isinstance(item, ErxUdp) and item.lport == PANA_PORT:
                    continue            # the PANA exchange itself
                if isinstance(item, Event) and item.num in (0x21, 0x02):
                    continue
                kept.append(item)
        finally:
            self.pending.extendleft(reversed(kept))

    def terminate(self, timeout: float = 10.0) -> bool:
        """End the PANA session: True on EVENT 27, False on 28, no session or
        no answer.  ``timeout`` bounds the whole exchange (a stop has a budget)."""
        deadline = self.clock.monotonic() + timeout
        try:
            self.command("SKTERM", timeout=timeout)
        except DeviceTimeout as exc:
            logger.info("SKTERM: %s", exc)
            return False
        except DeviceError as exc:
            logger.info("SKTERM: %s (no session)", exc)
            return False
        while True:
            item = self.receive(max(0.0, deadline - self.clock.monotonic()))
            if item is None:
                return False
            if isinstance(item, Event) and item.num in (0x27, 0x28):
                return item.num == 0x27

    def sendto(self, address: str, payload: bytes, timeout: float = 10.0) -> bool:
        """Send one UDP datagram to port 3610, encrypted (SEC 1).

        Waits for EVENT 21 and OK: True if the module reports the frame sent
        (param 00), False if it failed (01: no ACK, or the transmission-time
        limit).  EVENT 21 02 (neighbour solicitation first) is followed by the
        final result.
        """
        side = " 0" if self.KIND.dual else ""
        header = "SKSENDTO 1 %s %04X 1%s %04X " % (address, ECHONET_PORT, side, len(payload))
        self._write(header.encode("ascii") + payload, header + payload.hex().upper())
        result: Optional[int] = None
        # EVENT 21 comes before OK; collect() queues other events, so track 21 here.
        deadline = self.clock.monotonic() + timeout
        while True:
            items = self._read_items()
            for index, item in enumerate(items):
                if isinstance(item, Fail):
                    self._stash(items[index + 1:])
                    raise DeviceError("SKSENDTO failed: FAIL ER%02d" % item.code)
                if isinstance(item, Event) and item.num == 0x21 and item.sender == address:
                    if item.param != 0x02:     # 02: NS sent, the result follows
                        result = item.param
                elif isinstance(item, Ok):
                    self._stash(items[index + 1:])
                    return result == 0x00
                elif isinstance(item, (ErxUdp, Event, PanDesc)):
                    self.pending.append(item)
            if self.clock.monotonic() > deadline:
                raise DeviceTimeout("SKSENDTO: no OK within %.0f s" % timeout)


class WiSunRL7023(SkDevice):
    """Tessera RL7023 Stick-D/IPS (single stack) or /DSS (dual stack).

    ``WiSunRL7023(port, baud, type=WiSunRL7023.IPS)`` as keilog configs build it.
    """

    IPS = "IPS"
    DSS = "DSS"

    def __init__(self, port: str, baud: int = 115200, type: str = DSS,  # noqa: A002 - keilog's name
                 clock: Optional[Clock] = None):
        validate.choice("type", type, (self.IPS, self.DSS))
        self.KIND = MODULE_KINDS["RL7023-" + type]
        self.type = type
        super().__init__(port, baud, clock)


class BP35A1(SkDevice):
    """ROHM BP35A1 (and the Jorjin WSR35A1-00 dongle): single stack, binary payloads."""

    KIND = MODULE_KINDS["BP35A1"]


class BP35C2(SkDevice):
    """ROHM BP35C0 / BP35C2 and the RATOC RS-WSUHA-P: dual stack, binary payloads."""

    KIND = MODULE_KINDS["BP35C2"]


BP35C0 = BP35C2
RSWSUHAP = BP35C2

