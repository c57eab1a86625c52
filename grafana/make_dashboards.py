#!/usr/bin/env python3
"""Writes the Grafana dashboards in this folder (edit here, then run it).

    python3 grafana/make_dashboards.py

Three dashboards, one per kind of data source, with the same panels where the
data allows:

* kei-prometheus.json      Prometheus (or VictoriaMetrics) scraping kei's
                           PrometheusExporter: readings and kei's health;
* kei-victoriametrics.json VictoriaMetrics fed by InfluxWriter (metrics
                           kei_value, kei_10min_mean ...; many homes: $site);
* kei-influxdb.json        InfluxDB 1.x/2.x (InfluxQL) fed by InfluxWriter.

Each has a data-source input (``__inputs``, asked for at import) that
presets the ``ds`` variable every panel uses, so the same file also works
when provisioned from disk (then ``ds`` picks the first source of its type).
tests/test_grafana.py runs every panel's query against a real server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
KWH = 3600000   # joules per kWh


def panel(title: str, kind: str, targets: List[Dict], unit: str, x: int, y: int, w: int = 12,
          h: int = 8, **extra) -> Dict:
    if kind == "stat":
        h = 4
    body = {"title": title, "type": kind, "datasource": {"uid": "${ds}"},
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)]}
    if kind == "timeseries" and extra.pop("bars", False):
        body["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "bars", "fillOpacity": 60}
    body.update(extra)
    return body


def dashboard(uid: str, title: str, ds_type: str, ds_name: str, panels: List[Dict],
              variables: List[Dict]) -> Dict:
    for number, item in enumerate(panels, start=1):
        item["id"] = number
        item["datasource"]["type"] = ds_type
    ds_input = "DS_" + ds_name.upper()
    return {
        "__inputs": [{"name": ds_input, "label": ds_name, "description": "where kei's data is",
                      "type": "datasource", "pluginId": ds_type, "pluginName": ds_name}],
        "__requires": [{"type": "datasource", "id": ds_type, "name": ds_name, "version": "1.0.0"}],
        "uid": uid, "title": title, "tags": ["kei"], "timezone": "browser", "schemaVersion": 36,
        "version": 1, "editable": True, "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": [{"name": "ds", "label": "Data source", "type": "datasource",
                                 "query": ds_type, "current": {"text": "${%s}" % ds_input,
                                                               "value": "${%s}" % ds_input},
                                 "hide": 0}] + variables},
        "panels": panels,
    }


def query_variable(name: str, query: str, ds_type: str) -> Dict:
    return {"name": name, "label": name, "type": "query", "datasource": {"type": ds_type, "uid": "${ds}"},
            "query": query, "definition": query, "refresh": 2, "multi": True, "includeAll": True,
            "allValue": ".*", "current": {}, "sort": 1, "hide": 0}


def prometheus() -> Dict:
    def q(expr: str, legend: str = "", **extra) -> Dict:
        return dict({"expr": expr, "legendFormat": legend}, **extra)
    panels = [
        panel("Power now", "stat", [q('kei_power_watts')], "watt", 0, 0, w=6),
        panel("Last reading age", "stat", [q('time() - max(kei_last_reading_timestamp_seconds)')],
              "s", 6, 0, w=6),
        panel("Meter link", "stat", [q('kei_link_up', "{{worker}}")], "bool_on_off", 12, 0, w=6),
        panel("Spool depth", "stat", [q('sum(kei_worker_spool_depth)')], "short", 18, 0, w=6),
        panel("Power", "timeseries", [q('kei_power_watts', "{{unit}}")], "watt", 0, 4, w=24),
        panel("Energy per half hour", "timeseries",
              [q('increase(kei_energy_joules_total[30m]) / %d' % KWH, "{{direction}}", interval="30m")],
              "kwatth", 0, 12, bars=True),
        panel("Energy per day", "timeseries",
              [q('increase(kei_energy_joules_total[1d]) / %d' % KWH, "{{direction}}", interval="1d")],
              "kwatth", 12, 12, bars=True),
        panel("Currents", "timeseries", [q('kei_current_amperes', "{{phase}}")], "amp", 0, 20),
        panel("Sensors", "timeseries", [q('kei_sensor_value{unit=~"$unit"}', "{{unit}} {{sensor}}")],
              "short", 12, 20),
        panel("Restarts and retries per hour", "timeseries",
              [q('increase(kei_worker_restarts_total[1h])', "restarts {{worker}}"),
               q('increase(kei_worker_retries_total[1h])', "retries {{worker}}")], "short", 0, 28),
        panel("Dropped per hour", "timeseries", [q('increase(kei_worker_dropped_total[1h])', "{{worker}}")],
              "short", 12, 28),
    ]
    return dashboard("kei-prometheus", "kei (Prometheus)", "prometheus", "Prometheus", panels,
                     [query_variable("unit", "label_values(kei_sensor_value, unit)", "prometheus")])


def victoriametrics() -> Dict:
    def q(expr: str, legend: str = "", **extra) -> Dict:
        return dict({"expr": expr, "legendFormat": legend}, **extra)
    site = 'site=~"$site"'
    panels = [
        panel("Power now", "stat", [q('kei_value{sensor="E7",unit="BR",%s}' % site, "{{site}}")],
              "watt", 0, 0, w=8),
        panel("Last reading age", "stat",
              [q('time() - max(timestamp(kei_value{%s})) by (site)' % site, "{{site}}")], "s", 8, 0, w=8),
        panel("Homes reporting", "stat", [q('count(count by (site) (kei_value{%s}))' % site)],
              "short", 16, 0, w=8),
        panel("Power", "timeseries", [q('kei_value{sensor="E7",unit="BR",%s}' % site, "{{site}}")],
              "watt", 0, 4, w=24),
        panel("Import per half hour", "timeseries",
              [q('increase(kei_value{sensor="E0",unit="BR",%s}[30m])' % site, "{{site}}", interval="30m")],
              "kwatth", 0, 12, bars=True),
        panel("Import per day", "timeseries",
              [q('increase(kei_value{sensor="E0",unit="BR",%s}[1d])' % site, "{{site}}", interval="1d")],
              "kwatth", 12, 12, bars=True),
        panel("Currents", "timeseries",
              [q('kei_value{sensor=~"E8R|E8T",unit="BR",%s}' % site, "{{site}} {{sensor}}")], "amp", 0, 20),
        panel("Sensors", "timeseries", [q('kei_value{unit!="BR",%s}' % site, "{{site}} {{unit}} {{sensor}}")],
              "short", 12, 20),
        panel("Power, 10-minute mean / min / max", "timeseries",
              [q('kei_10min_mean{sensor="E7",%s}' % site, "mean {{site}}"),
               q('kei_10min_min{sensor="E7",%s}' % site, "min {{site}}"),
               q('kei_10min_max{sensor="E7",%s}' % site, "max {{site}}")], "watt", 0, 28, w=24),
    ]
    return dashboard("kei-victoriametrics", "kei (VictoriaMetrics, many homes)", "prometheus",
                     "VictoriaMetrics", panels,
                     [query_variable("site", "label_values(kei_value, site)", "prometheus")])


def influxdb() -> Dict:
    def q(text: str, alias: str = "") -> Dict:
        return {"query": text, "rawQuery": True, "resultFormat": "time_series", "alias": alias}
    site = '"site" =~ /^$site$/'
    panels = [
        panel("Power now", "stat",
              [q('SELECT last("value") FROM "kei" WHERE "sensor" = \'E7\' AND %s AND $timeFilter '
                 'GROUP BY "site"' % site, "$tag_site")], "watt", 0, 0, w=12),
        panel("Readings in range", "stat",
              [q('SELECT count("value") FROM "kei" WHERE %s AND $timeFilter' % site)], "short", 12, 0, w=12),
        panel("Power", "timeseries",
              [q('SELECT mean("value") FROM "kei" WHERE "sensor" = \'E7\' AND %s AND $timeFilter '
                 'GROUP BY time($__interval), "site" fill(null)' % site, "$tag_site")], "watt", 0, 4, w=24),
        panel("Import per half hour", "timeseries",
              [q('SELECT non_negative_difference(last("value")) FROM "kei" WHERE "sensor" = \'E0\' '
                 'AND %s AND $timeFilter GROUP BY time(30m), "site"' % site, "$tag_site")],
              "kwatth", 0, 12, bars=True),
        panel("Import per day", "timeseries",
              [q('SELECT non_negative_difference(last("value")) FROM "kei" WHERE "sensor" = \'E0\' '
                 'AND %s AND $timeFilter GROUP BY time(1d), "site"' % site, "$tag_site")],
              "kwatth", 12, 12, bars=True),
        panel("Currents", "timeseries",
              [q('SELECT mean("value") FROM "kei" WHERE "sensor" =~ /^E8[RT]$/ AND %s AND $timeFilter '
                 'GROUP BY time($__interval), "site", "sensor" fill(null)' % site, "$tag_site $tag_sensor")],
              "amp", 0, 20),
        panel("Sensors", "timeseries",
              [q('SELECT mean("value") FROM "kei" WHERE "unit" != \'BR\' AND %s AND $timeFilter '
                 'GROUP BY time($__interval), "site", "unit", "sensor" fill(null)' % site,
                 "$tag_unit $tag_sensor")], "short", 12, 20),
        panel("Power, 10-minute mean / min / max", "timeseries",
              [q('SELECT "mean", "min", "max" FROM "kei_10min" WHERE "sensor" = \'E7\' AND %s '
                 'AND $timeFilter' % site)], "watt", 0, 28, w=24),
    ]
    return dashboard("kei-influxdb", "kei (InfluxDB)", "influxdb", "InfluxDB", panels,
                     [query_variable("site", 'SHOW TAG VALUES FROM "kei" WITH KEY = "site"', "influxdb")])


DASHBOARDS = {"kei-prometheus.json": prometheus, "kei-victoriametrics.json": victoriametrics,
              "kei-influxdb.json": influxdb}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    for file_name in DASHBOARDS:
        (HERE / file_name).write_text(render(file_name))
        print("wrote", HERE / file_name)
