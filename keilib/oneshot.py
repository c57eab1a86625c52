"""One session with the meter: what ``kei read`` and ``kei probe`` share.

``OneShotReader`` is the daemon's ``BrouteReader`` (same state machine,
same driver, same scan cache), asked for each request group once: it walks
INIT -> ... -> POLL as always, and ``done`` is set when the meter has
answered every group (a value, "no data", or a refusal).  Stopping it ends
the session with SKTERM, as the daemon does.

``settings()`` finds the port, module kind and credentials: command line
first, then the environment (``KEI_BROUTE_ID``, ``KEI_BROUTE_PWD``,
``KEI_PORT``, ``KEI_DEVICE``), then the BrouteReader entry of a kei config
(``-c``, default ``./keiconf.py`` when present), so a password never has to
be typed on a command line.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import logging
import os
import sys
import threading

from keilib.broute import BrouteReader, State
from keilib.echonet import EPC, is_value
from keilib.errors import ConfigError
from keilib.skstack import BP35A1, BP35C2, SkDevice, WiSunRL7023

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Dict, List, Optional

EXIT_OK = 0
EXIT_NO_ANSWER = 1
EXIT_USAGE = 2
EXIT_PORT_BUSY = 3

DEVICES = {
    "bp35c2": lambda port, baud: BP35C2(port, baud),
    "bp35c0": lambda port, baud: BP35C2(port, baud),
    "bp35a1": lambda port, baud: BP35A1(port, baud),
    "ips": lambda port, baud: WiSunRL7023(port, baud, type=WiSunRL7023.IPS),
    "dss": lambda port, baud: WiSunRL7023(port, baud, type=WiSunRL7023.DSS),
}

# Why a session did not get its answers, by the state it was left in.
FAILURE_BY_STATE = {
    State.INIT: "cannot open the port {port}",
    State.OPEN: "the Wi-SUN module on {port} does not answer (is --device right? is it the module's port?)",
    State.SETUP: "the Wi-SUN module on {port} did not accept the Route-B ID and password",
    # SCAN reached: the scans found nothing (JOIN would be next).
    State.SCAN: "no smart meter found (is Route B enabled for this meter, and the Route-B ID right?)",
    # JOIN reached: the join never succeeded (POLL would be next).
    State.JOIN: "the meter refused the join or did not answer it (check the Route-B ID and password)",
    State.POLL: "joined, but the meter did not answer {missing}",
}

STATE_ORDER = [State.INIT, State.OPEN, State.SETUP, State.SCAN, State.JOIN, State.POLL]
REFUSED = "refused"          # the meter answered Get_SNA for this property


class OneShotReader(BrouteReader):
    """A BrouteReader that asks each of ``groups`` (lists of EPC names) once.

    ``values``: sensor name (``E7``, ``E8R``, ``E8T``, ``E0``, ``D3``, ...)
    -> the value (a number, an ``echonet.NoValue``, or ``REFUSED``), in the
    order the answers came; ``done`` is set when every group was answered.
    """

    def __init__(self, wisundev: SkDevice, broute_id: str, broute_pwd: str, groups: List[List[str]],
                 scan_cache: str = "scancache.json", response_timeout: float = 10.0) -> None:
        # One long cycle: each group is sent at the join and never again
        # within any run of these commands.
        super().__init__(wisundev=wisundev, broute_id=broute_id, broute_pwd=broute_pwd,
                         requests=[{"epc": list(group), "cycle": 86400} for group in groups],
                         scan_cache=scan_cache, response_timeout=response_timeout)
        self.values: "collections.OrderedDict[str, Any]" = collections.OrderedDict()
        self.answered: set = set()
        self.done = threading.Event()
        self.answer_time: Optional[datetime.datetime] = None
        self._collecting = False
        self.furthest = State.INIT       # the furthest state reached: what the failure was

    def transition(self, state: State, reason: str) -> None:
        super().transition(state, reason)
        if STATE_ORDER.index(state) > STATE_ORDER.index(self.furthest):
            self.furthest = state

    def record_properties(self, frame: Any, now: datetime.datetime, notification: bool = False) -> None:
        if notification:
            super().record_properties(frame, now, notification)
            return
        self._collecting = True
        try:
            super().record_properties(frame, now, notification)
        finally:
            self._collecting = False
        for group in self.groups:
            if [p.epc for p in frame.properties] == group.epcs:
                self.answered.add(id(group))
                for prop in frame.properties:
                    if not prop.edt:
                        self.values.setdefault("%02X" % prop.epc, REFUSED)
        if self.answer_time is None:
            self.answer_time = now
        if len(self.answered) == len(self.groups):
            self.done.set()

    def record_value(self, epc: int, value: Any, now: datetime.datetime, notification: bool) -> None:
        if self._collecting and epc in (EPC.COEFFICIENT, EPC.EFFECTIVE_DIGITS, EPC.E1) \
                and any(epc in group.epcs for group in self.groups):
            self.values["%02X" % epc] = value.kwh if epc == EPC.E1 else value
        super().record_value(epc, value, now, notification)

    def put(self, stamp: datetime.datetime, sensor: str, value: Any) -> None:
        if self._collecting:
            self.values[sensor] = value
        super().put(stamp, sensor, value)

    def why_not(self) -> str:
        """Why ``done`` was not reached, in words for the user."""
        missing = [" ".join("%02X" % e for e in g.epcs) for g in self.groups if id(g) not in self.answered]
        return FAILURE_BY_STATE[self.furthest].format(port=self.device.port, missing=", ".join(missing))


def log_to_stderr(verbose: bool) -> logging.Handler:
    """WARNING (INFO with ``verbose``) lines on stderr for one command; the
    caller removes the returned handler from the root logger when done."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > handler.level or root.level == logging.NOTSET:
        root.setLevel(handler.level)
    return handler


