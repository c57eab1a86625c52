"""B-route figures: time to the first recorded E7, and frames sent per hour.

    python3 bench/bench_broute.py [--kind ips] [--hour-scale 40]

1. Starts the simulator on a pty with realistic delays (scan, PANA join,
   SKSENDTO round trips as skstack.md section 9.3 measures them), then
   ``kei.py`` with keiconf_broute.py pointed at it, and times process start ->
   first ``BR,E7`` line in the raw file: cold (no scan cache: SKSCAN runs) and
   warm (scancache.json from the cold run: no scan).
2. Runs a BrouteReader with the default request schedule for one simulated
   hour (scaled clock) and counts the request frames the meter received, with
   the reader's own airtime estimate against the 360 s/hour Route-B budget.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from keilib.broute import DEFAULT_REQUESTS, BrouteReader, TxBudget, frames_per_hour, parse_requests  # noqa: E402
from keilib.clock import ScaledClock  # noqa: E402
from keilib.sim import protocol_sim, register_url_handler  # noqa: E402
from keilib.sim.wisun import WisunModule  # noqa: E402
from keilib.skstack import WiSunRL7023  # noqa: E402


def env() -> dict:
    result = dict(os.environ)
    result["PYTHONPATH"] = str(REPO)
    result.pop("DEBUG", None)
    return result


def time_to_first_e7(workdir: Path, slave: str) -> float:
    text = (REPO / "keiconf_broute.py").read_text()
    (workdir / "keiconf.py").write_text(re.sub(r"^PORT = .*$", "PORT = %r" % slave, text, flags=re.M))
    for old in workdir.glob("2*-mylogfile.txt"):
        old.unlink()
    started = time.monotonic()
    kei = subprocess.Popen([sys.executable, str(REPO / "kei.py")], cwd=workdir, env=env())
    try:
        while True:
            if any(",BR,E7," in p.read_text() for p in workdir.glob("2*-mylogfile.txt")):
                return time.monotonic() - started
            if time.monotonic() - started > 180 or kei.poll() is not None:
                raise SystemExit("no E7 within 180 s")
            time.sleep(0.05)
    finally:
        kei.send_signal(signal.SIGTERM)
        kei.wait(timeout=15)


def startup(kind: str) -> None:
    sim = subprocess.Popen([sys.executable, "-m", "keilib.sim", "wisun", "--kind", kind, "--latency", "realistic"],
                           cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True)
    try:
        slave = sim.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            cold = time_to_first_e7(work, slave)
            assert (work / "scancache.json").exists()
            time.sleep(12)     # a meter may refuse a join right after a session ended
            warm = time_to_first_e7(work, slave)
        print("start -> first E7 (%s, realistic delays): cold %.1f s (scan + join), warm %.1f s (cached scan)"
              % (kind, cold, warm))
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def frames_in_an_hour(kind: str, scale: float) -> None:
    register_url_handler()
    clock = ScaledClock(scale)
    module = WisunModule(kind=kind, latency="zero", clock=clock, seed=1)
    protocol_sim.register("bench", module)
    with tempfile.TemporaryDirectory() as tmp:
        reader = BrouteReader(WiSunRL7023("sim://wisun?name=bench", 115200, type=WiSunRL7023.IPS),
                              "00112233445566778899AABBCCDDEEFF", "0123456789AB", requests=DEFAULT_REQUESTS,
                              record_que=queue.Queue(100000), scan_cache=os.path.join(tmp, "scancache.json"),
                              clock=clock)
        sent = [0]
        send = reader.device.sendto

        def counting_sendto(*args, **kwargs):   # instrumentation: every frame the reader transmits
            sent[0] += 1
            return send(*args, **kwargs)
        reader.device.sendto = counting_sendto  # type: ignore[method-assign]
        reader.start()
        time.sleep(3600.0 / scale)
        reader.stop(5)
        module.close()
    groups = parse_requests(DEFAULT_REQUESTS)
    # the meter logs every property it sends: count each group's first EPC once per frame
    firsts = {g.epcs[0] for g in groups}
    answered = sum(1 for s in module.meter.served if s.epc in firsts)
    airtime = sum(3600.0 / g.cycle * TxBudget.airtime_ms(g.frame_len()) for g in groups) / 1000
    print("default schedule %s:" % ", ".join("%s/%gs" % (g.label, g.cycle) for g in groups))
    print("  frames per hour: %.0f planned; in one simulated hour (x%g clock, including the D3/D7/E1"
          " read at join) %d sent, %d answered by the meter" % (frames_per_hour(groups), scale, sent[0], answered))
    print("  estimated airtime %.1f s per hour of the 360 s Route-B budget (%.2f %%)" % (airtime, airtime / 3.6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="ips")
    # Not faster than x40: the driver reads the port in real time (up to 0.2 s,
    # 24 simulated seconds at x120), so a faster clock skips E7 slots; x40 takes 90 s.
    parser.add_argument("--hour-scale", type=float, default=40.0)
    args = parser.parse_args()
    startup(args.kind)
    frames_in_an_hour(args.kind, args.hour_scale)


if __name__ == "__main__":
    main()
