"""``kei probe``: talk to a Wi-SUN module and meter the way kei does, and keep a transcript.

    kei probe [--port PORT] [--device bp35c2|bp35a1|ips|dss] [--id ID --password PWD] [-o FILE]

kei has been proven against its simulator; a transcript of a real module
and meter is what a bug report needs.  The probe:

1. asks the module for its version (SKVER, SKAPPVER), SKINFO and its
   registers (SKSREG, read only);
2. runs the daemon's own B-route reader (``keilib.oneshot.OneShotReader``):
   reset, Route-B ID and password, an active scan (always: the scan cache
   is not used, so the scan is in the transcript), SKLL64, the join, one
   Get of the conversion factors (D3, D7, E1) and then one Get for each
   property the reader records (``PROBE_REQUESTS``), and SKTERM;
3. writes every line sent and received, with timestamps, to FILE (default
   ``kei-probe-<date>-<time>.txt``), together with kei's own log lines as
   ``#`` notes.  The Route-B ID, the password and the meter's addresses are
   masked (``keilib.transcript``).

The transcript can be played back: ``sim://replay?file=FILE`` answers as
the module did (``keilib.sim.replay``), so a developer can run the reader
against what a user's module really said.

Exit status as ``kei read``: 0 every property answered, 1 the module or
meter did not answer (the transcript is written anyway), 2 usage, 3 the
port is in use by kei's daemon.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import re
import sys
import tempfile

from keilib import __version__, oneshot
from keilib.errors import ConfigError, DeviceError, DeviceGone, DeviceTimeout
from keilib.ports import port_in_use
from keilib.skstack import SkDevice, WiSunRL7023
from keilib.transcript import Masker, RecordingPort, TranscriptWriter

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, List, Optional

# One Get per property the reader records (the factors D3, D7, E1 come first
# at every join); a long cycle: each is asked once.
PROBE_REQUESTS = [{"epc": [epc], "cycle": 86400} for epc in ("E7", "E8", "E0", "E3", "EA", "EB")]
PROBE_GROUPS = [request["epc"] for request in PROBE_REQUESTS]

REGISTERS = ["S01", "S02", "S03", "S07", "S0A", "S15", "S16", "S17", "SA0", "SA1", "SA2",
             "SFB", "SFD", "SFE", "SFF"]
DUAL_REGISTERS = ["S0B", "SA9", "SF0"]


def recording(device: SkDevice, writer: TranscriptWriter) -> SkDevice:
    """A driver of the same kind on the same port whose every open port is recorded."""

    class Recording(type(device)):  # type: ignore[misc, valid-type]
        def open(self) -> None:
            super().open()
            self.serial = RecordingPort(self.serial, writer)

    Recording.__name__ = type(device).__name__
    if isinstance(device, WiSunRL7023):
        return Recording(device.port, device.baud, type=device.type)
    return Recording(device.port, device.baud)


class LogToTranscript(logging.Handler):
    """kei's INFO+ log lines as ``#`` notes in the transcript (masked there too)."""

    def __init__(self, writer: TranscriptWriter) -> None:
        super().__init__(logging.INFO)
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.comment("log %s: %s" % (record.levelname, record.getMessage()))
        except Exception:  # noqa: BLE001 - a note must never break the probe
            self.handleError(record)


