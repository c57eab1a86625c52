"""End to end: kei.py with the simulated meter and sensor (sim:// URLs) ->
InfluxWriter -> real VictoriaMetrics and InfluxDB; PrometheusExporter ->
real Prometheus.  The raw file is the reference: every line in it must be on
the server once, with its timestamp."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from keilib.record import Record
from servers import InfluxDB, VictoriaMetrics, free_port, prometheus_for
from support import PYTHON, REPO, read_text, subprocess_env, wait_for

KEI = str(REPO / "kei.py")
PASSWORD_OK = InfluxDB.ADMIN_PASSWORD
PASSWORD_BAD = "not-the-password-77"

CONFIG = """
import queue
from keilib.broute import BrouteReader, WiSunRL7023
from keilib.serial import SerialReader
from keilib.recorder import FileRecorder
from keilib.influx import InfluxWriter
{extra_import}
record_que = queue.Queue(50)
worker_def = [
    {{'class': FileRecorder, 'args': {{'record_que': record_que, 'fname_base': 'e2e'}}}},
    {{'class': BrouteReader, 'args': {{
        'wisundev': WiSunRL7023('sim://wisun?kind=ips&latency=zero', 115200, type=WiSunRL7023.IPS),
        'broute_id': '00112233445566778899AABBCCDDEEFF', 'broute_pwd': '0123456789AB',
        'requests': [{{'epc': ['E7', 'E8'], 'cycle': 1}}, {{'epc': ['E0', 'E3'], 'cycle': 2}}],
        'record_que': record_que}}}},
    {{'class': SerialReader, 'args': {{'port': 'sim://sensor?units=1&sensors=2&rate=4&seed=5',
                                     'baudrate': 9600, 'record_que': record_que}}}},
{outputs}
]
"""

WRITER = """    {{'class': InfluxWriter, 'args': {{'record_que': record_que, 'url': {url!r}, 'database': 'kei',
        'site': 'e2e', 'spool_dir': {spool!r}, 'batch_seconds': 0.2, 'retry_min': 0.2, 'retry_max': 1.0,
        {auth}}}}},
"""


def write_config(work: Path, outputs: str, extra_import: str = "") -> None:
    (work / "keiconf.py").write_text(CONFIG.format(outputs=outputs, extra_import=extra_import))


def writer(url: str, spool: str, auth: str = "") -> str:
    return WRITER.format(url=url, spool=spool, auth=auth)


def raw_records(work: Path):
    records = []
    for path in sorted(work.glob("2*-e2e.txt")):
        for line in read_text(path).splitlines():
            if line.strip():
                records.append(Record.parse_raw_line(line))
    return records


def keys(records):
    """(unit, sensor, epoch ms, value) of each raw-file record."""
    return sorted((r.unit, r.sensor, int(r.timestamp.timestamp()) * 1000, round(float(r.value), 4))
                  for r in records)


def start_kei(work: Path) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, KEI], cwd=work, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop_kei(kei: subprocess.Popen) -> None:
    if kei.poll() is None:
        kei.send_signal(signal.SIGTERM)
        try:
            kei.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kei.kill()
            kei.wait()
    kei.stderr.close()


def second(ms: int) -> int:
    """The raw file shows whole seconds; the server holds serial readings' milliseconds."""
    return ms // 1000 * 1000


def vm_keys(vm, exact=False):
    out = []
    for series in vm.export('{__name__="kei_value",site="e2e"}'):
        m = series["metric"]
        out += [(m["unit"], m["sensor"], t if exact else second(t), round(float(v), 4)) for t, v in zip(series["timestamps"], series["values"])]
    return sorted(out)


def influx_keys(server):
    out = []
    for series in server.query("SELECT value FROM kei GROUP BY unit, sensor", db="kei"):
        tags = series["tags"]
        out += [(tags["unit"], tags["sensor"], second(t), round(float(v), 4)) for t, v in series["values"]]
    return sorted(out)


