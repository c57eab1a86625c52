"""``kei --demo``: the whole pipeline with no hardware at all.

* a simulated Wi-SUN module (BP35C2) joined to a simulated smart meter with a
  solar array, read by the real BrouteReader through ``sim://``;
* a simulated serial sensor receiver (2 units x 2 sensors), read by the real
  SerialReader through ``sim://``;
* a simulated EcoCute, storage battery and solar inverter on loopback
  addresses, read by the real EchonetLanReader over UDP port 3610;
* FileRecorder writing into ``./demo-data/``;
* if PHP is installed (``php`` on the PATH) and the php/ folder is beside
  keilib/: a local ``php -S`` serving the graph page, and HttpPostUploader
  uploading the 10-minute averages to its upload.php;
* a ``DemoReporter`` on the same record queue (the fan-out gives it every
  reading too) that prints one line per closed 10-minute window: power now,
  energy, the sensors, and whether the window was uploaded.

Each run starts with fresh data: what an earlier run left in ``demo-data/`` is
moved to ``demo-data-previous-<time>/``, so the charts show one run.

Simulated time runs ``SCALE`` times faster than real time (it starts at the
real time now), so 10-minute averages appear every 10 seconds and the meter's
half-hourly EA/EB notification within the first 30 seconds.  Every worker
shares the one scaled clock.
"""

from __future__ import annotations

import datetime
import logging
import os
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import types

from keilib.average import WindowAverager

from keilib.broute import BrouteReader
from keilib.clock import ScaledClock
from keilib.recorder import FileRecorder
from keilib.serial import SerialReader
from keilib.sim import protocol_sim
from keilib.sim.lan import demo_worker_defs
from keilib.sim.meter import SmartMeter
from keilib.sim.wisun import DEFAULT_PASSWORD, DEFAULT_ROUTE_B_ID, WisunModule
from keilib.skstack import BP35C2
from keilib.uploader import HttpPostUploader
from keilib.worker import Worker

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Dict, Optional, Tuple

logger = logging.getLogger("kei.demo")

SCALE = 60.0
DATA_DIR = "demo-data"
PHP_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "php")

BANNER = """\
==========================================================================
 kei DEMO: this is a SIMULATION. No smart meter and no sensor are read.
 Simulated time runs %(scale)gx faster than real time: a 10-minute average
 every %(window)g seconds, one line each below.
 The simulated house has solar panels: power (E7) and currents are
 negative while it exports to the grid, positive while it imports from it.
 Files: %(data)s
 Graph page: %(page)s
 Stop with Ctrl-C.
==========================================================================
"""


def free_port(preferred: int = 8080) -> int:
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise OSError("no free TCP port")


