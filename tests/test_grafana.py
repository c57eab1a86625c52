"""The Grafana dashboards: JSON structure, and every panel's query run against
the real server the test starts, returning the data kei wrote (no Grafana
server exists here; its variables are expanded as Grafana would)."""

from __future__ import annotations

import datetime
import importlib.util
import json
import queue
import re

import pytest
import requests

from keilib.average import Aggregate
from keilib.health import Health, Registry
from keilib.influx import InfluxWriter
from keilib.output import Outcome
from keilib.record import Record
from servers import influxdb, prometheus_for, victoria  # noqa: F401
from support import REPO, wait_for

GRAFANA = REPO / "grafana"
DASHBOARDS = ["kei-prometheus.json", "kei-victoriametrics.json", "kei-influxdb.json"]
BUILTINS = {"__interval", "__interval_ms", "__range", "__rate_interval", "timeFilter"}
VAR_RE = re.compile(r"\$\{?(\w+)")
SITE = "home"


def load(name):
    return json.loads((GRAFANA / name).read_text())


def queries(target):
    return [target[k] for k in ("expr", "query") if k in target]


# -- structure ---------------------------------------------------------------

def test_the_json_files_are_what_make_dashboards_writes():
    spec = importlib.util.spec_from_file_location("make_dashboards", GRAFANA / "make_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(module.DASHBOARDS) == sorted(DASHBOARDS)
    for name in DASHBOARDS:
        assert (GRAFANA / name).read_text() == module.render(name), "run grafana/make_dashboards.py"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_structure(name):
    board = load(name)
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, "panel %r overlaps another" % p["title"]
        cells |= mine
        assert p["targets"] and all(queries(t) for t in p["targets"]), p["title"]
    # The data-source input presets the 'ds' variable; every panel and variable uses it.
    inputs = {i["name"] for i in board["__inputs"]}
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["ds"]["type"] == "datasource"
    assert VAR_RE.findall(variables["ds"]["current"]["value"])[0] in inputs
    ds_type = variables["ds"]["query"]
    for p in panels:
        assert p["datasource"] == {"uid": "${ds}", "type": ds_type}
    # No dangling variables: every one used is defined, every one defined is used.
    texts = [q for p in panels for t in p["targets"] for q in queries(t)]
    texts += [v["query"] for v in variables.values() if v["type"] == "query"]
    used = {m for text in texts for m in VAR_RE.findall(text)}
    assert used - BUILTINS <= set(variables), "undefined: %s" % (used - BUILTINS - set(variables))
    assert set(variables) <= used | {m for p in panels for m in VAR_RE.findall(p["datasource"]["uid"])}
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == "${ds}"


def test_provisioning_files_name_the_dashboard_folder_and_sources():
    provider = (GRAFANA / "provisioning" / "dashboards" / "kei.yaml").read_text()
    assert "type: file" in provider and "/var/lib/grafana/dashboards/kei" in provider
    sources = (GRAFANA / "provisioning" / "datasources" / "kei.yaml").read_text()
    assert "type: prometheus" in sources and "type: influxdb" in sources


# -- the data kei writes -----------------------------------------------------

def history(now):
    """Three hours of one home: power, currents, rising import energy, a sensor,
    and 10-minute aggregates of the power, the last one a minute ago; before
    that, the import energy hourly for three days (the per-day panels)."""
    start = (now - datetime.timedelta(hours=3)).replace(second=0, microsecond=0)
    records = [Record(start - datetime.timedelta(hours=hours), "BR", "E0", 1000 - hours * 0.5)
               for hours in range(72, 0, -1)]
    for minute in range(180):
        t = start + datetime.timedelta(minutes=minute)
        records += [Record(t, "BR", "E7", 300 + minute), Record(t, "BR", "E8R", 3.5),
                    Record(t, "BR", "E8T", 1.5), Record(t, "BR", "E0", 1000 + minute * 0.1),
                    Record(t, "1", "temp", 20 + minute % 5)]
        if minute % 10 == 0:
            records.append(Aggregate(t, "BR", "E7", 305.0 + minute, count=60,
                                     minimum=300.0 + minute, maximum=310.0 + minute, window=600))
    return records


def write_through_influxwriter(url, records, tmp_path):
    """The real encode + deliver path of InfluxWriter, batch by batch."""
    writer = InfluxWriter(queue.Queue(), url, database="kei", site=SITE, spool_dir=tmp_path / "spool")
    batch = {}
    for record in records:
        key, line = writer.encode(record)
        batch.setdefault(key, []).append(line)
    for key, lines in batch.items():
        assert writer.deliver(key, "".join(lines), "b").kind == Outcome.OK


def expand(text, **values):
    for name, value in values.items():
        text = text.replace("${%s}" % name, value).replace("$" + name, value)
    return text


def test_every_influxdb_panel_returns_what_kei_wrote(influxdb, tmp_path):  # noqa: F811
    influxdb.create_database("kei")
    now = datetime.datetime.now()
    records = history(now)
    write_through_influxwriter(influxdb.url, records, tmp_path)
    board = load("kei-influxdb.json")
    for p in board["panels"]:
        for target in p["targets"]:
            text = expand(target["query"], timeFilter="time > now() - 4d", __interval="1m", site=SITE)
            series = influxdb.query(text, db="kei")
            values = [v for s in series for row in s["values"] for v in row[1:] if v is not None]
            assert values, "panel %r returned nothing: %s" % (p["title"], text)
            if p["title"] == "Power now":
                assert values == [300 + 179]
            if p["title"].startswith("Import per"):
                assert max(values) > 0
    [variable] = [v for v in board["templating"]["list"] if v["name"] == "site"]
    [series] = influxdb.query(variable["query"], db="kei")
    assert [SITE] == [row[1] for row in series["values"]]


def prom_values(result):
    return [float(v) for r in result["result"] for v in
            ([r["value"][1]] if "value" in r else [x[1] for x in r["values"]])]


def test_every_victoriametrics_panel_returns_what_kei_wrote(victoria, tmp_path):  # noqa: F811
    now = datetime.datetime.now()
    write_through_influxwriter(victoria.url, history(now), tmp_path)
    board = load("kei-victoriametrics.json")
    end = now.timestamp()
    for p in board["panels"]:
        for target in p["targets"]:
            expr = expand(target["expr"], site=SITE)
            if p["type"] == "stat":
                values = prom_values(victoria.query(expr, time=end))
            else:
                values = prom_values(victoria.query(expr, start=end - 3 * 3600, end=end, step=60))
            assert values, "panel %r returned nothing: %s" % (p["title"], expr)
            if p["title"] == "Power now":
                assert values == [300 + 179]
            if p["title"] == "Homes reporting":
                assert values == [1]
    answer = requests.get(victoria.url + "/api/v1/label/site/values",
                          params={"match[]": "kei_value"}, timeout=10).json()
    assert answer["data"] == [SITE]


def test_every_prometheus_panel_returns_what_the_exporter_served(tmp_path, fake_clock):
    pytest.importorskip("prometheus_client", reason="prometheus_client is in requirements-dev.txt")
    from keilib.prometheus import PrometheusExporter
    registry = Registry()
    reader = registry.add(Health("BrouteReader", "BrouteReader"))
    reader.state("link", "POLL")
    reader.count("restarts", 1)
    writer = registry.add(Health("InfluxWriter", "InfluxWriter"))
    writer.count("retries", 2)
    writer.count("dropped", 0)
    writer.gauge("spool_depth", 3)
    que = queue.Queue()
    exporter = PrometheusExporter(que, port=0, clock=fake_clock)
    exporter.registry = registry
    exporter.start()
    server = None
    try:
        wait_for(lambda: exporter.bound_port, timeout=10)
        t = datetime.datetime.now()
        for record in [Record(t, "BR", "E7", 1500), Record(t, "BR", "E8R", 10.0), Record(t, "BR", "E8T", 5.0),
                       Record(t, "BR", "E0", 1000.0), Record(t, "1", "temp", 21.0)]:
            que.put(record)
        server = prometheus_for(tmp_path, ["127.0.0.1:%d" % exporter.bound_port], interval=0.5)
        server.start()
        wait_for(lambda: server.query("kei_power_watts")["result"], timeout=30)
        # A second energy reading and more health events, scraped later: increase() sees them.
        que.put(Record(t, "BR", "E0", 1000.5))
        reader.count("restarts", 1)
        writer.count("retries", 1)
        writer.count("dropped", 1)
        board = load("kei-prometheus.json")
        for p in board["panels"]:
            for target in p["targets"]:
                expr = expand(target["expr"], unit=".*")

                def values(expr=expr):
                    end = datetime.datetime.now().timestamp()
                    v = prom_values(server.query(expr, start=end - 60, end=end, step=1))
                    return v if v and max(v) > 0 else None
                got = wait_for(values, timeout=20, message="panel %r: %s" % (p["title"], expr))
                if p["title"] == "Power now":
                    assert got[-1] == 1500
                if p["title"] == "Energy per half hour":
                    assert max(got) >= 0.5 - 1e-9      # 0.5 kWh, or more: Prometheus extrapolates
        units = requests.get(server.url + "/api/v1/label/unit/values",
                             params={"match[]": "kei_sensor_value"}, timeout=10).json()["data"]
        assert units == ["1"]
    finally:
        if server is not None:
            server.stop()
        assert exporter.stop(5)
