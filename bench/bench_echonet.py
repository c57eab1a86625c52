"""Measure the ECHONET Lite codec and the simulated meter; prints figures.

    python3 bench/bench_echonet.py

The target (a Raspberry-Pi-class CPU) is roughly 10x slower than a desktop;
what matters is that a B-route poll (a few frames a minute) costs nothing and
that the simulator answers well inside the module emulator's 0.2 s latency.
"""

from __future__ import annotations

import datetime
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keilib import echonet as el  # noqa: E402
from keilib.sim.meter import SmartMeter  # noqa: E402


def rate(label: str, func, repeat: int) -> None:
    start = time.perf_counter()
    for _ in range(repeat):
        func()
    elapsed = time.perf_counter() - start
    print("%-46s %10.1f us/op  (%d ops)" % (label, elapsed / repeat * 1e6, repeat))


def once(label: str, func) -> None:
    start = time.perf_counter()
    func()
    print("%-46s %10.1f ms" % (label, (time.perf_counter() - start) * 1e3))


def main() -> None:
    inf = bytes.fromhex("1081000102880105FF017302EA0B07E70C13001E000000458EEB0B07E70C13001E0000000015")
    get_res = bytes.fromhex("1081000402880105FF017203E80400320014E004000186A0E704000001F4")
    e2 = el.Frame(4, el.METER, el.CONTROLLER, el.ESV.GET_RES,
                  (el.Property(0xE2, el.encode_daily_history(0, list(range(48)))),)).encode()
    rate("Frame.decode INF EA+EB (38 B)", lambda: el.Frame.decode(inf), 20000)
    rate("Frame.decode + values Get_Res E8/E0/E7", lambda: [el.Frame.decode(get_res).value(e) for e in (0xE8, 0xE0, 0xE7)], 20000)
    rate("Frame.decode + value E2 (208 B)", lambda: el.Frame.decode(e2).value(0xE2), 5000)
    rate("get_request(3 EPCs).encode()", lambda: el.get_request(1, [0xE7, 0xE8, 0xE0]).encode(), 20000)
    rate("energy_kwh (Decimal)", lambda: el.energy_kwh(13140, 1, 0x01), 50000)

    now = datetime.datetime(2024, 6, 1, 12, 0, 0)
    meter = SmartMeter(seed=1, reverse=True, start=now)
    request = el.get_request(1, [0xE7, 0xE8, 0xE0, 0xE3, 0xEA, 0xEB]).encode()
    meter.handle(request, now)
    step = datetime.timedelta(seconds=10)
    ticks = iter(range(10 ** 9))
    rate("SmartMeter.handle Get 6 EPCs, advancing 10 s", lambda: meter.handle(request, now + next(ticks) * step), 5000)
    fresh = SmartMeter(seed=2, start=now)
    fresh.handle(el.set_request(1, [(0xE5, bytes([99]))]).encode(), now)
    once("SmartMeter Get E2 day 99, cold (4800 half hours)", lambda: fresh.handle(el.get_request(2, [0xE2]).encode(), now))
    once("SmartMeter Get E2 day 99, warm", lambda: fresh.handle(el.get_request(3, [0xE2]).encode(), now))
    notifier = SmartMeter(seed=3, reverse=True, start=now)
    notifier.notifications_due(now)
    once("notifications_due after one day (48 INF)", lambda: notifier.notifications_due(now + datetime.timedelta(days=1)))


if __name__ == "__main__":
    main()
