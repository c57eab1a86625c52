"""``kei read``: read a few smart-meter properties once, for cacti, munin, zabbix and scripts.

    kei read [--port PORT] [--device bp35c2|bp35a1|ips|dss] [--id ID --password PWD]
             [--json] [E7 E8 E0 ...]

Joins the meter (through the scan cache the daemon uses, so usually no
scan), asks for the listed properties in one Get (default: E7), prints them
on one line, ``E7:1234 E8R:5.0 E8T:3.0 E0:12345.6`` (``U`` for a value the
meter has not got), or a JSON object with ``--json``, ends the session with
SKTERM and exits 0.  Credentials and port also come from the environment or
the config (``keilib.oneshot.settings``).

Exit status: 0 answered; 1 the module or the meter did not answer (the
reason on stderr); 2 usage or configuration error; 3 the port is in use:
kei's daemon (or another program) has it open.  The daemon opens a local
port with an exclusive lock (``flock``, pyserial's ``exclusive=True``), and
``kei read`` refuses a port whose lock is held (``keilib.ports.port_in_use``);
``socket://`` and other URLs have no such lock.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from keilib import oneshot
from keilib.broute import MAX_EPCS_PER_FRAME, REQUESTABLE
from keilib.errors import ConfigError
from keilib.ports import port_in_use

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import List, Optional



def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kei read", description=(
        "Read smart-meter properties once over Route B and print them "
        "(E7:1234 E8R:5.0 ...); exit 0 if the meter answered."))
    parser.add_argument("epcs", nargs="*", metavar="EPC", default=["E7"],
                        help="properties to read: %s (default: E7)" % " ".join(sorted(REQUESTABLE)))
    parser.add_argument("--json", action="store_true", help="print a JSON object instead")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the session on stderr")
    oneshot.add_session_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    handler = oneshot.log_to_stderr(args.verbose)
    try:
        return read(args)
    finally:
        logging.getLogger().removeHandler(handler)


def read(args: argparse.Namespace) -> int:
    epcs = [epc.upper() for epc in args.epcs]
    unknown = [epc for epc in epcs if epc not in REQUESTABLE]
    if unknown or len(set(epcs)) != len(epcs):
        sys.stderr.write("kei read: properties must be distinct, from %s; got %s\n"
                         % (" ".join(sorted(REQUESTABLE)), " ".join(args.epcs)))
        return oneshot.EXIT_USAGE
    try:
        chosen = oneshot.settings(args)
    except ConfigError as exc:
        sys.stderr.write("kei read: %s\n" % exc)
        return oneshot.EXIT_USAGE
    if port_in_use(chosen["port"]):
        sys.stderr.write("kei read: %s is in use: kei's daemon (or another program) has it open. "
                         "Stop it first (sudo systemctl stop kei), or read the daemon's own files.\n"
                         % chosen["port"])
        return oneshot.EXIT_PORT_BUSY
    groups = [epcs[i:i + MAX_EPCS_PER_FRAME] for i in range(0, len(epcs), MAX_EPCS_PER_FRAME)]
    try:
        reader = oneshot.OneShotReader(chosen["wisundev"], chosen["broute_id"], chosen["broute_pwd"], groups,
                                       scan_cache=chosen["scan_cache"])
    except ConfigError as exc:
        sys.stderr.write("kei read: %s\n" % exc)
        return oneshot.EXIT_USAGE
    if not oneshot.run_session(reader, args.timeout):
        sys.stderr.write("kei read: no answer within %g s: %s\n" % (args.timeout, reader.why_not()))
        return oneshot.EXIT_NO_ANSWER
    values = ordered(reader.values, epcs)
    for name, value in values:
        if value is oneshot.REFUSED:
            sys.stderr.write("kei read: the meter does not provide %s\n" % name)
    if args.json:
        print(json.dumps(dict((name, oneshot.json_value(value)) for name, value in values)))
    else:
        print(" ".join("%s:%s" % (name, oneshot.format_value(value)) for name, value in values))
    return oneshot.EXIT_OK


def ordered(values: dict, epcs: List[str]) -> list:
    """(name, value) in the order asked; E8 gives E8R and E8T (T only on a
    3-wire meter), a property with no answer at all gives None."""
    result = []
    for epc in epcs:
        if epc == "E8":
            names = [name for name in ("E8R", "E8T") if name in values] or ["E8R"]
        else:
            names = [epc]
        result.extend((name, values.get(name)) for name in names)
    return result
