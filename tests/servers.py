"""Real time-series servers for tests: VictoriaMetrics, InfluxDB 1.x, Prometheus.

Each runs from Debian's package (``.ci/run`` installs ``victoria-metrics``,
``influxdb`` and ``prometheus``; their systemd services do not run here) on
127.0.0.1 with a free port and its own data directory, so that pytest-xdist
workers never collide.  Use them as context managers; ``stop()`` runs in
``finally`` and a server can be stopped and started again on the same port
and data (the "server away for a while" tests)::

    from servers import VictoriaMetrics
    with VictoriaMetrics(tmp_path / "vm") as vm:
        requests.post(vm.url + "/write?db=kei", data=b"kei value=1 1700000000")
        vm.flush()
        vm.export('{__name__="kei_value"}')

Pytest fixtures ``victoria``, ``influxdb`` and ``prometheus_server`` are
defined below; import them into a test module (``from servers import
victoria``) to use them.  A test skips with the reason when a binary is
missing (never counted as a pass: the CI installs them).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import requests

from support import wait_for

START_TIMEOUT = 30.0      # a loaded 2-core machine takes a few seconds for each


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def need_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip("%s is not installed (.ci/run installs it from Debian)" % name)
    return path


class Server:
    """One server process: ``start()`` waits until it answers, ``stop()`` ends it."""

    NAME = "server"

    def __init__(self, data_dir: Path, port: Optional[int] = None) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.process: Optional[subprocess.Popen] = None
        self.log_path = self.data_dir / ("%s.log" % self.NAME)

    def command(self) -> List[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> "Server":
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.data_dir, start_new_session=True)
        finally:
            log.close()
        try:
            wait_for(self._ready_or_dead, timeout=START_TIMEOUT, interval=0.05,
                     message="%s on port %d (log %s)" % (self.NAME, self.port, self.log_path))
        except BaseException:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise RuntimeError("%s exited with %s: %s" % (self.NAME, self.process.returncode, self.log()))
        return self

    def _ready_or_dead(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return True
        try:
            return self.ready()
        except requests.RequestException:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class VictoriaMetrics(Server):
    """Single-node VictoriaMetrics: Influx line protocol on /write and
    /api/v2/write, PromQL on /api/v1/query(_range), raw samples on /api/v1/export.

    ``dedup=True`` keeps one sample per series and millisecond, as the README
    tells a central server to run (a re-sent batch then adds nothing)."""

    NAME = "victoria-metrics"

    def __init__(self, data_dir: Path, port: Optional[int] = None, dedup: bool = True,
                 scrape_config: Optional[Path] = None) -> None:
        super().__init__(data_dir, port)
        self.dedup = dedup
        self.scrape_config = scrape_config

    def command(self) -> List[str]:
        command = [need_binary("victoria-metrics"),
                   "-httpListenAddr=127.0.0.1:%d" % self.port,
                   "-storageDataPath=%s" % (self.data_dir / "data"),
                   "-retentionPeriod=100y",            # tests write old timestamps too
                   "-search.latencyOffset=0s",         # a query sees a sample at once
                   "-search.disableCache",
                   "-loggerLevel=WARN"]
        if self.dedup:
            command.append("-dedup.minScrapeInterval=1ms")
        if self.scrape_config is not None:
            command += ["-promscrape.config=%s" % self.scrape_config]
        return command

    def ready(self) -> bool:
        return requests.get(self.url + "/health", timeout=2).status_code == 200

    def flush(self) -> None:
        """Make everything written so far searchable (VictoriaMetrics buffers ~1 s)."""
        requests.get(self.url + "/internal/force_flush", timeout=10).raise_for_status()

    def export(self, match: str) -> List[Dict]:
        """Every raw sample of the series matching ``match``: one dict per
        series with ``metric``, ``values`` and ``timestamps`` (ms)."""
        self.flush()
        answer = requests.get(self.url + "/api/v1/export", params={"match[]": match}, timeout=10)
        answer.raise_for_status()
        return [json.loads(line) for line in answer.text.splitlines() if line.strip()]

    def query(self, promql: str, **params) -> Dict:
        """/api/v1/query (or query_range when ``start`` is given); the ``data`` part."""
        self.flush()
        path = "/api/v1/query_range" if "start" in params else "/api/v1/query"
        answer = requests.get(self.url + path, params=dict(params, query=promql), timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]


class InfluxDB(Server):
    """InfluxDB 1.x (Debian 12 ships 1.6: ``/write`` and ``/query``, no /api/v2).

    With ``auth=True`` the HTTP API needs a user; ``ADMIN``/``ADMIN_PASSWORD``
    is created at start."""

    NAME = "influxd"
    ADMIN = "kei"
    ADMIN_PASSWORD = "s3cret-admin-pw"

    def __init__(self, data_dir: Path, port: Optional[int] = None, auth: bool = False) -> None:
        super().__init__(data_dir, port)
        self.auth = auth
        self.rpc_port = free_port()

    def command(self) -> List[str]:
        need_binary("influxd")
        config = self.data_dir / "influxdb.conf"
        config.write_text(
            'reporting-disabled = true\n'
            'bind-address = "127.0.0.1:%d"\n'
            '[meta]\n  dir = "%s"\n'
            '[data]\n  dir = "%s"\n  wal-dir = "%s"\n  query-log-enabled = false\n'
            '  wal-fsync-delay = "0s"\n'
            '[monitor]\n  store-enabled = false\n'
            '[http]\n  bind-address = "127.0.0.1:%d"\n  log-enabled = false\n'
            '  auth-enabled = %s\n'
            '[continuous_queries]\n  enabled = false\n'
            % (self.rpc_port, self.data_dir / "meta", self.data_dir / "data", self.data_dir / "wal",
               self.port, "true" if self.auth else "false"))
        return ["influxd", "-config", str(config)]

    def ready(self) -> bool:
        return requests.get(self.url + "/ping", timeout=2).status_code == 204

    def start(self) -> "InfluxDB":
        super().start()
        if self.auth:
            # The first user may be created without credentials (and must be an admin).
            self.query("CREATE USER %s WITH PASSWORD '%s' WITH ALL PRIVILEGES"
                       % (self.ADMIN, self.ADMIN_PASSWORD), auth=False, ok_if_exists=True)
        return self

    def query(self, influxql: str, db: Optional[str] = None, auth: bool = True,
              ok_if_exists: bool = False) -> List[Dict]:
        """Run InfluxQL (POST /query); the ``series`` of the first statement."""
        params = {"q": influxql, "epoch": "ms"}
        if db:
            params["db"] = db
        if self.auth and auth:
            params.update(u=self.ADMIN, p=self.ADMIN_PASSWORD)
        answer = requests.post(self.url + "/query", params=params, timeout=10)
        body = answer.json()
        result = body.get("results", [{}])[0]
        error = body.get("error") or result.get("error")
        if error and not (ok_if_exists and "exists" in error):
            raise AssertionError("InfluxQL %r failed: %s" % (influxql, error))
        return result.get("series", [])

    def create_database(self, name: str) -> None:
        self.query('CREATE DATABASE "%s"' % name)


class Prometheus(Server):
    """Prometheus scraping ``targets`` (host:port) every ``interval`` seconds."""

    NAME = "prometheus"

    def __init__(self, data_dir: Path, targets: List[str], interval: float = 1.0,
                 port: Optional[int] = None) -> None:
        super().__init__(data_dir, port)
        self.targets = targets
        self.interval = interval

    def command(self) -> List[str]:
        binary = need_binary("prometheus")
        config = self.data_dir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: %dms\n  scrape_timeout: %dms\n"
            "scrape_configs:\n  - job_name: kei\n    static_configs:\n      - targets: %s\n"
            % (self.interval * 1000, self.interval * 1000, json.dumps(self.targets)))
        return [binary, "--config.file=%s" % config,
                "--storage.tsdb.path=%s" % (self.data_dir / "tsdb"),
                "--web.listen-address=127.0.0.1:%d" % self.port,
                "--log.level=warn"]

    def ready(self) -> bool:
        return requests.get(self.url + "/-/ready", timeout=2).status_code == 200

    def query(self, promql: str, **params) -> Dict:
        path = "/api/v1/query_range" if "start" in params else "/api/v1/query"
        answer = requests.get(self.url + path, params=dict(params, query=promql), timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]


# -- pytest fixtures ----------------------------------------------------------

@pytest.fixture
def victoria(tmp_path):
    server = VictoriaMetrics(tmp_path / "victoria")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def influxdb(tmp_path):
    server = InfluxDB(tmp_path / "influxdb")
    try:
        yield server.start()
    finally:
        server.stop()


def prometheus_for(tmp_path: Path, targets: List[str], interval: float = 1.0) -> Prometheus:
    """Not a fixture: the targets are known only inside the test."""
    return Prometheus(tmp_path / "prometheus", targets, interval)


__all__ = ["VictoriaMetrics", "InfluxDB", "Prometheus", "free_port", "victoria", "influxdb",
           "prometheus_for"]
