"""ECHONET Lite over IPv6, run by tests/test_lan_discovery.py inside a private
network namespace (``unshare -rn``), so ::1 and ff02::1 port 3610 are the
test's own and nothing leaves the machine.

Linux does not send IPv6 multicast over the loopback interface, so the
namespace gets a veth pair (v0, v1; iproute2's ``ip``), a link with real
multicast.  Three parts, each printed as one JSON object on the last line:

* ``unicast``: a reader on fd00::1 reads two configured devices, one at ::1
  and one at a link-local address with its interface (fe80::12%v0);
* ``all_interfaces``: a reader with ``discover=True``, no devices and no
  ``interface6`` finds three nodes (fd00::2..4 on v0) by asking ff02::1 on
  every interface, and records a multicast INF once (v0 and v1 are one
  link, so it is heard on both);
* ``one_interface``: a reader on fe80::1%v0 (so ``interface6`` is v0) finds
  them again; its multicast never goes to v1 or lo.
"""

from __future__ import annotations

import datetime
import json
import logging
import queue
import subprocess
import sys
import time

from keilib import echonet as el
from keilib.clock import FakeClock
from keilib.lan import EchonetLanReader
from keilib.sim.lan import LanNode, make_model

NODES = {"ecocute": "fd00::2", "battery": "fd00::3", "solar": "fd00::4"}


def wait_for(predicate, timeout=15.0, message=""):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for %s" % message)
        time.sleep(0.01)


def ip(*args: str) -> None:
    subprocess.run(("ip",) + args, check=True)


def make_link() -> None:
    """lo up; a veth pair v0/v1 up; fd00::1..4 and two link-local addresses on v0 (no DAD: usable at once)."""
    ip("link", "set", "lo", "up")
    ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    ip("link", "set", "v0", "up")
    ip("link", "set", "v1", "up")
    for address in ("fd00::1/64", "fd00::2/64", "fd00::3/64", "fd00::4/64", "fe80::1/64", "fe80::12/64"):
        ip("-6", "addr", "add", address, "dev", "v0", "nodad")


class Run:
    """One reader and a record list, drained as the test waits."""

    def __init__(self, clock, **args) -> None:
        self.queue: "queue.Queue" = queue.Queue()
        self.reader = EchonetLanReader(record_que=self.queue, cycle=60, response_timeout=5, rediscover=3600,
                                       clock=clock, **args)
        self.records = []

    def drain(self):
        while True:
            try:
                self.records.append(self.queue.get_nowait())
            except queue.Empty:
                return self.records

    def units(self):
        return {record.unit for record in self.drain()}

    def counter(self, name):
        return self.reader.health.snapshot()["counters"].get(name, 0)


def unicast(clock) -> dict:
    nodes = [LanNode(make_model("battery"), "::1", clock=clock, multicast=False).start(),
             LanNode(make_model("solar"), "fe80::12%v0", clock=clock, multicast=False).start()]
    run = Run(clock, devices=["::1", "fe80::12%v0"], address="fd00::1")
    run.reader.start()
    try:
        wait_for(lambda: run.units() == {"027D01", "027901"}, message="unicast records")
        return {"devices": {unit: device.address for unit, device in sorted(run.reader.devices.items())},
                "soc": [r.value for r in run.records if r.unit == "027D01" and r.sensor == "E4"][:1],
                "answers": run.counter("answers"), "timeouts": run.counter("timeouts")}
    finally:
        run.reader.stop()
        for node in nodes:
            node.stop()


def discovery(clock, nodes, inf: bool, **args) -> dict:
    run = Run(clock, discover=True, **args)
    run.reader.start()
    try:
        wait_for(lambda: run.units() == {"026B01", "027D01", "027901"}, message="discovery %r" % (args,))
        out = {"discovered": {unit: device.address for unit, device in sorted(run.reader.devices.items())},
               "links": sorted(run.reader.links6)}
        if inf:
            with nodes["battery"].lock:
                nodes["battery"].model.set(0xDA, el.Code(0x43, ""))
            clock.advance(1)
            wait_for(lambda: any(r.sensor == "CF" and r.value == 0x43 for r in run.drain()), message="INF")
            # v0 and v1 are one link: the INF comes in on both, and is recorded once
            wait_for(lambda: run.counter("inf_copies") == 1, message="the INF's second copy")
            out["inf"] = {"notifications": run.counter("notifications"), "requests": run.counter("requests"),
                          "cf_records": len([r for r in run.drain() if r.sensor == "CF" and r.value == 0x43])}
        return out
    finally:
        run.reader.stop()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    make_link()
    clock = FakeClock(datetime.datetime(2026, 5, 20, 14, 0, 0))
    result = {"unicast": unicast(clock)}
    # announce=False: found by the reader's question, not by the nodes' start-up INF
    nodes = {name: LanNode(make_model(name), address, clock=clock, interface="v0", announce=False).start()
             for name, address in NODES.items()}
    try:
        result["all_interfaces"] = discovery(clock, nodes, True, address="fd00::1")
        result["one_interface"] = discovery(clock, nodes, False, address="fe80::1%v0")
    finally:
        for node in nodes.values():
            node.stop()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
