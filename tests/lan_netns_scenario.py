"""Multicast discovery scenario, run by tests/test_lan_discovery.py inside a
private network namespace (``unshare -rn``: only a loopback interface, so
nothing leaves the machine and no other test shares 224.0.23.0:3610).

Three simulated nodes and an EchonetLanReader with ``discover=True`` and no
configured address; the reader must find them by multicast, record them,
record a multicast INF, and find the solar node again after it moves to a new
address without announcing itself (only rediscovery after silence can find
it).  Then pychonet (when installed) discovers the nodes by multicast too.
Prints one JSON object with what happened; the test asserts on it.
"""

from __future__ import annotations

import asyncio
import datetime
import fcntl
import json
import logging
import queue
import socket
import struct
import sys
import time

from keilib import echonet as el
from keilib.clock import FakeClock
from keilib.lan import EchonetLanReader
from keilib.sim.lan import LanNode, make_model

READER = "127.0.0.1"
NODES = {"ecocute": "127.0.0.2", "battery": "127.0.0.3", "solar": "127.0.0.4"}
MOVED = "127.0.0.9"


def wait_for(predicate, timeout=15.0, message=""):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for %s" % message)
        time.sleep(0.01)


def loopback_up() -> None:
    """``ip link set lo up`` without needing iproute2: a new namespace's lo is down."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


async def pychonet_discovery(timeout: float = 10.0) -> dict:
    from pychonet.echonetapiclient import ECHONETAPIClient
    from pychonet.lib.udpserver import UDPServer

    server = UDPServer(local_ip="127.0.0.20")
    server.run("0.0.0.0", 3610, loop=asyncio.get_running_loop())
    try:
        client = ECHONETAPIClient(server)
        client._logger = lambda *args: None
        found = {}

        async def discovered(host):
            found[host] = True
            await client.discover(host)            # what Home Assistant does for a new host
        client._discover_callback = discovered
        # A multicast question is never "answered" by one TID match in
        # pychonet, so it waits its whole message timeout: keep that 1 s.
        client._message_timeout = 10
        await client.discover()                    # multicast Get D6
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            instances = {host: sorted("%02X%02X%02X" % (gc, cc, ci)
                                      for gc, classes in state.get("instances", {}).items()
                                      for cc, insts in classes.items() for ci in insts)
                         for host, state in client._state.items() if state.get("discovered")}
            if len(instances) >= 3:
                return instances
            await asyncio.sleep(0.05)
        return {"timeout": True, **{host: str(state) for host, state in client._state.items()}}
    finally:
        server.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    loopback_up()
    clock = FakeClock(datetime.datetime(2026, 5, 20, 14, 0, 0))
    result = {}
    nodes = {name: LanNode(make_model(name), address, clock=clock).start() for name, address in NODES.items()}
    q = queue.Queue()
    reader = EchonetLanReader(record_que=q, discover=True, address=READER, cycle=60, response_timeout=5,
                              rediscover=3600, clock=clock)
    records = []

    def drain():
        while True:
            try:
                records.append(q.get_nowait())
            except queue.Empty:
                return records

    def counter(name):
        return reader.health.snapshot()["counters"].get(name, 0)

    reader.start()
    try:
        wait_for(lambda: {r.unit for r in drain()} == {"026B01", "027D01", "027901"}, message="discovery")
        result["discovered"] = {unit: device.address for unit, device in sorted(reader.devices.items())}

        # A multicast INF: the battery is told to discharge, CF changes.
        with nodes["battery"].lock:
            nodes["battery"].model.set(0xDA, el.Code(0x43, ""))
        clock.advance(1)
        wait_for(lambda: any(r.sensor == "CF" and r.value == 0x43 for r in drain()), message="INF")
        result["inf"] = {"notifications": counter("notifications"), "requests": counter("requests")}

        # The solar node moves (a new DHCP lease) and does not announce itself.
        nodes["solar"].stop()
        moved = LanNode(make_model("solar"), MOVED, clock=clock, announce=False).start()
        nodes["solar_moved"] = moved
        requests, answers = counter("requests"), counter("answers")
        clock.advance(59)                       # the cycle: Gets go out, the old address is silent
        wait_for(lambda: counter("requests") >= requests + 3, message="the cycle's Gets")
        wait_for(lambda: counter("answers") >= answers + 2, message="the two others' answers")
        clock.advance(5)                        # response timeout -> silent -> rediscovery soon
        wait_for(lambda: counter("timeouts") >= 1, message="timeout")
        silent_at = clock.now()
        for _ in range(60):                     # rediscovery is due 5 s after the silence
            if any(r.unit == "027901" and r.timestamp > silent_at for r in drain()):
                break
            # Advance only while nothing is in flight, so a slow moment on a
            # loaded machine never turns into a response timeout.
            wait_for(lambda: all(d.pending is None for d in list(reader.devices.values())), message="answers")
            clock.advance(1)
            time.sleep(0.02)
        wait_for(lambda: any(r.unit == "027901" and r.timestamp > silent_at for r in drain()),
                 message="records from the new address")
        result["moved"] = {"address": reader.devices["027901"].address, "requests_at_new": moved.requests,
                           "timeouts": counter("timeouts")}
    finally:
        reader.stop()
    try:
        import pychonet  # noqa: F401 - test-only dependency; on Python < 3.10 not installed
    except ImportError:
        result["pychonet"] = "not installed"
    else:
        result["pychonet"] = asyncio.run(pychonet_discovery())
    for node in nodes.values():
        node.stop()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
