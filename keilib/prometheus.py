"""PrometheusExporter: the latest readings and kei's own health on /metrics.

A latest-value output (``BUFFER_POLICY = "drop_oldest"``): behind a fan-out
it gets its own small buffer and a slow scrape never holds up a reader.  It
uses ``prometheus_client`` (the optional extra ``kei[prometheus]``) on its
own ``CollectorRegistry`` and its own port, bound to 127.0.0.1 unless told
otherwise.  Metrics (README "Prometheus"):

=================================================  =====================================
``kei_power_watts{unit}``                          gauge: E7 instantaneous power
``kei_current_amperes{unit,phase}``                gauge: E8 currents, phase R / T
``kei_energy_joules_total{unit,direction}``        counter: E0 (import) / E3 (export)
``kei_sensor_value{unit,sensor}``                  gauge: every other (serial) sensor
``kei_last_reading_timestamp_seconds{unit,sensor}`` the reading's own time (epoch)
``kei_worker_<counter>_total{worker,class}``       each worker's health counters
                                                   (in, out, delivered, dropped, retries,
                                                   rejected, restarts, ...)
``kei_worker_<gauge>{worker,class}``               health gauges (spool_depth, ...)
``kei_worker_<stamp>_timestamp_seconds``           health stamps (last_success, ...)
``kei_worker_state{worker,class,name,state}``      1 for each state word (link: POLL ...)
``kei_link_up{worker}``                            1 when a B-route reader is polling
=================================================  =====================================

The energy counter is kei's running total in joules (kWh x 3.6e6, the
Prometheus base unit): it starts at the meter's reading and adds each
difference, so ``increase()`` is right across the meter's wrap at 10^D7:
a reading lower than the last one near the top of the range is a wrap
(``energy_wrap_kwh``: 10^D7 x E1 unit x D3, logged by the reader at join;
default: the next power of ten above the last reading, right for the usual
coefficient 1); any other fall (a replaced meter) starts a new baseline and
adds nothing.  History readings (back-fill, data id ``hist``) and
aggregates are skipped: they are not the latest value.

A sensor not heard from for ``stale_after`` seconds disappears from the
output instead of serving its last value for ever.

``worker_def`` entry::

    {'class': PrometheusExporter,
     'args': {'record_que': record_que,     # readings (shared with the other outputs)
              'port': 9864,                 # http://127.0.0.1:9864/metrics
              # 'address': '0.0.0.0',       # to be scraped from another host
              # 'stale_after': 900,         # seconds of silence before a sensor is dropped
             }}
"""

from __future__ import annotations

import logging
import math
import re
import threading

from keilib.errors import ConfigError
from keilib.record import HISTORY_DATA_ID, Record
from keilib.worker import Worker

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Dict, Optional, Tuple

logger = logging.getLogger(__name__)

METER_UNIT = "BR"
JOULES_PER_KWH = 3.6e6
DEFAULT_PORT = 9864
_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")
# Free-text states would make a new series per message: not exported.
SKIPPED_STATES = ("last_error",)


def metric_part(name: str) -> str:
    """A health name as part of a metric name (letters, digits, '_')."""
    return _NAME_RE.sub("_", name).strip("_").lower() or "unnamed"


class EnergyTotal:
    """A wrap-aware running total of one cumulative energy reading (kWh)."""

    def __init__(self, wrap_kwh: Optional[float] = None) -> None:
        self.wrap_kwh = wrap_kwh
        self.last: Optional[float] = None
        self.total = 0.0

    def modulus(self) -> float:
        if self.wrap_kwh:
            return self.wrap_kwh
        # The next power of ten above the last reading (coefficient 1).
        return 10.0 ** (math.floor(math.log10(self.last)) + 1) if self.last and self.last > 0 else 1.0

    def add(self, kwh: float) -> Tuple[float, str]:
        """Take a reading; (total kWh, what happened: 'start', 'step', 'wrap', 'fall')."""
        if self.last is None:
            self.last, self.total = kwh, kwh
            return self.total, "start"
        delta = kwh - self.last
        what = "step"
        if delta < 0:
            modulus = self.modulus()
            wrapped = modulus - self.last + kwh
            # A wrap passes the top of the range: the last reading was near it and
            # the new one near zero, i.e. less than half the range went by.
            if 0 <= wrapped < modulus / 2:
                delta, what = wrapped, "wrap"
            else:
                delta, what = 0.0, "fall"
        self.last = kwh
        self.total += delta
        return self.total, what


