"""Helpers for the MQTT end-to-end test (imported by kei.py subprocesses).

``simulated_meter(...)`` registers a simulated Wi-SUN module and smart meter
as ``sim://wisun?name=...`` in the kei process, on a scaled clock the config
shares with the BrouteReader; ``ServedLog`` writes what that meter served
(EPC and decoded value, one JSON line each) to a file, so the test can compare
the values published over MQTT with what the meter really answered.
"""

from __future__ import annotations

import json
from typing import Any

from keilib.clock import ScaledClock
from keilib.sim import protocol_sim
from keilib.sim.meter import SmartMeter
from keilib.sim.wisun import WisunModule
from keilib.worker import Worker


def simulated_meter(name: str, scale: float, **faults: Any):
    clock = ScaledClock(scale)
    module = WisunModule(kind="bp35c2", latency="zero", clock=clock, seed=3,
                         meter=SmartMeter(seed=3, reverse=True), **faults)
    protocol_sim.register(name, module)
    return module, clock


class ServedLog(Worker):
    def __init__(self, module, path):
        super().__init__()
        self.meter = module.meter
        self.path = path
        self.count = 0

    def step(self):
        served = list(self.meter.served)[self.count:]   # the deque holds 1000: ample at this rate
        if served:
            self.count += len(served)
            with open(self.path, "a") as handle:
                for entry in served:
                    value = entry.value
                    if hasattr(value, "_asdict"):
                        value = {k: (v if isinstance(v, (int, float, str)) else str(v))
                                 for k, v in value._asdict().items()}
                    elif not isinstance(value, (int, float, str)):
                        value = str(value)
                    handle.write(json.dumps({"epc": "%02X" % entry.epc, "value": value}) + "\n")
        self.wait(0.1)
