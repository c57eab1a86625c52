"""MqttPublisher end to end: kei.py with the simulated meter (sim://wisun) and a
simulated sensor (sim://sensor) -> a real mosquitto on 127.0.0.1 -> a paho
subscriber standing in for Home Assistant.

Every discovery payload is checked against tests/data/ha_discovery_rules.json
(required keys; units and state classes Home Assistant accepts per
device_class); retained flags are checked by a subscriber that connects
afterwards (a broker marks only stored messages as retained); state values are
compared with what the simulated meter served (tests/mqtt_e2e_workers.py logs
it inside the kei process).
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest

from mqttbroker import MOSQUITTO, Broker, Subscriber, broker  # noqa: F401 - fixture
from support import PYTHON, REPO, TESTS, read_text, subprocess_env, wait_for

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is a test dependency (requirements-dev.txt)")
if MOSQUITTO is None:
    pytest.skip("mosquitto is not installed (.ci/run installs it)", allow_module_level=True)

RULES = json.loads((TESTS / "data" / "ha_discovery_rules.json").read_text())
RBID = "00112233445566778899AABBCCDDEEFF"      # the simulator's default Route-B ID
PWD = "0123456789AB"
MQTT_PASSWORD = "mqtt-secret-Zq81"
NODE = "testnode"
PREFIX = "kei/%s" % NODE
SCALE = 20.0

CONFIG = """\
import queue
from keilib.broute import BrouteReader, BP35C2
from keilib.serial import SerialReader
from keilib.mqtt import MqttPublisher
from keilib.recorder import FileRecorder
from mqtt_e2e_workers import ServedLog, simulated_meter

