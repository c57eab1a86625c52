"""Transcripts of a serial conversation: what ``kei probe`` writes and ``sim://replay`` plays back.

Format (text, UTF-8, one entry a line)::

    # kei probe transcript, format 1
    # <comments: what was run, what is masked>
       0.000 > SKVER\\r\\n
       0.004 < SKVER\\r\\n
       0.005 < EVER 1.5.2\\r\\n
       1.210 # probe: reading registers

Each entry: seconds since the start, a direction (``>`` written to the
module, ``<`` read from it, ``#`` a note), and the bytes, exact, with every
byte outside printable ASCII and the backslash escaped (``\\r``, ``\\n``,
``\\\\``, ``\\xNN``).  A ``>`` entry is one write (kei's drivers write each
command, SKSENDTO with its payload, in one call); ``<`` entries are what
was read, cut after each LF, and cut before the next write so the order of
question and answer is kept.

Masking (``Masker``): the Route-B ID, the password and the Pairing ID (the
ID's last 8 characters) become ``<ROUTE-B-ID>``, ``<PASSWORD>`` and
``<PAIR-ID>``; the meter's MAC (learnt from ``Addr:`` in a scan result or an
``SKLL64`` argument) and its IPv6 link-local address become a fixed
stand-in, ``METER_MAC`` and its link-local form, so a masked transcript
still replays.  Nothing here does I/O except ``RecordingPort``, which wraps
an open pyserial port.
"""

from __future__ import annotations

import re
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Callable, List, Optional, TextIO, Tuple

HEADER = "# kei probe transcript, format 1"
METER_MAC = "0000000000000001"
ID_MASK, PASSWORD_MASK, PAIR_ID_MASK = "<ROUTE-B-ID>", "<PASSWORD>", "<PAIR-ID>"
SECRET_COMMANDS = (b"SKSETRBID", b"SKSETPWD")

