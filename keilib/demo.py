"""``kei --demo``: the whole pipeline with no hardware at all.

* a simulated Wi-SUN module (BP35C2) joined to a simulated smart meter with a
  solar array, read by the real BrouteReader through ``sim://``;
* a simulated serial sensor receiver (2 units x 2 sensors), read by the real
  SerialReader through ``sim://``;
* FileRecorder writing into ``./demo-data/``;
* if PHP is installed (``php`` on the PATH) and the php/ folder is beside
  keilib/: a local ``php -S`` serving the graph page, and HttpPostUploader
  uploading the 10-minute averages to its upload.php.

Simulated time runs ``SCALE`` times faster than real time (it starts at the
real time now), so 10-minute averages appear every 10 seconds and the meter's
half-hourly EA/EB notification within the first 30 seconds.  Every worker
shares the one scaled clock.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import shutil
import socket
import subprocess
import types
from typing import Optional

from keilib.broute import BrouteReader
from keilib.clock import ScaledClock
from keilib.recorder import FileRecorder
from keilib.serial import SerialReader
from keilib.sim import protocol_sim
from keilib.sim.meter import SmartMeter
from keilib.sim.wisun import DEFAULT_PASSWORD, DEFAULT_ROUTE_B_ID, WisunModule
from keilib.skstack import BP35C2
from keilib.uploader import HttpPostUploader
from keilib.worker import Worker

logger = logging.getLogger("kei.demo")

SCALE = 60.0
DATA_DIR = "demo-data"
PHP_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "php")

BANNER = """\
==========================================================================
 kei DEMO: this is a SIMULATION. No smart meter and no sensor are read.
 Simulated time runs %gx faster than real time.
 Files: %s
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
        self.process = subprocess.Popen(["php", "-S", "127.0.0.1:%d" % self.port, "-t", self.php_dir],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def config(workdir: str) -> types.SimpleNamespace:
    """The demo's configuration: a module with ``worker_def``, as keiconf.py would be."""
    data_dir = os.path.join(workdir, DATA_DIR)
    os.makedirs(data_dir, exist_ok=True)
    print(BANNER % (SCALE, data_dir), flush=True)
    clock = ScaledClock(SCALE)

    module = WisunModule(kind="bp35c2", latency="realistic", clock=clock, seed=1,
                         meter=SmartMeter(seed=1, reverse=True))
    protocol_sim.forget("demo-wisun")
    protocol_sim.register("demo-wisun", module)

    record_que: "queue.Queue" = queue.Queue(200)
    upload_que: "queue.Queue" = queue.Queue(50)
    use_php = shutil.which("php") is not None and os.path.isfile(os.path.join(PHP_DIR, "upload.php"))

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
    ]
    if use_php:
        port = free_port()
        key = secrets.token_hex(16)
        worker_def[:0] = [
            {"class": PhpServer,
             "args": {"port": port, "php_dir": PHP_DIR, "data_dir": os.path.join(data_dir, "uploaded"),
                      "upload_key": key}},
            {"class": HttpPostUploader,
             "args": {"upload_que": upload_que, "target_url": "http://127.0.0.1:%d/upload.php" % port,
                      "upload_key": key, "spool_dir": os.path.join(data_dir, "spool"), "clock": clock}},
        ]
    else:
        logger.info("demo: php not found; no graph page and no uploads (install php-cli to see them)")
    return types.SimpleNamespace(worker_def=worker_def)
