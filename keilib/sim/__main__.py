"""Serve a simulated device on a pseudo-terminal.

    python3 -m keilib.sim wisun --kind ips [--id ID --password PWD --scale N --seed N]
                                [--latency realistic|zero] [--link PATH] [--option K=V ...]
                                [--control]

The first line on stdout is the pty's slave path (flushed at once), so a
script can read it and point kei (or any client) at it.  Serves until SIGINT
or SIGTERM.  With ``--control`` (devices with a ``control()`` method: wisun)
each line on stdin is a fault command switched on at once, e.g. ``silent on``,
``delay_reply 3 1``, ``unplug`` (``keilib.sim.wisun.CONTROL_GRAMMAR``); each
gets ``ok`` or ``error: <why>`` on stdout.  EOF on stdin ends only the
control reader.  After ``unplug``/``replug`` the pty has a new path: use
``--link`` for a stable name.

    python3 -m keilib.sim lan --device ecocute|battery|solar --address 127.0.0.N
                              [--scale N] [--no-multicast] [--inf-to ADDR ...]

``lan`` is not a serial device: it serves one ECHONET Lite node on UDP
(address, 3610) (``keilib.sim.lan``); its first stdout line is
``<address>:3610`` (IPv6: ``[<address>]:3610``).

Each serial device is a subcommand built from a row of SUBCOMMANDS: its module's
``from_options()`` receives the options as strings, exactly as from a
``sim://`` URL, so both front ends accept the same names.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any, Dict, List, Optional

from keilib.sim.transport import PtyTransport

# subcommand -> (device module, {flag: option name}); other options via --option K=V
SUBCOMMANDS: Dict[str, tuple] = {
    "wisun": ("keilib.sim.wisun", {"--kind": "kind", "--id": "id", "--password": "password",
                                   "--scale": "scale", "--seed": "seed", "--latency": "latency"}),
    "sensor": ("keilib.sim.sensor", {"--units": "units", "--sensors": "sensors", "--rate": "rate",
                                     "--seed": "seed", "--dup": "dup", "--garbage": "garbage",
                                     "--ids": "ids", "--count": "count", "--eol": "eol",
                                     "--unplug-every": "unplug_every", "--unplug-for": "unplug_for"}),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m keilib.sim",
                                     description="Serve a simulated device on a pty.")
    sub = parser.add_subparsers(dest="device", required=True)
    for name, (module_name, flags) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        grammar = getattr(module, "URL_GRAMMAR", "")
        cmd = sub.add_parser(name, help="simulated %s" % name,
                             epilog="--option accepts every option of: %s" % grammar)
        for flag, option in flags.items():
            cmd.add_argument(flag, dest="opt_" + option, metavar=option.upper())
        cmd.add_argument("--link", help="also make this symlink to the pty (like /dev/serial/by-id)")
        cmd.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="any other device option, e.g. --option scan_min=6")
        cmd.add_argument("--control", action="store_true",
                         help="read fault commands from stdin, one a line; answer ok or "
                              "error: ... on stdout" + (
                                  " (%s)" % module.CONTROL_GRAMMAR
                                  if hasattr(module, "CONTROL_GRAMMAR") else ""))
        cmd.add_argument("--verbose", action="store_true", help="log to stderr")
    lan = sub.add_parser("lan", help="a simulated ECHONET Lite device on the LAN (UDP port 3610)")
    lan.add_argument("--device", dest="lan_device", required=True, choices=["ecocute", "battery", "solar"])
    lan.add_argument("--address", required=True,
                     help="the node's own IPv4 or IPv6 address, e.g. 127.0.0.5, ::1 or fe80::5%%eth0")
    lan.add_argument("--interface", help="IPv6: the interface where ff02::1 is joined (default: the "
                     "address's own, as in fe80::5%%eth0)")
    lan.add_argument("--instance", type=int, default=1, help="instance code of the device object (1)")
    lan.add_argument("--scale", type=float, default=1.0, help="simulated time runs this much faster")
    lan.add_argument("--no-multicast", action="store_true", help="do not join or send to 224.0.23.0 (ff02::1)")
    lan.add_argument("--inf-to", action="append", default=[], metavar="ADDR",
                     help="also send INF notifications to this address (unicast)")
    lan.add_argument("--verbose", action="store_true", help="log to stderr")
    return parser


def serve_lan(args: argparse.Namespace) -> int:
    """``lan``: serve one ECHONET Lite node until SIGINT/SIGTERM."""
    from keilib.clock import SYSTEM_CLOCK, ScaledClock
    from keilib.sim.lan import PORT, LanNode, make_model

    clock = ScaledClock(args.scale) if args.scale != 1 else SYSTEM_CLOCK
    try:
        node = LanNode(make_model(args.lan_device, args.instance), args.address, clock=clock,
                       multicast=not args.no_multicast, inf_to=args.inf_to,
                       interface=args.interface).start()
    except (OSError, ValueError) as exc:
        print("error: %s:%d: %s" % (args.address, PORT, exc), file=sys.stderr, flush=True)
        return 1
    try:
        print(("[%s]:%d" if ":" in args.address else "%s:%d") % (args.address, PORT), flush=True)
        signal.sigwait(STOP_SIGNALS)
    finally:
        node.stop()
    return 0


def serve_control(device: Any, stdin_fd: int = 0, stdout_fd: int = 1) -> None:
    """Run ``device.control(line)`` for each stdin line until EOF; answer on stdout.

    Raw fd I/O: a daemon thread blocked in a buffered stdin read would hold
    that object's lock while the interpreter shuts down.
    """
    pending = b""
    while True:
        try:
            chunk = os.read(stdin_fd, 4096)
        except OSError:
            return
        if not chunk:
            return                               # EOF: the server keeps serving
        pending += chunk
        while b"\n" in pending:
            raw, pending = pending.split(b"\n", 1)
            command = raw.decode("utf-8", "replace").strip()
            if not command:
                continue
            try:
                device.control(command)
                answer = "ok"
            except Exception as exc:  # noqa: BLE001 - report, keep reading
                answer = "error: %s" % (exc or type(exc).__name__)
            try:
                os.write(stdout_fd, answer.encode("utf-8", "replace") + b"\n")
            except OSError:
                return


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGINT/SIGTERM are taken by sigwait() below.  Blocked before any thread
    # starts, so every thread inherits the mask and none gets them; no Python
    # handler runs, so none can deadlock on a lock the main thread holds.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if args.device == "lan":                 # a UDP node, not a serial device
        return serve_lan(args)
    module_name, flags = SUBCOMMANDS[args.device]
    options = {option: getattr(args, "opt_" + option) for option in flags.values()
               if getattr(args, "opt_" + option) is not None}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error("--option needs KEY=VALUE, got %r" % item)
        options[key] = value
    try:
        device = importlib.import_module(module_name).from_options(options)
    except ValueError as exc:
        parser.error(str(exc))
    if args.control and not hasattr(device, "control"):
        device.close()
        parser.error("--control: the %s device has no run-time faults" % args.device)

    transport = PtyTransport(device, link_path=args.link)
    if hasattr(device, "bind_transport"):   # devices that pull their own plug (sensor, wisun)
        device.bind_transport(transport)
    try:
        print(transport.slave_path, flush=True)
        if args.control:                     # started after the mask: no signals here either
            threading.Thread(target=serve_control, args=(device,), name="sim-control",
                             daemon=True).start()
        signal.sigwait(STOP_SIGNALS)
    finally:
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
