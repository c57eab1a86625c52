"""PrometheusExporter: metric names and values, the wrap-aware energy counter,
silent sensors dropped, kei's health, a real Prometheus scraping it, and
--check naming the install commands when prometheus_client is missing."""

from __future__ import annotations

import datetime
import queue
import subprocess

import pytest
import requests

pytest.importorskip("prometheus_client", reason="prometheus_client is in requirements-dev.txt")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from keilib.health import Health, Registry  # noqa: E402
from keilib.prometheus import JOULES_PER_KWH, EnergyTotal, PrometheusExporter  # noqa: E402
from keilib.record import HISTORY_DATA_ID, Record  # noqa: E402
from servers import prometheus_for  # noqa: E402
from support import PYTHON, REPO, subprocess_env, wait_for  # noqa: E402

T0 = datetime.datetime(2026, 5, 20, 14, 0, 0)


class FakeAggregate(Record):
    """An aggregate-like Record subclass that is not keilib.average.Aggregate."""

    __slots__ = ("count", "minimum", "maximum", "window")
    FIELDS = Record.FIELDS + __slots__

    def __init__(self, *args, count=1, minimum=0.0, maximum=0.0, window=600):
        for name, value in (("count", count), ("minimum", minimum), ("maximum", maximum),
                            ("window", window)):
            object.__setattr__(self, name, value)
        super().__init__(*args)


@pytest.fixture
def exporter(fake_clock):
    made = []

    def make(**kwargs):
        que = queue.Queue()
        worker = PrometheusExporter(que, port=0, clock=fake_clock, **kwargs)
        made.append(worker)
        worker.start()
        wait_for(lambda: worker.bound_port, timeout=10)
        return worker, que

    yield make
    for worker in made:
        assert worker.stop(5)


def scrape(worker):
    answer = requests.get("http://127.0.0.1:%d/metrics" % worker.bound_port, timeout=10)
    assert answer.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def put_and_wait(worker, que, records):
    before = worker.health.counters.get("in", 0)
    for record in records:
        que.put(record)
    wait_for(lambda: worker.health.counters.get("in", 0) == before + len(records), timeout=10)


def test_energy_total_steps_wraps_and_falls():
    total = EnergyTotal()
    assert total.add(99990.0) == (99990.0, "start")
    assert total.add(99999.5) == (99999.5, "step")
    value, what = total.add(0.7)                       # 10^5 kWh range wrapped
    assert what == "wrap" and value == pytest.approx(100000.7)
    value, what = total.add(0.2)                       # a fall that is no wrap: nothing added
    assert what == "fall" and value == pytest.approx(100000.7)
    assert total.add(1.2)[0] == pytest.approx(100001.7)
    explicit = EnergyTotal(wrap_kwh=1000000.0)         # D7=8, unit 0.01 kWh
    explicit.add(999999.9)
    assert explicit.add(0.1) == (pytest.approx(1000000.1), "wrap")


def test_metrics_by_prometheus_conventions(exporter):
    worker, que = exporter()
    put_and_wait(worker, que, [
        Record(T0, "BR", "E7", 1852), Record(T0, "BR", "E8R", 12.5), Record(T0, "BR", "E8T", 3.0),
        Record(T0, "BR", "E0", 4321.5), Record(T0, "BR", "E3", 12.25),
        Record(T0, "1", "temp", 21.5),
        Record(T0 - datetime.timedelta(days=1), "BR", "E7", 99, HISTORY_DATA_ID),   # back-fill: skipped
        FakeAggregate(T0, "BR", "E7", 555.0, "avg"),                                # aggregate: skipped
        ["2", "hum", "55.5", "x"],                                                  # keilog list
    ])
    samples = scrape(worker)
    assert samples[("kei_power_watts", (("unit", "BR"),))] == 1852
    assert samples[("kei_current_amperes", (("phase", "R"), ("unit", "BR")))] == 12.5
    assert samples[("kei_current_amperes", (("phase", "T"), ("unit", "BR")))] == 3.0
    assert samples[("kei_energy_joules_total", (("direction", "import"), ("unit", "BR")))] == \
        pytest.approx(4321.5 * JOULES_PER_KWH)
    assert samples[("kei_energy_joules_total", (("direction", "export"), ("unit", "BR")))] == \
        pytest.approx(12.25 * JOULES_PER_KWH)
    assert samples[("kei_sensor_value", (("sensor", "temp"), ("unit", "1")))] == 21.5
    assert samples[("kei_sensor_value", (("sensor", "hum"), ("unit", "2")))] == 55.5
    assert samples[("kei_last_reading_timestamp_seconds", (("sensor", "E7"), ("unit", "BR")))] == T0.timestamp()