def test_kei_to_victoriametrics_and_influxdb_with_an_outage(tmp_path):
    # No dedup: a sample sent twice would show twice.
    vm = VictoriaMetrics(tmp_path / "vm", dedup=False)
    influx = InfluxDB(tmp_path / "influx")
    work = tmp_path / "work"
    work.mkdir()
    kei = None
    try:
        vm.start()
        influx.start()
        influx.create_database("kei")
        write_config(work, writer(vm.url, str(work / "spool-vm")) + writer(influx.url, str(work / "spool-ix")))
        kei = start_kei(work)
        sensors = lambda: {(r.unit, r.sensor) for r in raw_records(work)}  # noqa: E731
        wait_for(lambda: {("BR", "E7"), ("BR", "E0"), ("unit1", "temp")} <= sensors(), timeout=40,
                 message="meter and sensor readings in the raw file")
        wait_for(lambda: len(vm_keys(vm)) > 5, timeout=20)
        vm.stop()                                          # the server goes away for a while
        before = len(raw_records(work))
        wait_for(lambda: len(raw_records(work)) >= before + 15, timeout=20)
        assert list((work / "spool-vm").glob("*.*"))       # kept in the spool meanwhile
        vm.start()                                         # back, same port and data
        reference = keys(raw_records(work))
        wait_for(lambda: set(reference) <= set(vm_keys(vm)), timeout=30,
                 message="every raw reading in VictoriaMetrics")
        wait_for(lambda: set(reference) <= set(influx_keys(influx)), timeout=30,
                 message="every raw reading in InfluxDB")
        stop_kei(kei)
        kei = None
        final = set(keys(raw_records(work)))
        exact = vm_keys(vm, exact=True)
        assert len(exact) == len(set(exact)), "a sample was written twice"
        assert set(vm_keys(vm)) <= final, "a sample that is not in the raw file"
        assert set(influx_keys(influx)) <= final
        log = read_text(work / "kei.log")
        assert "- ERROR -" not in log
    finally:
        if kei is not None:
            stop_kei(kei)
        vm.stop()
        influx.stop()


def test_wrong_password_is_loud_and_nothing_is_lost_once_fixed(tmp_path):
    influx = InfluxDB(tmp_path / "influx", auth=True)
    work = tmp_path / "work"
    work.mkdir()
    kei = None
    spool = str(work / "spool-ix")
    try:
        influx.start()
        influx.create_database("kei")
        write_config(work, writer(influx.url, spool, "'username': %r, 'password': %r"
                                  % (InfluxDB.ADMIN, PASSWORD_BAD)))
        kei = start_kei(work)
        wait_for(lambda: "HTTP 401" in read_text(work / "kei.log") and len(raw_records(work)) > 10,
                 timeout=40, message="a 401 in kei.log")
        stop_kei(kei)
        kei = None
        log = read_text(work / "kei.log")
        assert [line for line in log.splitlines() if "HTTP 401" in line and "- ERROR -" in line]
        assert PASSWORD_BAD not in log
        assert not influx_keys(influx)
        # Fixed: every reading of the first run arrives, with the second run's.
        write_config(work, writer(influx.url, spool, "'username': %r, 'password': %r"
                                  % (InfluxDB.ADMIN, PASSWORD_OK)))
        first_run = keys(raw_records(work))
        kei = start_kei(work)
        wait_for(lambda: set(first_run) <= set(influx_keys(influx)), timeout=30,
                 message="the first run's readings in InfluxDB")
        assert PASSWORD_OK not in read_text(work / "kei.log")
    finally:
        if kei is not None:
            stop_kei(kei)
        influx.stop()


def test_prometheus_scrapes_the_meter_power_from_kei(tmp_path):
    pytest.importorskip("prometheus_client", reason="prometheus_client is in requirements-dev.txt")
    work = tmp_path / "work"
    work.mkdir()
    port = free_port()
    write_config(work, "    {'class': PrometheusExporter, 'args': {'record_que': record_que, 'port': %d}},\n"
                 % port, extra_import="from keilib.prometheus import PrometheusExporter")
    kei = start_kei(work)
    server = prometheus_for(tmp_path, ["127.0.0.1:%d" % port], interval=0.5)
    try:
        server.start()

        def power():
            result = server.query('kei_power_watts{unit="BR"}')["result"]
            return result and float(result[0]["value"][1])
        watts = wait_for(power, timeout=40, message="kei_power_watts in Prometheus")
        meter = {float(r.value) for r in raw_records(work) if r.sensor == "E7"}
        assert watts in meter
        result = server.query('kei_worker_in_total{class="PrometheusExporter"}')["result"]
        assert result and float(result[0]["value"][1]) >= 1
        assert server.query("kei_link_up")["result"][0]["value"][1] == "1"
    finally:
        server.stop()
        stop_kei(kei)