class PrometheusExporter(Worker):
    """Serves the latest readings and every worker's health (module doc).

    ``worker_def`` entry::

        {'class': PrometheusExporter,
         'args': {'record_que': record_que,
                  'port': 9864}}
    """

    CONSUMES = ("record_que",)
    BUFFER_POLICY = "drop_oldest"
    REQUIRES = [("prometheus_client", "pip install 'kei[prometheus]'",
                 "sudo apt install python3-prometheus-client")]

    def __init__(self, record_que: Any, port: int = DEFAULT_PORT, address: str = "127.0.0.1",
                 stale_after: float = 900.0, energy_wrap_kwh: Optional[float] = None,
                 clock: Any = None, name: Optional[str] = None) -> None:
        super().__init__(clock=clock, name=name)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError("PrometheusExporter: port must be 0..65535 (0: any free port), got %r" % (port,))
        if not isinstance(address, str) or not address:
            raise ConfigError("PrometheusExporter: address must be an IP address or host name")
        for arg, value in (("stale_after", stale_after), ("energy_wrap_kwh", energy_wrap_kwh)):
            if value is None and arg == "energy_wrap_kwh":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e12:
                raise ConfigError("PrometheusExporter: %s must be a positive number, got %r" % (arg, value))
        self.record_que = record_que
        self.port = port
        self.address = address
        self.stale_after = float(stale_after)
        self.energy_wrap_kwh = energy_wrap_kwh
        self._lock = threading.Lock()
        # (unit, sensor) -> (value, reading epoch, clock.monotonic() when seen)
        self._latest: Dict[Tuple[str, str], Tuple[float, float, float]] = {}
        self._energy: Dict[Tuple[str, str], EnergyTotal] = {}
        self._server: Any = None
        self.registry_prom: Any = None
        self.bound_port: Optional[int] = None

    # -- the thread --------------------------------------------------------
    def setup(self) -> None:
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        import prometheus_client
        from socketserver import ThreadingMixIn

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, *args: Any) -> None:     # scrapes are not log lines
                pass

        self.registry_prom = prometheus_client.CollectorRegistry(auto_describe=True)
        self.registry_prom.register(_Collector(self))
        app = prometheus_client.make_wsgi_app(self.registry_prom)
        try:
            self._server = make_server(self.address, self.port, app, server_class=Server,
                                       handler_class=QuietHandler)
        except OSError as exc:
            raise ConfigError("PrometheusExporter: cannot listen on %s:%d: %s"
                              % (self.address, self.port, exc)) from None
        self.bound_port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name=self.name + "-http",
                         daemon=True).start()
        logger.info("%s: serving metrics on http://%s:%d/metrics", self.name, self.address,
                    self.bound_port)

    def step(self) -> None:
        item = self.get(self.record_que)
        if item is None:
            return
        self.health.count("in")
        if isinstance(item, (list, tuple)):
            try:
                item = Record.from_legacy(item, self.clock.now())
            except (TypeError, ValueError) as exc:
                logger.warning("%s: skipped an item that is not a reading (%s): %.80r", self.name, exc, item)
                return
        if not isinstance(item, Record):
            logger.warning("%s: skipped an item that is not a Record: %.80r", self.name, item)
            return
        if item.data_id == HISTORY_DATA_ID or hasattr(item, "window"):
            return                      # back-fill and aggregates are not the latest value
        self.take(item)

    def take(self, record: Record) -> None:
        key = (record.unit, record.sensor)
        value = float(record.value)
        if record.unit == METER_UNIT and record.sensor in ("E0", "E3"):
            energy = self._energy.setdefault(key, EnergyTotal(self.energy_wrap_kwh))
            last = energy.last
            value, what = energy.add(value)
            if what == "wrap":
                logger.info("%s: %s %s wrapped (%s -> %s kWh); the running total goes on",
                            self.name, record.unit, record.sensor, last, record.value)
            elif what == "fall":
                logger.warning("%s: %s %s fell from %s to %s kWh (a new meter?); counting on from it",
                               self.name, record.unit, record.sensor, last, record.value)
        with self._lock:
            self._latest[key] = (value, record.timestamp.timestamp(), self.clock.monotonic())
        self.health.count("out")

    def cleanup(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- what a scrape sees ---------------------------------------------------
    def fresh_readings(self) -> Dict[Tuple[str, str], Tuple[float, float]]:
        """The latest value and reading time of every sensor heard within ``stale_after``."""
        now = self.clock.monotonic()
        with self._lock:
            for key in [k for k, (_, _, seen) in self._latest.items() if now - seen > self.stale_after]:
                logger.info("%s: %s %s silent for over %.0f s; no longer exported",
                            self.name, key[0], key[1], self.stale_after)
                del self._latest[key]
            return {key: (value, when) for key, (value, when, _) in self._latest.items()}


class _Collector:
    """Builds the metric families at each scrape from the exporter's state."""

    def __init__(self, exporter: PrometheusExporter) -> None:
        self.exporter = exporter

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        readings = self.exporter.fresh_readings()
        power = GaugeMetricFamily("kei_power_watts", "Instantaneous power (meter E7)", labels=["unit"])
        current = GaugeMetricFamily("kei_current_amperes", "Current per phase (meter E8)",
                                    labels=["unit", "phase"])
        energy = CounterMetricFamily("kei_energy_joules", "Cumulative energy, wrap-aware running "
                                     "total (meter E0 import, E3 export)", labels=["unit", "direction"])
        sensor = GaugeMetricFamily("kei_sensor_value", "Latest reading of a sensor",
                                   labels=["unit", "sensor"])
        stamp = GaugeMetricFamily("kei_last_reading_timestamp_seconds",
                                  "Time of the latest reading (its own time)", labels=["unit", "sensor"])
        for (unit, name), (value, when) in sorted(readings.items()):
            stamp.add_metric([unit, name], when)
            if unit == METER_UNIT and name == "E7":
                power.add_metric([unit], value)
            elif unit == METER_UNIT and name in ("E8R", "E8T"):
                current.add_metric([unit, name[-1]], value)
            elif unit == METER_UNIT and name in ("E0", "E3"):
                energy.add_metric([unit, "import" if name == "E0" else "export"], value * JOULES_PER_KWH)
            elif unit == METER_UNIT and name in ("EA", "EB"):
                continue                     # fixed-time copies of E0/E3: the counter has them
            else:
                sensor.add_metric([unit, name], value)
        yield from (power, current, energy, sensor, stamp)
        yield from self.health_families()

    def health_families(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        registry = self.exporter.registry
        if registry is None:
            return
        families: Dict[str, Any] = {}

        def family(kind: Any, name: str, doc: str, labels: list) -> Any:
            if name not in families:
                families[name] = kind(name, doc, labels=labels)
            return families[name]

        states = GaugeMetricFamily("kei_worker_state", "1 for each state word of a worker",
                                   labels=["worker", "class", "name", "state"])
        link = GaugeMetricFamily("kei_link_up", "1 while the B-route reader is polling the meter",
                                 labels=["worker"])
        for snap in registry.snapshot():
            labels = [snap["name"], snap["kind"]]
            for counter, value in sorted(snap["counters"].items()):
                family(CounterMetricFamily, "kei_worker_%s" % metric_part(counter),
                       "Worker health counter '%s'" % counter, ["worker", "class"]).add_metric(labels, value)
            for gauge, value in sorted(snap["gauges"].items()):
                family(GaugeMetricFamily, "kei_worker_%s" % metric_part(gauge),
                       "Worker health gauge '%s'" % gauge, ["worker", "class"]).add_metric(labels, value)
            for when_name, when in sorted(snap["stamps"].items()):
                family(GaugeMetricFamily, "kei_worker_%s_timestamp_seconds" % metric_part(when_name),
                       "Worker health time '%s' (epoch)" % when_name,
                       ["worker", "class"]).add_metric(labels, when)
            for state_name, text in sorted(snap["states"].items()):
                if state_name in SKIPPED_STATES:
                    continue
                states.add_metric(labels + [state_name, str(text)[:64]], 1)
                if state_name == "link":
                    link.add_metric([snap["name"]], 1 if text == "POLL" else 0)
        yield from families.values()
        yield states
        yield link