module, clock = simulated_meter("meter", {scale}{faults})
record_que = queue.Queue(1000)
command_que = queue.Queue(4)
worker_def = [
    {{'class': MqttPublisher,
      'args': {{'record_que': record_que, 'host': '127.0.0.1', 'port': {port}, 'node_id': '{node}',
               'username': 'kei', 'password': '{mqtt_password}', 'keepalive': 5,
               'expire_after': 120, 'command_que': command_que, 'read_interval': 10,
               'sensors': {{'unit1/temp': ('temperature', '°C', 'Room temperature')}}}}}},
    {{'class': BrouteReader,
      'args': {{'wisundev': BP35C2('sim://wisun?name=meter'), 'broute_id': '{rbid}', 'broute_pwd': '{pwd}',
               'requests': [{{'epc': ['E7', 'E8'], 'cycle': 10}}, {{'epc': ['E0', 'E3'], 'cycle': 30}}],
               'record_que': record_que, 'command_que': command_que, 'clock': clock}}}},
    {{'class': SerialReader,
      'args': {{'port': 'sim://sensor?units=1&sensors=2&rate=4&seed=2', 'baudrate': 115200,
               'record_que': record_que}}}},
    {{'class': FileRecorder, 'args': {{'record_que': record_que, 'fname_base': 'e2e', 'clock': clock}}}},
    {{'class': ServedLog, 'args': {{'module': module, 'path': 'served.jsonl'}}}},
]
"""


class Kei:
    """kei.py in a temporary work directory; killed in ``close()`` if still running."""

    def __init__(self, workdir: Path, port: int, faults: str = ""):
        self.workdir = workdir
        workdir.mkdir(exist_ok=True)
        (workdir / "keiconf.py").write_text(CONFIG.format(
            scale=SCALE, faults=faults, port=port, node=NODE, mqtt_password=MQTT_PASSWORD, rbid=RBID, pwd=PWD))
        self.output = open(workdir / "output.txt", "w")
        self.process = subprocess.Popen([PYTHON, str(REPO / "kei.py")], cwd=str(workdir),
                                        stdin=subprocess.DEVNULL, stdout=self.output,
                                        stderr=subprocess.STDOUT, env=subprocess_env(DEBUG="1"))

    @property
    def log(self) -> str:
        return read_text(self.workdir / "output.txt")

    def served(self, epc: str) -> List[object]:
        lines = read_text(self.workdir / "served.jsonl").splitlines()
        return [entry["value"] for entry in map(json.loads, lines) if entry["epc"] == epc]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.process.wait(15)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.output.close()


@pytest.fixture
def kei_runs(tmp_path):
    runs: List[Kei] = []
    subscribers: List[Subscriber] = []

    def start(port: int, faults: str = "") -> Kei:
        run = Kei(tmp_path / ("kei%d" % len(runs)), port, faults)
        runs.append(run)
        return run

    def subscribe(port: int, topics: List[str]) -> Subscriber:
        sub = Subscriber(port, topics)
        subscribers.append(sub)
        return sub

    start.subscribe = subscribe   # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for sub in subscribers:
            sub.close()
        for run in runs:
            run.close()


def configs(sub: Subscriber) -> Dict[str, dict]:
    return {topic: json.loads(payload) for topic, payload in sub.latest("homeassistant/").items()
            if topic.endswith("/config") and payload}


def meter_config_ready(sub: Subscriber) -> Dict[str, dict]:
    found = configs(sub)
    names = {c.get("state_topic", "").rsplit("/", 1)[-1] for c in found.values()}
    # the meter's configs come at its join (named by its MAC), again once 8A/8D are read
    return found if {"E7", "E8R", "E0", "E3", "temp", "hum", "link", "lqi"} <= names and all(
        "serial_number" in c["device"] for c in found.values()
        if c["device"]["identifiers"][0].startswith("kei_meter_")) else {}


def check_sensor_config(topic: str, config: dict) -> None:
    """One discovery payload against the checked-in rules."""
    for key in RULES["required"]:
        assert key in config, "%s: missing %r: %s" % (topic, key, config)
    for key in RULES["forbidden"]:
        assert key not in config, "%s: has %r" % (topic, key)
    for key in RULES["required_device"]:
        assert config["device"].get(key), "%s: device lacks %r" % (topic, key)
    for key in RULES["required_origin"]:
        assert config["origin"].get(key), "%s: origin lacks %r" % (topic, key)
    assert topic.startswith("homeassistant/sensor/") and topic.count("/") == 4, topic
    assert all(a["topic"].startswith(PREFIX + "/") for a in config["availability"]), config
    if "state_class" in config:
        assert config["state_class"] in RULES["state_classes"], config
    if "entity_category" in config:
        assert config["entity_category"] in RULES["entity_categories"], config
    device_class = config.get("device_class")
    if device_class is not None:
        rule = RULES["device_classes"][device_class]
        assert config.get("unit_of_measurement") in rule["units"], config
        assert config.get("state_class") in rule["state_classes"], config
        assert isinstance(config.get("suggested_display_precision"), int) or not config["unique_id"].startswith(
            "kei_meter"), config
    text = json.dumps(config)
    assert RBID not in text and RBID.lower() not in text, "the Route-B ID in %s" % topic


def test_home_assistant_discovery_states_and_clean_stop(broker, kei_runs):
    ha = kei_runs.subscribe(broker.port, ["homeassistant/#", "kei/#"])
    kei = kei_runs(broker.port)
    found = wait_for(lambda: meter_config_ready(ha), timeout=40, message="discovery of the meter and sensor")
    assert ha.last(PREFIX + "/status") == "online"
    wait_for(lambda: ha.last(PREFIX + "/meter/status") == "online", timeout=10, message="meter online")

    # every payload follows the rules; ids are unique; meter entities follow the link
    for topic, config in found.items():
        if topic.startswith("homeassistant/sensor/"):
            check_sensor_config(topic, config)
    unique_ids = [c["unique_id"] for c in found.values()]
    assert len(unique_ids) == len(set(unique_ids)), unique_ids
    by_state = {c.get("state_topic", c.get("command_topic")): c for c in found.values()}
    power = by_state[PREFIX + "/BR/E7"]
    assert (power["device_class"], power["unit_of_measurement"], power["state_class"]) == \
        ("power", "W", "measurement")
    assert {a["topic"] for a in power["availability"]} == {PREFIX + "/status", PREFIX + "/meter/status"}
    assert power["availability_mode"] == "all" and power["expire_after"] == 120
    meter_device = power["device"]
    assert meter_device["serial_number"] == "KEISIM000003"              # 8D of the simulated meter
    assert meter_device["manufacturer"].endswith("000016")              # 8A
    assert meter_device["identifiers"][0].startswith("kei_meter_")
    # import / export for the Energy dashboard
    for sensor, name in (("E0", "import"), ("E3", "export")):
        energy = by_state["%s/BR/%s" % (PREFIX, sensor)]
        assert (energy["device_class"], energy["unit_of_measurement"], energy["state_class"]) == \
            ("energy", "kWh", "total_increasing")
        assert name in energy["name"].lower() and energy["suggested_display_precision"] == 1  # E1 0.1 kWh
    assert by_state[PREFIX + "/diag/link"]["entity_category"] == "diagnostic"
    assert by_state[PREFIX + "/diag/lqi"]["entity_category"] == "diagnostic"
    wait_for(lambda: ha.last(PREFIX + "/diag/lqi") == str(0xE1), timeout=10,    # the simulated module's LQI
             message="the LQI state")
    temp = by_state[PREFIX + "/unit1/temp"]
    assert (temp["device_class"], temp["unit_of_measurement"], temp["name"]) == \
        ("temperature", "°C", "Room temperature")
    assert temp["device"]["identifiers"] == ["kei_%s" % NODE]
    assert "device_class" not in by_state[PREFIX + "/unit1/hum"]        # no mapping: generic
    assert by_state[PREFIX + "/read"]["command_topic"] == PREFIX + "/read"

    # state values are what the meter served
    wait_for(lambda: ha.last(PREFIX + "/BR/E0") and ha.last(PREFIX + "/BR/E8R"), timeout=20, message="E0, E8R")
    # (the test's log of what the meter served is written up to 0.1 s after
    # the answer, so a value may be published before it is in the log: look again)
    def published_were_served():
        published_w = [int(p) for _, p, _ in ha.seen(PREFIX + "/BR/E7")]
        served_kwh = [round(raw * 0.1, 4) for raw in kei.served("E0")]
        served_r = [c["r"] for c in kei.served("E8")]
        return (published_w and set(published_w) <= set(kei.served("E7"))
                and all(float(p) in served_kwh for _, p, _ in ha.seen(PREFIX + "/BR/E0"))
                and all(float(p) in served_r for _, p, _ in ha.seen(PREFIX + "/BR/E8R")))
    wait_for(published_were_served, timeout=5, message="every published E7, E0 and E8R among those served")
    published_w = [int(p) for _, p, _ in ha.seen(PREFIX + "/BR/E7")]
    # the FileRecorder beside it on the same queue (the fan-out) got the same readings
    def recorded_w():
        raw = "".join(read_text(p) for p in kei.workdir.glob("2*-e2e.txt"))
        return {int(line.split(",")[3]) for line in raw.splitlines() if ",BR,E7," in line}
    wait_for(lambda: set(published_w) <= recorded_w(), timeout=10, message="the same E7 values in the raw file")

    # retained: a subscriber that comes later gets configs, states and status from the store
    late = kei_runs.subscribe(broker.port, ["homeassistant/#", "kei/#"])
    stored = set(found) | {PREFIX + "/status", PREFIX + "/meter/status", PREFIX + "/BR/E7", PREFIX + "/unit1/temp"}
    wait_for(lambda: stored <= {t for t, _, r in late.seen() if r}, timeout=10, message="retained configs, states")

    # Home Assistant restarts: discovery comes again
    mark = ha.mark()
    ha.publish("homeassistant/status", "online")
    wait_for(lambda: set(found) <= {t for t, _, _ in ha.since(mark)}, timeout=10, message="discovery re-sent")

    # the read command: one E7 Get at once (then rate-limited)
    ha.publish(PREFIX + "/read", "read")
    wait_for(lambda: "reading E7 now (command)" in kei.log, timeout=10, message="E7 read on command")

    # clean stop: 'offline', retained
    assert kei.stop() == 0
    assert ha.last(PREFIX + "/status") == "offline"
    after = kei_runs.subscribe(broker.port, [PREFIX + "/status"])
    wait_for(lambda: after.seen(PREFIX + "/status"), timeout=5, message="retained status")
    assert after.seen(PREFIX + "/status")[-1][1:] == ("offline", True)
    # secrets: neither the MQTT password nor the Route-B ID in kei's log (DEBUG)
    log = kei.log + read_text(kei.workdir / "kei.log")
    assert "MQTT: connected to" in log
    assert MQTT_PASSWORD not in log and RBID not in log


def test_broker_restart_and_kill_9_will(broker, kei_runs):
    ha = kei_runs.subscribe(broker.port, ["homeassistant/#", "kei/#"])
    kei = kei_runs(broker.port)
    found = wait_for(lambda: meter_config_ready(ha), timeout=40, message="discovery")
    # the broker restarts with an empty store (persistence off): kei reconnects by
    # itself and publishes discovery, status and the current values again
    broker.stop()
    mark = len(ha.messages)
    broker.start()
    wait_for(lambda: ha.connects >= 2, timeout=15, message="test subscriber back")
    wait_for(lambda: set(found) <= {t for t, _, _ in ha.since(mark)}, timeout=20,
             message="discovery after the broker restart")
    again = {t: p for t, p, _ in ha.since(mark)}
    assert again[PREFIX + "/status"] == "online"
    assert PREFIX + "/BR/E7" in again and PREFIX + "/unit1/temp" in again
    wait_for(lambda: PREFIX + "/meter/status" in {t for t, _, _ in ha.since(mark)}, timeout=5)

    # kill -9: the broker publishes the Will
    kei.process.send_signal(signal.SIGKILL)
    kei.process.wait(10)
    wait_for(lambda: ha.last(PREFIX + "/status") == "offline", timeout=20, message="the Will")
    after = kei_runs.subscribe(broker.port, [PREFIX + "/status"])
    wait_for(lambda: after.seen(PREFIX + "/status"), timeout=5, message="retained Will")
    assert after.seen(PREFIX + "/status")[-1][1:] == ("offline", True)


def test_meter_unavailable_while_the_stick_is_unplugged(broker, kei_runs):
    ha = kei_runs.subscribe(broker.port, ["kei/#"])
    # unplugged 60 module seconds (3 s real) after the first join, for 100 (5 s)
    kei = kei_runs(broker.port, faults=", unplug_after=60, unplug_for=100")
    topic = PREFIX + "/meter/status"
    wait_for(lambda: ha.last(topic) == "online", timeout=40, message="meter online")
    wait_for(lambda: ha.last(topic) == "offline", timeout=20, message="meter offline while unplugged")
    assert ha.last(PREFIX + "/status") == "online"              # kei itself stays available
    wait_for(lambda: ha.last(topic) == "online", timeout=40, message="meter online after the replug")
    assert "unplugged" in kei.log
    statuses = [p for _, p, _ in ha.seen(topic)]
    assert statuses[:3] == ["online", "offline", "online"], statuses
    assert kei.stop() == 0