def run_session(reader: OneShotReader, timeout: float) -> bool:
    """Start ``reader``, wait up to ``timeout`` s for every answer, stop it
    (SKTERM when joined); True if every group was answered."""
    reader.start()
    try:
        reader.done.wait(timeout)
    except KeyboardInterrupt:
        pass
    finally:
        reader.stop(timeout=10)
    return reader.done.is_set()


def format_value(value: Any) -> str:
    """A value for ``E7:1234`` output; ``U`` (cacti's "unknown") for no value."""
    if value is REFUSED or not is_value(value) or value is None:
        return "U"
    if isinstance(value, float):
        return ("%.4f" % value).rstrip("0").rstrip(".") if value != int(value) else "%.1f" % value
    return str(value)


def json_value(value: Any) -> Any:
    if value is REFUSED or not is_value(value) or value is None:
        return None
    return value


# -- settings ---------------------------------------------------------------

def add_session_arguments(parser: argparse.ArgumentParser, timeout: float = 120.0) -> None:
    parser.add_argument("--port", help="the Wi-SUN module's port or URL (env KEI_PORT; default: the "
                                       "config's BrouteReader)")
    parser.add_argument("--device", choices=sorted(DEVICES),
                        help="module kind (env KEI_DEVICE; default: the config's)")
    parser.add_argument("--baud", type=int, default=None, help="baud rate (default 115200)")
    parser.add_argument("--id", dest="broute_id", help="Route-B ID (better: env KEI_BROUTE_ID or the config)")
    parser.add_argument("--password", dest="broute_pwd",
                        help="Route-B password (better: env KEI_BROUTE_PWD or the config)")
    parser.add_argument("-c", "--config", default=None,
                        help="kei config to take the BrouteReader's settings from (default: ./keiconf.py "
                             "if present)")
    parser.add_argument("--timeout", type=float, default=timeout,
                        help="seconds to wait for the answers (default %g; scans can take minutes)" % timeout)


def device_kind(device: SkDevice) -> str:
    """The ``--device`` name of a configured driver object."""
    if isinstance(device, WiSunRL7023):
        return "ips" if device.type == WiSunRL7023.IPS else "dss"
    return "bp35a1" if isinstance(device, BP35A1) else "bp35c2"


def _from_config(path: str) -> Dict[str, Any]:
    """port, device, baud, broute_id, broute_pwd, scan_cache of the first
    BrouteReader entry of the config at ``path``."""
    from keilib.daemon import load_config      # the launcher's loader: same errors, same rules
    module = load_config(path)
    for entry in getattr(module, "worker_def", []):
        cls = entry.get("class") if isinstance(entry, dict) else None
        if isinstance(cls, type) and issubclass(cls, BrouteReader):
            args = entry.get("args", {})
            # The daemon keeps its scan cache beside its config (its work directory).
            cache = os.path.join(os.path.dirname(os.path.abspath(path)), args.get("scan_cache") or "scancache.json")
            found: Dict[str, Any] = {"broute_id": args.get("broute_id"), "broute_pwd": args.get("broute_pwd"),
                                     "scan_cache": cache}
            device = args.get("wisundev")
            if isinstance(device, SkDevice):
                found.update(port=device.port, baud=device.baud, device=device_kind(device))
            elif args.get("port"):             # keilog's port/baudrate form means a DSS stick
                found.update(port=args["port"], baud=args.get("baudrate"), device="dss")
            return found
    raise ConfigError("%s has no BrouteReader entry" % path)


def settings(args: argparse.Namespace, environ: Any = os.environ) -> Dict[str, Any]:
    """Merge command line > environment > config; raise ConfigError naming what is missing."""
    from_config: Dict[str, Any] = {}
    if args.config:
        from_config = _from_config(args.config)
    elif os.path.isfile("keiconf.py"):
        try:
            from_config = _from_config("keiconf.py")
        except ConfigError:
            pass     # e.g. a serial-only config here: the other sources must say it all
    chosen = {
        "port": args.port or environ.get("KEI_PORT") or from_config.get("port"),
        "device": args.device or environ.get("KEI_DEVICE") or from_config.get("device"),
        "baud": args.baud or from_config.get("baud") or 115200,
        "broute_id": args.broute_id or environ.get("KEI_BROUTE_ID") or from_config.get("broute_id"),
        "broute_pwd": args.broute_pwd or environ.get("KEI_BROUTE_PWD") or from_config.get("broute_pwd"),
        "scan_cache": from_config.get("scan_cache") or "scancache.json",
    }
    missing = [what for what, key in (("--port (or KEI_PORT)", "port"), ("--device (or KEI_DEVICE)", "device"),
                                      ("--id (or KEI_BROUTE_ID)", "broute_id"),
                                      ("--password (or KEI_BROUTE_PWD)", "broute_pwd")) if not chosen[key]]
    if missing:
        raise ConfigError("missing %s; give them on the command line, in the environment, or in the "
                          "BrouteReader entry of keiconf.py (-c PATH)" % ", ".join(missing))
    if chosen["device"] not in DEVICES:
        raise ConfigError("unknown device %r (one of %s)" % (chosen["device"], ", ".join(sorted(DEVICES))))
    chosen["wisundev"] = DEVICES[chosen["device"]](chosen["port"], int(chosen["baud"]))
    return chosen