def ask_module(device: SkDevice, writer: TranscriptWriter) -> bool:
    """Step 1: version, info, registers.  False if the module does not answer."""
    writer.comment("probe: module version, info and registers")
    try:
        device.open()
    except DeviceGone as exc:
        writer.comment("probe: %s" % exc)
        return False
    registers = REGISTERS + (DUAL_REGISTERS if device.KIND.dual else [])
    asks = [(device.command, command) for command in ("SKVER", "SKAPPVER", "SKINFO")] + \
        [(device.read_register, register) for register in registers]
    try:
        for ask, what in asks:
            try:
                ask(what)
            except (DeviceTimeout, DeviceGone):
                raise
            except DeviceError as exc:          # a command this module lacks: noted, go on
                writer.comment("probe: %s" % exc)
        return True
    except (DeviceTimeout, DeviceGone) as exc:
        writer.comment("probe: the module does not answer: %s" % exc)
        return False
    finally:
        device.close()


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kei probe", description=(
        "Talk to a Wi-SUN module and smart meter as kei does and write a transcript "
        "(secrets and the meter's addresses masked) to attach to a bug report."))
    parser.add_argument("-o", "--output", help="transcript file (default: kei-probe-<date>-<time>.txt)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the session on stderr")
    # Five scans of growing duration take up to about four minutes.
    oneshot.add_session_arguments(parser, timeout=300.0)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    handler = oneshot.log_to_stderr(args.verbose)
    try:
        return probe(args)
    finally:
        logging.getLogger().removeHandler(handler)


def probe(args: argparse.Namespace) -> int:
    try:
        chosen = oneshot.settings(args)
    except ConfigError as exc:
        sys.stderr.write("kei probe: %s\n" % exc)
        return oneshot.EXIT_USAGE
    if port_in_use(chosen["port"]):
        sys.stderr.write("kei probe: %s is in use: kei's daemon (or another program) has it open. "
                         "Stop it first (sudo systemctl stop kei).\n" % chosen["port"])
        return oneshot.EXIT_PORT_BUSY
    path = args.output or datetime.datetime.now().strftime("kei-probe-%Y%m%d-%H%M%S.txt")
    masker = Masker(chosen["broute_id"], chosen["broute_pwd"])
    with open(path, "w", encoding="utf-8") as stream:
        writer = TranscriptWriter(stream, masker)
        device = recording(chosen["wisundev"], writer)
        for note in ("kei %s, Python %s, %s" % (__version__, platform.python_version(), platform.platform()),
                     "started %s" % datetime.datetime.now().isoformat(timespec="seconds"),
                     "module %s on %s" % (device.kind, re.sub(r"//[^/@]*@", "//***@", chosen["port"])),
                     "masked: Route-B ID, password, Pairing ID; the meter's MAC and IPv6 address are "
                     "shown as a stand-in (0000000000000001)",
                     "'>' sent to the module, '<' received; bytes escaped as \\r \\n \\xNN"):
            writer.comment(note)
        notes = LogToTranscript(writer)
        root = logging.getLogger()
        root.addHandler(notes)
        level = root.level
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        try:
            answered = ask_module(device, writer)
            if answered:
                answered = session(device, chosen, args.timeout, writer)
        finally:
            root.removeHandler(notes)
            root.setLevel(level)
    print("kei probe: transcript written to %s\n"
          "Please attach it to your bug report (the Route-B ID, password and the meter's "
          "addresses are masked; have a look before you post it)." % os.path.abspath(path))
    return oneshot.EXIT_OK if answered else oneshot.EXIT_NO_ANSWER


def session(device: SkDevice, chosen: Any, timeout: float, writer: TranscriptWriter) -> bool:
    """Step 2: the reader's own walk to POLL, one Get of each property, SKTERM."""
    writer.comment("probe: reset, scan, join, one Get of each property, SKTERM (kei's B-route reader)")
    with tempfile.TemporaryDirectory(prefix="kei-probe-") as scratch:
        reader = oneshot.OneShotReader(device, chosen["broute_id"], chosen["broute_pwd"], PROBE_GROUPS,
                                       scan_cache=os.path.join(scratch, "scancache.json"))
        done = oneshot.run_session(reader, timeout)
    values = " ".join("%s=%s" % (name, oneshot.format_value(value)) for name, value in reader.values.items())
    writer.comment("probe: values %s" % (values or "(none)"))
    if not done:
        writer.comment("probe: incomplete: %s" % reader.why_not())
        sys.stderr.write("kei probe: no answer within %g s: %s\n" % (timeout, reader.why_not()))
    return done
