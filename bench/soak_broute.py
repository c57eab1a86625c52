"""Soak: a BrouteReader against the simulator with realistic delays and random faults.

    python3 bench/soak_broute.py [--minutes 3] [--scale 60] [--kind bp35c2] [--seed 1]

Simulated time runs ``scale`` times faster (so 3 real minutes at x60 are three
simulated hours).  Every simulated 10 to 20 minutes one fault of the
simulator's list is injected; the script prints, per fault, how long the
reader took (in simulated seconds) until the next E7 was recorded, and at the
end the share of E7 polls answered, and checks that every recorded value is
one the meter sent and that the reader thread never died.
"""

from __future__ import annotations

import argparse
import collections
import os
import queue
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keilib.broute import BrouteReader  # noqa: E402
from keilib.clock import ScaledClock  # noqa: E402
from keilib.record import Record  # noqa: E402
from keilib.sim import protocol_sim, register_url_handler  # noqa: E402
from keilib.sim.meter import SmartMeter  # noqa: E402
from keilib.sim.wisun import WisunModule  # noqa: E402
from keilib.skstack import BP35A1, BP35C2, WiSunRL7023  # noqa: E402

FAULTS = {
    "out_of_range 60s": lambda m, later: (m.set_out_of_range(True), later(60, lambda: m.set_out_of_range(False))),
    "silent 120s": lambda m, later: (m.set_silent(True), later(120, lambda: m.set_silent(False))),
    "session_expiry": lambda m, later: m.expire_session(),
    "session_expiry_fail": lambda m, later: m.expire_session(reauth="fail"),
    "peer_terminate": lambda m, later: m.terminate_session(),
    "tx_limit 300s": lambda m, later: m.restrict_tx(seconds=300.0),
    "garbage": lambda m, later: [m.inject_garbage() for _ in range(3)],
    "truncated": lambda m, later: m.corrupt_next_reply("truncated", count=2),
    "malformed": lambda m, later: m.corrupt_next_reply("malformed", count=2),
    "delay 15s": lambda m, later: m.delay_next_reply(seconds=15.0, count=2),
    "duplicate": lambda m, later: m.duplicate_next_reply(count=2),
    "module_reset": lambda m, later: m.reset(),
    "unplug 30s": lambda m, later: (protocol_sim.unplug("soak"), later(30, lambda: protocol_sim.replug("soak"))),
    "joins_refused": lambda m, later: (m.fail_joins(2), m.terminate_session()),
}
DRIVERS = {"ips": lambda p: WiSunRL7023(p, 115200, type=WiSunRL7023.IPS),
           "dss": lambda p: WiSunRL7023(p, 115200, type=WiSunRL7023.DSS),
           "bp35a1": lambda p: BP35A1(p, 115200), "bp35c2": lambda p: BP35C2(p, 115200)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--scale", type=float, default=60.0)
    parser.add_argument("--kind", default="bp35c2", choices=sorted(DRIVERS))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    register_url_handler()
    clock = ScaledClock(args.scale)
    module = WisunModule(kind=args.kind, latency="realistic", clock=clock, seed=args.seed,
                         meter=SmartMeter(seed=args.seed, served_maxlen=100000))
    protocol_sim.register("soak", module)
    records: "queue.Queue[Record]" = queue.Queue()
    reader = BrouteReader(DRIVERS[args.kind]("sim://wisun?name=soak"), "00112233445566778899AABBCCDDEEFF",
                          "0123456789AB", requests=[{"epc": ["E7", "E8"], "cycle": 30},
                                                    {"epc": ["E0", "E3"], "cycle": 300}],
                          record_que=records, scan_cache=os.path.join(tempfile.mkdtemp(), "scancache.json"), clock=clock)
    pending = []          # (due monotonic, action)

    def later(seconds, action):
        pending.append((clock.monotonic() + seconds, action))

    reader.start()
    end = time.monotonic() + args.minutes * 60
    next_fault = clock.monotonic() + 600
    current = None        # (name, injected at)
    recoveries = collections.defaultdict(list)
    e7 = []
    while time.monotonic() < end:
        try:
            record = records.get(timeout=0.1)
        except queue.Empty:
            record = None
        now = clock.monotonic()
        if record is not None and record.sensor == "E7":
            e7.append(record.value)
            if current is not None:
                recoveries[current[0]].append(now - current[1])
                current = None
        for item in [p for p in pending if p[0] <= now]:
            pending.remove(item)
            item[1]()
        if now >= next_fault and current is None and not pending:
            name = rng.choice(sorted(FAULTS))
            FAULTS[name](module, later)
            current = (name, now)
            next_fault = now + rng.uniform(600, 1200)
    alive = reader.is_alive() and reader.failure is None
    reader.stop(5)
    module.close()
    served = collections.Counter(s.value for s in module.meter.served if s.epc == 0xE7)
    wrong = [v for v in e7 if served[v] == 0]
    simulated = args.minutes * 60 * args.scale
    print("soak %s: %.0f simulated hours, %d E7 recorded of %d polls planned (%.1f %%), reader alive: %s, "
          "values not from the meter: %d" % (args.kind, simulated / 3600, len(e7), simulated / 30,
                                              100.0 * len(e7) * 30 / simulated, alive, len(wrong)))
    for name in sorted(recoveries):
        times = recoveries[name]
        print("  %-22s x%d  recovery to next E7: max %5.0f s, mean %5.0f s (simulated)"
              % (name, len(times), max(times), sum(times) / len(times)))
    if current is not None:
        print("  %-22s still not recovered at the end" % current[0])
    if wrong or not alive:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
