"""MQTT: the latest readings for Home Assistant (discovery) or any MQTT client.

``MqttPublisher`` takes Records from its queue and publishes each as a plain
retained value on its own state topic; it announces every entity to Home
Assistant through MQTT discovery, so the meter and the sensors appear by
themselves.  MQTT here is a latest-value channel: while the broker is away
only the newest value per entity is kept, and all of them are published
again on every (re)connect, with the discovery configs.

Topics (``<p>`` = ``topic_prefix``, default ``kei``; ``<node>`` = ``node_id``,
default the host name plus a short hash of the work directory, so a second
kei in the same house gets its own ids with nothing to edit)::

    <p>/<node>/status              online | offline   (retained; Last Will: offline)
    <p>/<node>/meter/status        online while the B-route link is up (state POLL)
    <p>/<node>/<unit>/<sensor>     the value, e.g. kei/pi/BR/E7 -> 1852  (retained)
    <p>/<node>/BR/EA/attributes    {"meter_time": "2026-12-01T17:30:00"} (EA, EB)
    <p>/<node>/diag/<name>         diagnostics: link state, LQI at the last scan, published, dropped
    <p>/<node>/read                (subscribed) any payload: read E7 now
    <d>/sensor/<node>/<object>/config   discovery (``<d>`` = discovery_prefix)
    <d>/status                     (subscribed) "online": send discovery again

Meter entities (unit ``BR``) belong to a device identified by the meter's
MAC address (and serial number 8D, maker code 8A when the meter gives them;
never the Route-B ID); their availability is kei's AND the meter link's, and
``expire_after`` makes a silent meter's values unavailable rather than frozen.
E0 (import) and E3 (export) are ``energy`` / ``total_increasing`` in kWh: the
Energy dashboard's "grid consumption" and "return to grid".

Readings from a meter's history (data id ``hist``) are skipped: they are not
the latest value.  Connection, reconnection (``reconnect_min`` doubling to
``reconnect_max``) and the Will are paho-mqtt's; it works with paho-mqtt 2.x
(callback API version 2) and with Debian 12's python3-paho-mqtt 1.6.

``worker_def`` entry::

    {'class': MqttPublisher,
     'args': {'record_que': record_que, 'host': 'homeassistant.local',
              'username': 'kei', 'password': 'XXXXXXXX'}}
"""

from __future__ import annotations

import decimal
import hashlib
import json
import logging
import os
import queue
import re
import socket
import threading
from collections.abc import Mapping

from keilib import __version__
from keilib.clock import Clock
from keilib.errors import ConfigError
from keilib.record import HISTORY_DATA_ID, Record, format_value
from keilib.worker import Worker

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Dict, Optional, Tuple

__all__ = ["MqttPublisher", "METER_ENTITIES"]

logger = logging.getLogger(__name__)

METER_UNIT = "BR"
# sensor -> (object id, name, device_class, unit, state_class, precision); None: from E1/D3
METER_ENTITIES: Dict[str, Tuple[str, str, str, str, str, Optional[int]]] = {
    "E7": ("power", "Power", "power", "W", "measurement", 0),
    "E8R": ("current_r", "Current R", "current", "A", "measurement", 1),
    "E8T": ("current_t", "Current T", "current", "A", "measurement", 1),
    "E0": ("energy_import", "Energy import", "energy", "kWh", "total_increasing", None),
    "E3": ("energy_export", "Energy export", "energy", "kWh", "total_increasing", None),
    "EA": ("energy_import_half_hour", "Energy import (half-hourly)", "energy", "kWh",
           "total_increasing", None),
    "EB": ("energy_export_half_hour", "Energy export (half-hourly)", "energy", "kWh",
           "total_increasing", None),
}
# The meter's own timestamp goes to attributes for these (fixed-time values).
STAMPED = ("EA", "EB")
# EA/EB come every 30 minutes: they expire later than polled values.
HALF_HOURLY_EXPIRY = 3900
LINK_UP = "POLL"
STATUS_INTERVAL = 0.5          # how often the link state and pending values are looked at
DIAG_INTERVAL = 60.0
_TOPIC_WORD = re.compile(r"^[A-Za-z0-9_-]+$")
_DEVICE_CLASS = re.compile(r"^[a-z_]+$")