_ESCAPES = {0x5C: "\\\\", 0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t"}
_MAC_IN = [re.compile(r"Addr:([0-9A-F]{16})"), re.compile(r"^SKLL64 ([0-9A-Fa-f]{16})")]


def link_local(mac: str) -> str:
    """FE80::/64 + the MAC with the universal/local bit inverted (what SKLL64 answers)."""
    raw = bytearray(bytes.fromhex(mac))
    raw[0] ^= 0x02
    return "FE80:0000:0000:0000:" + ":".join("%02X%02X" % (raw[i], raw[i + 1]) for i in range(0, 8, 2))


def escape(data: bytes) -> str:
    return "".join(_ESCAPES.get(b, chr(b) if 0x20 <= b < 0x7F else "\\x%02X" % b) for b in data)


def unescape(text: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode("latin-1")
            i += 1
            continue
        code = text[i + 1:i + 2]
        if code == "x":
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
            continue
        out += {"\\": b"\\", "r": b"\r", "n": b"\n", "t": b"\t"}[code]
        i += 2
    return bytes(out)


def format_entry(seconds: float, direction: str, text: str) -> str:
    return "%9.3f %s %s" % (seconds, direction, text)


def parse(lines: List[str]) -> List[Tuple[float, str, bytes]]:
    """(seconds, direction, bytes) of every ``>``/``<`` entry; ValueError on a bad line."""
    entries = []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"\s*(\d+\.\d+) ([<>#]) ?(.*)", line)
        if not match:
            raise ValueError("transcript line %d is not '<seconds> <direction> <text>': %r" % (number, line[:80]))
        if match.group(2) == "#":
            continue
        try:
            data = unescape(match.group(3))
        except (KeyError, ValueError, IndexError) as exc:
            raise ValueError("transcript line %d: bad escape (%s)" % (number, exc)) from None
        entries.append((float(match.group(1)), match.group(2), data))
    return entries


def command_word(data: bytes) -> bytes:
    parts = data.split(None, 1)
    return parts[0] if parts else b""


class Masker:
    """Replaces secrets and the meter's addresses in rendered transcript text."""

    def __init__(self, broute_id: str = "", password: str = "") -> None:
        self.pairs: List[Tuple[str, str]] = []
        for secret, mask in ((broute_id, ID_MASK), (password, PASSWORD_MASK), (broute_id[-8:], PAIR_ID_MASK)):
            if secret:
                self.pairs.append((secret, mask))
        self.meter_macs: set = set()

    def learn(self, text: str) -> None:
        """Note a meter MAC in ``text`` (a scan result, an SKLL64) before it is written."""
        for pattern in _MAC_IN:
            for mac in pattern.findall(text):
                mac = mac.upper()
                if mac != METER_MAC and mac not in self.meter_macs:
                    self.meter_macs.add(mac)
                    self.pairs.append((mac, METER_MAC))
                    self.pairs.append((link_local(mac), link_local(METER_MAC)))

    def mask(self, text: str) -> str:
        self.learn(text)
        for secret, mask in self.pairs:
            text = text.replace(secret, mask)
            if secret.upper() != secret:
                text = text.replace(secret.upper(), mask)
        return text


class TranscriptWriter:
    """Masked, timestamped entries to ``stream`` (one line each, flushed)."""

    def __init__(self, stream: TextIO, masker: Masker, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.masker = masker
        self.clock = clock
        self.start = clock()
        self.lock = threading.Lock()
        stream.write(HEADER + "\n")

    def comment(self, text: str) -> None:
        with self.lock:
            self.stream.write("# %s\n" % self.masker.mask(text))
            self.stream.flush()

    def entry(self, direction: str, data: bytes) -> None:
        with self.lock:
            text = self.masker.mask(escape(data))
            self.stream.write(format_entry(self.clock() - self.start, direction, text) + "\n")
            self.stream.flush()


def _erxudp_header(buf: bytes) -> Any:
    """(payload start, DATALEN) of the ERXUDP ``buf`` starts with; None
    while the header is incomplete; -1 if it is not one.  After SENDER, DEST,
    RPORT, LPORT and SENDERLLA come [RSSI (2)] SECURED (1) [SIDE (1)] and the
    4-digit DATALEN, whatever the module kind (skstack.md 5.3)."""
    if not buf.startswith(b"ERXUDP "):
        return -1
    pos = len(b"ERXUDP ")
    count = 0
    while True:
        space = buf.find(b" ", pos)
        if space < 0:
            return -1 if b"\n" in buf[pos:] or len(buf) - pos > 64 else None
        token, pos = buf[pos:space], space + 1
        count += 1
        if count <= 5:
            continue
        if len(token) == 4 and count >= 7:
            try:
                return pos, int(token, 16)
            except ValueError:
                return -1
        if len(token) not in (1, 2) or count > 8:
            return -1


def erxudp_end(buf: bytes) -> Optional[int]:
    """Where the ERXUDP that ``buf`` starts with ends (after its CR LF); None
    while incomplete; -1 if it is not an ERXUDP.  The payload is hex or raw
    bytes (which may hold CR or LF)."""
    header = _erxudp_header(buf)
    if header is None or header == -1:
        return header
    pos, length = header
    if buf[pos + length:pos + length + 2] == b"\r\n":
        return pos + length + 2          # raw payload
    if buf[pos + 2 * length:pos + 2 * length + 2] == b"\r\n":
        return pos + 2 * length + 2      # hex payload
    return None if len(buf) < pos + 2 * length + 2 else -1


def mask_pana(entry: bytes) -> bytes:
    """An ERXUDP from or to the PANA port (02CC) with its payload zeroed
    (same length): the authentication exchange carries the Route-B ID, in
    the clear or in hex."""
    fields = entry.split(b" ", 5)
    header = _erxudp_header(entry)
    if header is None or header == -1 or len(fields) < 6 \
            or b"02CC" not in (fields[3].upper(), fields[4].upper()):
        return entry
    pos, length = header
    body_end = len(entry) - 2 if entry.endswith(b"\r\n") else len(entry)
    size = body_end - pos
    zero = b"\x00" if size == length else b"0"
    return entry[:pos] + zero * size + entry[body_end:]


class RecordingPort:
    """An open pyserial port that copies every write and read to a TranscriptWriter.

    Received bytes become one entry per line, except that an ERXUDP is kept
    whole (its raw payload may hold LF), and the payload of a PANA ERXUDP is
    zeroed (``mask_pana``).
    """

    def __init__(self, port: Any, writer: TranscriptWriter) -> None:
        self.port = port
        self.writer = writer
        self.partial = b""          # read bytes not written out yet

    def write(self, data: bytes) -> Optional[int]:
        self._flush_partial()        # what was read before this write came before it
        self.writer.entry(">", bytes(data))
        return self.port.write(data)

    def read(self, size: int = 1) -> bytes:
        data = self.port.read(size)
        if data:
            self.partial += data
            while self.partial:
                end = erxudp_end(self.partial)
                if end is None:
                    break                         # an ERXUDP still arriving
                if end < 0:
                    if b"\n" not in self.partial:
                        break
                    end = self.partial.index(b"\n") + 1
                entry, self.partial = self.partial[:end], self.partial[end:]
                self.writer.entry("<", mask_pana(entry))
        return data

    def _flush_partial(self) -> None:
        if self.partial:
            self.writer.entry("<", mask_pana(self.partial))
            self.partial = b""

    def close(self) -> None:
        self._flush_partial()
        self.port.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.port, name)
