"""A simulated device that replays a ``kei probe`` transcript: ``sim://replay?file=PATH``.

It answers the host the way the real module answered during the probe:
each write of the host is looked up among the transcript's ``>`` entries,
from the current position on, and when found, every ``<`` entry recorded
after that one (up to the next ``>``) is sent back, at once.  Entries
skipped over (a command of the probe the host does not send, such as the
register dump) are passed by.  A write that matches nothing ahead gets no
answer, as from a module that ignored it.

Matching is exact on the bytes of the write, except for the commands that
carry secrets (SKSETRBID, SKSETPWD): the transcript has them masked, so
only the command word is compared.  The meter's masked addresses are
consistent stand-ins, so the host's SKLL64, SKJOIN and SKSENDTO carry
exactly what was recorded.  One write is one command (kei's drivers write
each command in one call).

Options: ``file`` (required): the transcript; ``name`` as for every sim://
device.  Grammar: ``URL_GRAMMAR``.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, List, Mapping, Optional, Tuple

from keilib import transcript

logger = logging.getLogger(__name__)

URL_GRAMMAR = "sim://replay?file=<path of a kei probe transcript>"


class ReplayDevice:
    """Replays the module's side of a transcript (device interface: keilib.sim.transport)."""

    def __init__(self, entries: List[Tuple[float, str, bytes]]) -> None:
        self.entries = entries
        self.position = 0
        self._sink: Optional[Callable[[bytes], None]] = None
        self._lock = threading.Lock()
        self.unmatched: List[bytes] = []       # host writes that found no entry (for tests)

    @classmethod
    def from_file(cls, path: str) -> "ReplayDevice":
        with open(path, encoding="utf-8") as handle:
            return cls(transcript.parse(handle.readlines()))

    def attach(self, write: Optional[Callable[[bytes], None]]) -> None:
        with self._lock:
            self._sink = write

    def receive(self, data: bytes) -> None:
        with self._lock:
            found = self._find(data)
            if found is None:
                self.unmatched.append(bytes(data))
                logger.debug("replay: no recorded command matches %r", data[:60])
                return
            answer = []
            index = found + 1
            while index < len(self.entries) and self.entries[index][1] == "<":
                answer.append(self.entries[index][2])
                index += 1
            self.position = index
            sink = self._sink
        if sink is not None:
            for chunk in answer:
                sink(chunk)

    def _find(self, data: bytes) -> Optional[int]:
        word = transcript.command_word(data)
        for index in range(self.position, len(self.entries)):
            _, direction, recorded = self.entries[index]
            if direction != ">":
                continue
            if recorded == data or (word in transcript.SECRET_COMMANDS
                                    and transcript.command_word(recorded) == word):
                return index
        return None

    def reset(self) -> None:
        """A power cycle: the conversation starts again from the top."""
        with self._lock:
            self.position = 0

    def close(self) -> None:
        self.attach(None)


def from_options(options: Mapping[str, str]) -> ReplayDevice:
    unknown = sorted(set(options) - {"file"})
    if unknown or not options.get("file"):
        raise ValueError("%s; got %s" % (URL_GRAMMAR, ", ".join(unknown) or "no file"))
    try:
        return ReplayDevice.from_file(options["file"])
    except OSError as exc:
        raise ValueError("cannot read transcript %s: %s" % (options["file"], exc)) from None


__all__ = ["ReplayDevice", "from_options", "URL_GRAMMAR"]