def test_energy_counter_survives_the_meter_wrap(exporter):
    worker, que = exporter()
    put_and_wait(worker, que, [Record(T0, "BR", "E0", 99999.5)])
    put_and_wait(worker, que, [Record(T0, "BR", "E0", 0.7)])
    samples = scrape(worker)
    assert samples[("kei_energy_joules_total", (("direction", "import"), ("unit", "BR")))] == \
        pytest.approx(100000.7 * JOULES_PER_KWH)


def test_a_silent_sensor_is_dropped_from_the_output(exporter, fake_clock):
    worker, que = exporter(stale_after=300)
    put_and_wait(worker, que, [Record(T0, "BR", "E7", 500), Record(T0, "1", "temp", 20.0)])
    fake_clock.advance(200)
    put_and_wait(worker, que, [Record(T0, "1", "temp", 20.5)])
    fake_clock.advance(150)                     # E7 silent for 350 s, temp for 150 s
    samples = scrape(worker)
    assert not [k for k in samples if k[0] == "kei_power_watts"]
    assert samples[("kei_sensor_value", (("sensor", "temp"), ("unit", "1")))] == 20.5
    put_and_wait(worker, que, [Record(T0, "BR", "E7", 600)])     # heard again: back
    assert scrape(worker)[("kei_power_watts", (("unit", "BR"),))] == 600


def test_health_of_every_worker_is_exported(exporter):
    worker, que = exporter()
    registry = Registry()
    reader = registry.add(Health("BrouteReader", "BrouteReader"))
    reader.count("out", 7)
    reader.count("restarts", 2)
    reader.state("link", "POLL")
    reader.state("last_error", "free text is not a label")
    writer = registry.add(Health("InfluxWriter", "InfluxWriter"))
    writer.count("dropped", 3)
    writer.gauge("spool_depth", 4)
    writer.stamp("last_success", 1779253200.0)
    worker.registry = registry
    samples = scrape(worker)
    br = (("class", "BrouteReader"), ("worker", "BrouteReader"))
    iw = (("class", "InfluxWriter"), ("worker", "InfluxWriter"))
    assert samples[("kei_worker_out_total", br)] == 7
    assert samples[("kei_worker_restarts_total", br)] == 2
    assert samples[("kei_worker_dropped_total", iw)] == 3
    assert samples[("kei_worker_spool_depth", iw)] == 4
    assert samples[("kei_worker_last_success_timestamp_seconds", iw)] == 1779253200.0
    assert samples[("kei_link_up", (("worker", "BrouteReader"),))] == 1
    assert samples[("kei_worker_state", tuple(sorted(br + (("name", "link"), ("state", "POLL")))))] == 1
    assert not [k for k in samples if "free text" in str(k)]
    reader.state("link", "SCAN")
    assert scrape(worker)[("kei_link_up", (("worker", "BrouteReader"),))] == 0


def test_binds_to_loopback_by_default(fake_clock):
    worker = PrometheusExporter(queue.Queue(), port=0, clock=fake_clock)
    assert worker.address == "127.0.0.1"


def test_real_prometheus_scrapes_the_exporter(exporter, tmp_path):
    worker, que = exporter()
    put_and_wait(worker, que, [Record(T0, "BR", "E7", 1234), Record(T0, "BR", "E0", 100.0)])
    server = prometheus_for(tmp_path, ["127.0.0.1:%d" % worker.bound_port], interval=0.5)
    try:
        server.start()

        def power():
            result = server.query('kei_power_watts{unit="BR"}')["result"]
            return result and float(result[0]["value"][1])
        assert wait_for(power, timeout=30) == 1234
        result = server.query("kei_energy_joules_total")["result"]
        assert float(result[0]["value"][1]) == pytest.approx(100.0 * JOULES_PER_KWH)
    finally:
        server.stop()


def test_check_names_both_install_commands_when_prometheus_client_is_missing(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "prometheus_client.py").write_text("raise ImportError('No module named prometheus_client')\n")
    (tmp_path / "keiconf.py").write_text(
        "import queue\nfrom keilib.prometheus import PrometheusExporter\n"
        "from keilib.serial import SerialReader\n"
        "record_que = queue.Queue()\n"
        "worker_def = [{'class': SerialReader, 'args': {'record_que': record_que, 'port': 'sim://sensor',\n"
        "                                                 'baudrate': 9600}},\n"
        "              {'class': PrometheusExporter, 'args': {'record_que': record_que}}]\n")
    env = subprocess_env()
    env["PYTHONPATH"] = str(blocker) + ":" + env["PYTHONPATH"]
    done = subprocess.run([PYTHON, str(REPO / "kei.py"), "--check"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "pip install 'kei[prometheus]'" in out and "sudo apt install python3-prometheus-client" in out