def _object_id(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "x"


def default_node_id(workdir: Optional[str] = None) -> str:
    """Host name plus a short hash of the work directory: stable for one
    installation, distinct for a second kei on the same or another box."""
    where = os.path.abspath(workdir or os.getcwd())
    digest = hashlib.sha1(where.encode("utf-8")).hexdigest()[:6]
    return "%s_%s" % (_object_id(socket.gethostname())[:24], digest)


def _check_prefix(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "+#\0") \
            or value.startswith("/") or value.endswith("/") or "//" in value:
        raise ConfigError("argument '%s' must be a topic prefix such as 'kei' (no '+', '#', "
                          "leading, trailing or double '/'), got %r" % (name, value))
    return value


def _seconds(name: str, value: Any, low: float, allow_none: bool = False) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
        raise ConfigError("argument '%s' must be a number of seconds >= %g, got %r" % (name, low, value))
    return float(value)


def _file(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not os.path.isfile(value):
        raise ConfigError("argument '%s' must name an existing file, got %r" % (name, value))
    return value


def parse_sensor_map(sensors: Any) -> Dict[Tuple[str, str], Tuple[Optional[str], Optional[str], str]]:
    """``{'C3/pres': ('pressure', 'hPa', 'Barometer')}`` -> {(unit, sensor): (class, unit, name)}."""
    shape = "a dict {'UNIT/SENSOR': (device_class or None, unit or None, 'Name')}"
    if sensors is None:
        return {}
    if not isinstance(sensors, Mapping):
        raise ConfigError("argument 'sensors' must be %s, got %r" % (shape, sensors))
    result = {}
    for key, value in sensors.items():
        parts = key.split("/") if isinstance(key, str) else []
        if len(parts) != 2 or not all(parts) or not isinstance(value, (tuple, list)) or len(value) != 3:
            raise ConfigError("argument 'sensors': entry %r: %r must be %s" % (key, value, shape))
        device_class, unit, name = value
        if device_class is not None and not (isinstance(device_class, str) and _DEVICE_CLASS.match(device_class)):
            raise ConfigError("argument 'sensors': entry %r: device_class must be a Home Assistant "
                              "sensor class such as 'temperature' or None, got %r" % (key, device_class))
        if unit is not None and not (isinstance(unit, str) and unit):
            raise ConfigError("argument 'sensors': entry %r: unit must be text such as 'hPa' or None, "
                              "got %r" % (key, unit))
        if not isinstance(name, str) or not name:
            raise ConfigError("argument 'sensors': entry %r: the name must be text, got %r" % (key, name))
        result[(parts[0], parts[1])] = (device_class, unit, name)
    return result


def _precision(step: Optional[str]) -> int:
    """Decimals to show for an energy step such as '0.1' (kWh per count)."""
    try:
        exponent = decimal.Decimal(step or "0.1").normalize().as_tuple().exponent
    except decimal.InvalidOperation:
        return 1
    return max(0, -int(exponent))


class MqttPublisher(Worker):
    """Publish the latest readings over MQTT, with Home Assistant discovery.

    Arguments: ``host``, ``port`` (1883; 8883 usual with TLS), ``username`` /
    ``password`` (never logged), ``tls`` (True: the system's CAs), ``ca_file``,
    ``cert_file`` / ``key_file`` (client certificate), ``client_id`` (default
    ``kei-<node>``), ``topic_prefix`` ('kei'), ``node_id`` (see the module
    doc), ``discovery_prefix`` ('homeassistant'; None: no discovery), ``qos``
    (0, 1, 2), ``min_interval`` (seconds between two values of one entity;
    0: every reading), ``expire_after`` (seconds a meter value stays valid
    without a new one), ``sensors`` (names and classes of serial sensors),
    ``command_que`` (the BrouteReader's: enables ``<p>/<node>/read``) and
    ``read_interval`` (the least seconds between two such reads).

    ``worker_def`` entry::

        {'class': MqttPublisher,
         'args': {'record_que': record_que, 'host': '192.168.1.10',
                  'username': 'kei', 'password': 'XXXXXXXX',
                  'sensors': {'C3/pres': ('pressure', 'hPa', 'Barometer')}}}
    """

    CONSUMES = ("record_que",)
    BUFFER_POLICY = "drop_oldest"
    REQUIRES = [("paho.mqtt.client", "pip install 'kei[mqtt]'", "sudo apt install python3-paho-mqtt")]

    def __init__(self, record_que: "queue.Queue[Any]", host: str = "localhost", port: int = 1883,
                 username: Optional[str] = None, password: Optional[str] = None, tls: bool = False,
                 ca_file: Optional[str] = None, cert_file: Optional[str] = None,
                 key_file: Optional[str] = None, client_id: Optional[str] = None,
                 topic_prefix: str = "kei", node_id: Optional[str] = None,
                 discovery_prefix: Optional[str] = "homeassistant", qos: int = 1,
                 min_interval: float = 0.0, expire_after: float = 900, sensors: Any = None,
                 command_que: "Optional[queue.Queue[Any]]" = None, read_interval: float = 30.0,
                 keepalive: int = 60, reconnect_min: float = 1.0, reconnect_max: float = 120.0,
                 clock: Optional[Clock] = None, name: Optional[str] = None):
        super().__init__(clock=clock, name=name)
        if not isinstance(record_que, queue.Queue):
            raise ConfigError("argument 'record_que' must be a queue.Queue, got %r" % (record_que,))
        if not isinstance(host, str) or not host or any(c.isspace() for c in host):
            raise ConfigError("argument 'host' must be a host name or address, got %r" % (host,))
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError("argument 'port' must be a TCP port 1..65535, got %r" % (port,))
        if username is not None and (not isinstance(username, str) or not username):
            raise ConfigError("argument 'username' must be text or None")
        if password is not None and (not isinstance(password, str) or username is None):
            raise ConfigError("argument 'password' must be text, and needs 'username'")
        if not isinstance(tls, bool):
            raise ConfigError("argument 'tls' must be True or False, got %r" % (tls,))
        self.ca_file = _file("ca_file", ca_file)
        self.cert_file = _file("cert_file", cert_file)
        self.key_file = _file("key_file", key_file)
        if self.key_file and not self.cert_file:
            raise ConfigError("argument 'key_file' needs 'cert_file' (the client certificate)")
        self.tls = tls or bool(self.ca_file or self.cert_file)
        if qos not in (0, 1, 2) or isinstance(qos, bool):
            raise ConfigError("argument 'qos' must be 0, 1 or 2, got %r" % (qos,))
        self.node = node_id if node_id is not None else default_node_id()
        if not isinstance(self.node, str) or not _TOPIC_WORD.match(self.node):
            raise ConfigError("argument 'node_id' must be letters, digits, '_' or '-', got %r" % (node_id,))
        if client_id is not None and (not isinstance(client_id, str) or not client_id):
            raise ConfigError("argument 'client_id' must be text, got %r" % (client_id,))
        self.prefix = "%s/%s" % (_check_prefix("topic_prefix", topic_prefix), self.node)
        self.discovery_prefix = None if discovery_prefix is None else \
            _check_prefix("discovery_prefix", discovery_prefix)
        self.min_interval = _seconds("min_interval", min_interval, 0.0)
        self.expire_after = int(_seconds("expire_after", expire_after, 1.0) or 0)
        if self.expire_after <= self.min_interval:
            raise ConfigError("argument 'expire_after' (%g s) must be longer than 'min_interval' (%g s)"
                              % (self.expire_after, self.min_interval))
        self.read_interval = _seconds("read_interval", read_interval, 10.0)
        if command_que is not None and not isinstance(command_que, queue.Queue):
            raise ConfigError("argument 'command_que' must be the BrouteReader's command_que "
                              "(a queue.Queue), got %r" % (command_que,))
        if isinstance(keepalive, bool) or not isinstance(keepalive, int) or not 5 <= keepalive <= 3600:
            raise ConfigError("argument 'keepalive' must be seconds 5..3600, got %r" % (keepalive,))
        self.reconnect_min = _seconds("reconnect_min", reconnect_min, 0.1)
        self.reconnect_max = _seconds("reconnect_max", reconnect_max, self.reconnect_min or 0.1)
        self.sensor_map = parse_sensor_map(sensors)
        self.record_que = record_que
        self.host, self.port, self.qos, self.keepalive = host, port, qos, keepalive
        self.username, self._password = username, password
        self.client_id = client_id or "kei-%s" % self.node
        self.command_que = command_que
        # run-time state
        self.client: Any = None
        self._connected = threading.Event()
        self._resend = threading.Event()          # set on connect and on HA's "online"
        self._read_asked = threading.Event()
        self._stopping_client = False             # a disconnect at stop is not a loss
        self.latest: Dict[Tuple[str, str], Record] = {}
        self.sent_at: Dict[Tuple[str, str], float] = {}
        self.pending: Dict[Tuple[str, str], Record] = {}
        self.discovered: Dict[str, str] = {}      # config topic -> payload published
        self.meter_online: Optional[bool] = None
        self.last_status = -1e18
        self.last_diag = -1e18
        self.last_read = -1e18
        self.diag_sent: Dict[str, str] = {}

    # -- topics ---------------------------------------------------------------
    @property
    def status_topic(self) -> str:
        return self.prefix + "/status"

    @property
    def meter_status_topic(self) -> str:
        return self.prefix + "/meter/status"

    def state_topic(self, unit: str, sensor: str) -> str:
        return "%s/%s/%s" % (self.prefix, unit, sensor)

    # -- the worker ---------------------------------------------------------------
    def setup(self) -> None:
        import paho.mqtt.client as mqtt
        try:                                   # paho-mqtt 2.x
            from paho.mqtt.enums import CallbackAPIVersion
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        except ImportError:                    # paho-mqtt 1.x (Debian 12)
            client = mqtt.Client(client_id=self.client_id, clean_session=True)
        if self.username is not None:
            client.username_pw_set(self.username, self._password)
        if self.tls:
            client.tls_set(ca_certs=self.ca_file, certfile=self.cert_file, keyfile=self.key_file)
        client.will_set(self.status_topic, "offline", qos=self.qos, retain=True)
        client.reconnect_delay_set(min_delay=max(1, int(self.reconnect_min)),
                                   max_delay=max(1, int(self.reconnect_max)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        logger.info("MQTT: connecting to %s:%d as %s%s (topics %s/...)", self.host, self.port,
                    self.client_id, " with TLS" if self.tls else "", self.prefix)
        client.connect_async(self.host, self.port, keepalive=self.keepalive)
        client.loop_start()

    def step(self) -> None:
        item = self.get(self.record_que, timeout=STATUS_INTERVAL)
        if item is not None:
            self.take(item)
        now = self.clock.monotonic()
        if now - self.last_status >= STATUS_INTERVAL or self._resend.is_set():
            self.last_status = now
            self.tick(now)

    def cleanup(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if self._connected.is_set():
                self._stopping_client = True
                info = client.publish(self.status_topic, "offline", qos=self.qos, retain=True)
                info.wait_for_publish(timeout=2.0)
                client.disconnect()
        except (OSError, RuntimeError, ValueError) as exc:
            logger.info("MQTT: 'offline' at stop not sent: %s", exc)
        finally:
            client.loop_stop()
        logger.info("MQTT: disconnected")

    # -- paho callbacks (its network thread): only flags, the worker acts ----------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, *rest: Any) -> None:
        if getattr(reason, "is_failure", reason != 0):
            logger.warning("MQTT: %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        logger.info("MQTT: connected to %s:%d", self.host, self.port)
        client.publish(self.status_topic, "online", qos=self.qos, retain=True)
        if self.discovery_prefix is not None:
            client.subscribe(self.discovery_prefix + "/status", qos=self.qos)
        if self.command_que is not None:
            client.subscribe(self.prefix + "/read", qos=self.qos)
        self._connected.set()
        self._resend.set()

    def _on_disconnect(self, client: Any, userdata: Any, *args: Any) -> None:
        if self._connected.is_set() and not self._stopping_client:
            logger.warning("MQTT: connection to %s:%d lost; reconnecting", self.host, self.port)
        self._connected.clear()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if self.discovery_prefix is not None and message.topic == self.discovery_prefix + "/status":
            if message.payload == b"online":
                logger.info("MQTT: Home Assistant is online; sending discovery again")
                self._resend.set()
        elif message.topic == self.prefix + "/read":
            self._read_asked.set()

    # -- records ------------------------------------------------------------------
    def take(self, item: Any) -> None:
        if isinstance(item, (list, tuple)):
            try:
                item = Record.from_legacy(item, self.clock.now())
            except (ValueError, TypeError) as exc:
                logger.warning("MQTT: item skipped: %s", exc)
                return
        if not isinstance(item, Record):
            logger.warning("MQTT: item skipped: not a Record: %r", item)
            return
        if item.data_id == HISTORY_DATA_ID:
            return                    # back-filled history is not the latest value
        key = (item.unit, item.sensor)
        self.latest[key] = item
        self.health.count("in")
        now = self.clock.monotonic()
        if now - self.sent_at.get(key, -1e18) >= self.min_interval:
            self.pending.pop(key, None)
            self.publish_record(item, now)
        else:
            self.pending[key] = item  # sent when its interval is over (tick)

    def publish_record(self, record: Record, now: float) -> None:
        if not self._connected.is_set():
            return                    # kept in self.latest; all sent again on connect
        key = (record.unit, record.sensor)
        if self.discovery_prefix is not None:
            self.discover(key)
        topic = self.state_topic(*key)
        self.publish(topic, format_value(record.value))
        if record.unit == METER_UNIT and record.sensor in STAMPED:
            self.publish(topic + "/attributes",
                         json.dumps({"meter_time": record.timestamp.isoformat()}))
        self.sent_at[key] = now
        self.health.count("published")

    def publish(self, topic: str, payload: str, retain: bool = True) -> None:
        assert self.client is not None
        self.client.publish(topic, payload, qos=self.qos, retain=retain)

    # -- the periodic part: link state, pending values, resends, reads -----------
    def tick(self, now: float) -> None:
        if not self._connected.is_set():
            return
        if self._resend.is_set():
            self._resend.clear()
            self.discovered.clear()
            self.diag_sent.clear()
            self.meter_online = None
            self.pending.clear()
            for record in list(self.latest.values()):
                self.publish_record(record, now)
        states = self.meter_states()
        online = states.get("link") == LINK_UP
        if states and online != self.meter_online:
            self.meter_online = online
            self.publish(self.meter_status_topic, "online" if online else "offline")
            logger.info("MQTT: meter %s", "available" if online else "unavailable (B-route link %s)"
                        % states.get("link"))
        if states and self.discovery_prefix is not None:
            self.discover((METER_UNIT, "link"))   # identity may have come: configs follow
            if "lqi" in states:
                self.discover((METER_UNIT, "lqi"))
            for key in list(self.latest):
                if key[0] == METER_UNIT:
                    self.discover(key)
        for key, record in list(self.pending.items()):
            if now - self.sent_at.get(key, -1e18) >= self.min_interval:
                del self.pending[key]
                self.publish_record(record, now)
        if now - self.last_diag >= DIAG_INTERVAL or not self.diag_sent \
                or any(states.get(name) != self.diag_sent.get(name) for name in ("link", "lqi") if name in states):
            self.last_diag = now
            self.publish_diagnostics(states)
        if self._read_asked.is_set():
            self._read_asked.clear()
            self.ask_read(now)

    def ask_read(self, now: float) -> None:
        assert self.command_que is not None
        if now - self.last_read < self.read_interval:
            logger.info("MQTT: read command ignored: the last was %.0f s ago (read_interval %g s)",
                        now - self.last_read, self.read_interval)
            return
        try:
            self.command_que.put_nowait("read")
        except queue.Full:
            return
        self.last_read = now
        logger.info("MQTT: read command passed to the B-route reader")

    def publish_diagnostics(self, states: Dict[str, str]) -> None:
        counters = self.health.snapshot()["counters"]
        values = {"published": str(counters.get("published", 0)), "dropped": str(counters.get("dropped", 0))}
        if states:
            values["link"] = states.get("link", "INIT")
        if "lqi" in states:
            values["lqi"] = states["lqi"]
        for name, value in values.items():
            if self.diag_sent.get(name) != value:
                self.diag_sent[name] = value
                self.publish("%s/diag/%s" % (self.prefix, name), value)
        if self.discovery_prefix is not None:
            for name in ("published", "dropped"):
                self.discover(("diag", name))
            if self.command_que is not None:
                self.discover_button()

    def discover_button(self) -> None:
        """A 'Read power now' button on kei's device, when reads can be asked for."""
        object_id = "read_power"
        payload = {"unique_id": "kei_%s_%s" % (self.node, object_id), "name": "Read power now",
                   "command_topic": self.prefix + "/read", "payload_press": "read",
                   "availability": [{"topic": self.status_topic}], "device": self.kei_device(),
                   "origin": {"name": "kei", "sw_version": __version__}}
        topic = "%s/button/%s/%s/config" % (self.discovery_prefix, self.node, object_id)
        text = json.dumps(payload, sort_keys=True)
        if self.discovered.get(topic) != text:
            self.discovered[topic] = text
            self.publish(topic, text)

    def meter_states(self) -> Dict[str, str]:
        """The B-route reader's health states ('link', 'meter_mac', ...) and its
        scan's LQI (as 'lqi'); {} without a reader."""
        for health in self.registry or ():
            if health.kind == "BrouteReader":
                snapshot = health.snapshot()
                states = dict(snapshot["states"])
                if "lqi" in snapshot["gauges"]:
                    states["lqi"] = "%d" % snapshot["gauges"]["lqi"]
                return states
        return {}

    # -- discovery ------------------------------------------------------------------
    def discover(self, key: Tuple[str, str]) -> None:
        made = self.discovery_config(key)
        if made is None:
            return
        topic, payload = made
        text = json.dumps(payload, sort_keys=True)
        if self.discovered.get(topic) != text:
            self.discovered[topic] = text
            self.publish(topic, text)

    def kei_device(self) -> Dict[str, Any]:
        return {"identifiers": ["kei_%s" % self.node], "name": "kei %s" % self.node,
                "manufacturer": "kei", "model": "kei bridge", "sw_version": __version__}

    def meter_device(self, states: Dict[str, str]) -> Optional[Dict[str, Any]]:
        mac = states.get("meter_mac")
        if not mac:
            return None
        device: Dict[str, Any] = {
            "identifiers": ["kei_meter_%s" % mac.lower()], "name": "Smart meter",
            "model": "Low-voltage smart meter (Route B)",
            "manufacturer": "ECHONET maker %s" % states.get("meter_maker", "unknown"),
            "via_device": "kei_%s" % self.node,
        }
        if states.get("meter_serial"):
            device["serial_number"] = states["meter_serial"]
        return device

    def discovery_config(self, key: Tuple[str, str]) -> Optional[Tuple[str, Dict[str, Any]]]:
        unit, sensor = key
        kei_availability = {"topic": self.status_topic}
        config: Dict[str, Any] = {
            "origin": {"name": "kei", "sw_version": __version__},
            "availability": [kei_availability],
            "state_topic": self.state_topic(unit, sensor),
        }
        if unit == METER_UNIT:
            states = self.meter_states()
            device = self.meter_device(states)
            if device is None:
                return None           # not joined yet: no identity to name the meter by
            mac = states["meter_mac"].lower()
            node = "meter_%s" % mac
            config["device"] = device
            if sensor == "link":
                object_id = "link"
                config.update(name="B-route link", entity_category="diagnostic",
                              state_topic="%s/diag/link" % self.prefix, icon="mdi:access-point-network")
            elif sensor == "lqi":
                object_id = "lqi"             # 0..255, from the last active scan
                config.update(name="Link quality (LQI)", entity_category="diagnostic", state_class="measurement",
                              state_topic="%s/diag/lqi" % self.prefix, icon="mdi:signal")
            elif sensor in METER_ENTITIES:
                object_id, name, device_class, unit_text, state_class, precision = METER_ENTITIES[sensor]
                if precision is None:
                    precision = _precision(states.get("energy_step"))
                config.update(name=name, device_class=device_class, unit_of_measurement=unit_text,
                              state_class=state_class, suggested_display_precision=precision,
                              expire_after=HALF_HOURLY_EXPIRY if sensor in STAMPED else self.expire_after)
                config["availability"] = [kei_availability, {"topic": self.meter_status_topic}]
                config["availability_mode"] = "all"
                if sensor in STAMPED:
                    config["json_attributes_topic"] = config["state_topic"] + "/attributes"
            else:
                object_id = _object_id(sensor)
                config.update(name="Meter %s" % sensor, state_class="measurement")
            config["unique_id"] = "kei_meter_%s_%s" % (mac, object_id)
        else:
            node = self.node
            config["device"] = self.kei_device()
            if unit == "diag":
                object_id = "kei_%s" % sensor
                config.update(name="Records %s" % sensor, entity_category="diagnostic",
                              state_class="total_increasing", state_topic="%s/diag/%s" % (self.prefix, sensor))
            else:
                object_id = _object_id("%s_%s" % (unit, sensor))
                device_class, unit_text, name = self.sensor_map.get(key, (None, None, "%s %s" % (unit, sensor)))
                config.update(name=name, state_class="measurement")
                if device_class is not None:
                    config["device_class"] = device_class
                if unit_text is not None:
                    config["unit_of_measurement"] = unit_text
            config["unique_id"] = "kei_%s_%s" % (self.node, object_id)
        return "%s/sensor/%s/%s/config" % (self.discovery_prefix, node, object_id), config