class PhpServer(Worker):
    """Runs ``php -S 127.0.0.1:<port>`` on php/ for the demo's graph page and uploads."""

    def __init__(self, port: int, php_dir: str, data_dir: str, upload_key: str):
        super().__init__()
        self.port = port
        self.php_dir = php_dir
        self.data_dir = data_dir
        self.upload_key = upload_key
        self.process: Optional[subprocess.Popen] = None

    def setup(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        env = dict(os.environ, KEI_DATA_DIR=self.data_dir, KEI_UPLOAD_KEY=self.upload_key,
                   KEI_MIN_INTERVAL="0")
        # Its own session: Ctrl-C in the terminal goes to kei, which stops
        # php itself, instead of killing php first (a noisy "php -S exited").
        self.process = subprocess.Popen(["php", "-S", "127.0.0.1:%d" % self.port, "-t", self.php_dir],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        logger.info("demo: graph page at http://127.0.0.1:%d/index.php (uploads land in %s)",
                    self.port, self.data_dir)

    def step(self) -> None:
        if self.wait(1.0):
            return
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError("php -S exited with status %s" % self.process.returncode)

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


# A few values of the simulated LAN devices worth a line (their every property is in the files).
LAN_HIGHLIGHTS = ((("solar", "E0"), "solar %g W"), (("battery", "E4"), "battery %g %%"),
                  (("ecocute", "E1"), "hot water %g L"))


class DemoReporter(Worker):
    """Prints one line per closed 10-minute window: what was recorded, and
    whether the uploader has delivered it (read from its health)."""

    CONSUMES = ("record_que",)
    BUFFER_POLICY = "drop_oldest"    # a console line may skip a reading; the files never do

    def __init__(self, record_que: "queue.Queue", uploads: bool, clock: Any = None,
                 stream: Any = None) -> None:
        super().__init__(clock=clock)
        self.record_que = record_que
        self.uploads = uploads
        self.stream = stream or sys.stdout
        self.averager = WindowAverager(600)
        self.last: Dict[Tuple[str, str], float] = {}
        self.windows = 0

    def step(self) -> None:
        item = self.get(self.record_que, timeout=self.clock.to_real(30))
        if item is not None and hasattr(item, "sensor"):
            self.averager.add(item)
            self.last[(item.unit, item.sensor)] = item.value
        for block in self.averager.pop_closed(self.clock.now() - datetime.timedelta(seconds=30)):
            self.windows += 1
            self.stream.write(self.describe(block) + "\n")
            self.stream.flush()

    def cleanup(self) -> None:
        # The windows the recorder has written by now get their line too.
        for block in self.averager.pop_closed(self.clock.now() - datetime.timedelta(seconds=30)):
            self.stream.write(self.describe(block) + "\n")
        self.stream.flush()

    def describe(self, block: list) -> str:
        means = {(a.unit, a.sensor): a.value for a in block}
        parts = ["%s" % block[0].timestamp.strftime("%H:%M")]
        power = means.get(("BR", "E7"))
        if power is not None:
            parts.append("power %+.0f W (%s)" % (power, "exporting to the grid" if power < 0
                                                   else "importing from the grid"))
        imported, exported = self.last.get(("BR", "E0")), self.last.get(("BR", "E3"))
        if imported is not None:
            parts.append("energy imported %.1f kWh, exported %.1f kWh" % (imported, exported or 0))
        sensors = ["%s %s %g" % (unit, sensor, round(value, 2)) for (unit, sensor), value in sorted(means.items())
                   if unit.startswith("unit")]
        if sensors:
            parts.append("sensors: " + ", ".join(sensors))
        lan = [text % round(means[key], 1) for key, text in LAN_HIGHLIGHTS if key in means]
        if lan:
            parts.append("LAN: " + ", ".join(lan))
        parts.append(self.upload_state())
        return "  ".join(parts)

    def upload_state(self) -> str:
        if not self.uploads:
            return "(not uploaded: no php)"
        for health in self.registry or ():
            if health.kind == "HttpPostUploader":
                counters = health.snapshot()
                delivered = counters["counters"].get("delivered", 0)
                waiting = counters["gauges"].get("spool_depth", 0)
                return "uploaded: %d window(s) so far%s" % (
                    delivered, ", %d waiting" % waiting if waiting else "")
        return ""


def fresh_data_dir(workdir: str) -> str:
    """``demo-data/``, empty: an earlier run's files move aside (never deleted)."""
    data_dir = os.path.join(workdir, DATA_DIR)
    if os.path.isdir(data_dir) and os.listdir(data_dir):
        keep = "%s-previous-%s" % (data_dir, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
        os.replace(data_dir, keep)
        print("kei demo: the previous run's files are in %s" % keep, flush=True)
    os.makedirs(data_dir, exist_ok=True)
    return data_dir


def config(workdir: str, check: bool = False) -> types.SimpleNamespace:
    """The demo's configuration: a module with ``worker_def``, as keiconf.py would be.

    With ``check`` (``--demo --check``) nothing is moved, created or printed."""
    data_dir = os.path.join(workdir, DATA_DIR) if check else fresh_data_dir(workdir)
    clock = ScaledClock(SCALE)

    module = WisunModule(kind="bp35c2", latency="realistic", clock=clock, seed=1,
                         meter=SmartMeter(seed=1, reverse=True))
    protocol_sim.forget("demo-wisun")
    protocol_sim.register("demo-wisun", module)

    record_que: "queue.Queue" = queue.Queue(200)
    upload_que: "queue.Queue" = queue.Queue(50)
    php_found = shutil.which("php") is not None
    php_dir_found = os.path.isfile(os.path.join(PHP_DIR, "upload.php"))
    use_php = php_found and php_dir_found

    worker_def = [
        {"class": FileRecorder,
         "args": {"record_que": record_que, "fname_base": "demo", "directory": data_dir, "clock": clock,
                  "upload_que": upload_que if use_php else None}},
        {"class": BrouteReader,
         "args": {"wisundev": BP35C2("sim://wisun?name=demo-wisun"),
                  "broute_id": DEFAULT_ROUTE_B_ID, "broute_pwd": DEFAULT_PASSWORD,
                  "requests": [{"epc": ["E7", "E8"], "cycle": 30}, {"epc": ["E0", "E3"], "cycle": 300}],
                  "record_que": record_que, "scan_cache": os.path.join(data_dir, "scancache.json"),
                  "clock": clock}},
        {"class": SerialReader,
         "args": {"port": "sim://sensor?units=2&sensors=2&rate=1&seed=1", "baudrate": 115200,
                  "record_que": record_que, "clock": clock}},
        {"class": DemoReporter, "args": {"record_que": record_que, "uploads": use_php, "clock": clock}},
    ]
    # An EcoCute, a battery and solar panels on the (loopback) LAN, read over ECHONET Lite.
    worker_def += demo_worker_defs(record_que, clock)
    page = "none (%s)" % ("install php-cli to see it: sudo apt install php-cli" if not php_found else
                          "the php/ folder is not beside keilib/: run the demo from a clone of kei")
    if use_php:
        port = free_port()
        page = "http://127.0.0.1:%d/index.php" % port
        key = secrets.token_hex(16)
        worker_def[:0] = [
            {"class": PhpServer,
             "args": {"port": port, "php_dir": PHP_DIR, "data_dir": os.path.join(data_dir, "uploaded"),
                      "upload_key": key}},
            {"class": HttpPostUploader,
             "args": {"upload_que": upload_que, "target_url": "http://127.0.0.1:%d/upload.php" % port,
                      "upload_key": key, "spool_dir": os.path.join(data_dir, "spool"), "clock": clock}},
        ]
    if not check:
        # Printed, not logged: logging is set up only after the config is read.
        print(BANNER % {"scale": SCALE, "window": 600 / SCALE, "data": data_dir, "page": page}, flush=True)
    return types.SimpleNamespace(worker_def=worker_def)
