"""MqttPublisher in process against a real mosquitto (tests/mqttbroker.py):
argument validation, the missing-package message of ``--check``, the
per-entity rate limit on a FakeClock, history and bad items skipped, values
kept while the broker is away and sent on connect, the read command's rate
limit, distinct ids for a second kei, and no password in any log line."""

from __future__ import annotations

import datetime
import json
import logging
import queue
import shutil
import subprocess

import pytest

from keilib.clock import FakeClock
from keilib.errors import ConfigError
from keilib.mqtt import MqttPublisher, default_node_id
from keilib.record import HISTORY_DATA_ID, Record
from mqttbroker import MOSQUITTO, MOSQUITTO_PASSWD, Broker, Subscriber, broker, free_port  # noqa: F401 - fixture
from support import PYTHON, REPO, subprocess_env, wait_for

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is a test dependency (requirements-dev.txt)")
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (.ci/run installs it)")

T0 = datetime.datetime(2026, 12, 1, 12, 0, 0)
PASSWORD = "s3cret-Pw-77x"


def record(sensor: str, value: float, unit: str = "C3", data_id: str = "x") -> Record:
    return Record(T0, unit, sensor, value, data_id)


@pytest.mark.parametrize("args, says", [
    ({"host": ""}, "'host'"),
    ({"port": 0}, "'port'"),
    ({"port": "1883"}, "'port'"),
    ({"qos": 3}, "'qos'"),
    ({"topic_prefix": "kei/#"}, "'topic_prefix'"),
    ({"topic_prefix": "/kei"}, "'topic_prefix'"),
    ({"discovery_prefix": "home+assistant"}, "'discovery_prefix'"),
    ({"password": "pw-Qx81z"}, "needs 'username'"),
    ({"ca_file": "/nonexistent/ca.pem"}, "'ca_file'"),
    ({"key_file": __file__}, "needs 'cert_file'"),
    ({"min_interval": -1}, "'min_interval'"),
    ({"min_interval": 60, "expire_after": 30}, "longer than 'min_interval'"),
    ({"read_interval": 1}, "'read_interval'"),
    ({"node_id": "a/b"}, "'node_id'"),
    ({"sensors": {"C3pres": ("pressure", "hPa", "Barometer")}}, "'sensors'"),
    ({"sensors": {"C3/pres": ("Pressure!", "hPa", "Barometer")}}, "device_class"),
    ({"sensors": {"C3/pres": ("pressure", "hPa")}}, "'sensors'"),
    ({"command_que": []}, "'command_que'"),
])
def test_bad_arguments_are_config_errors_naming_the_argument(args, says):
    with pytest.raises(ConfigError) as caught:
        MqttPublisher(queue.Queue(), **args)
    assert says in str(caught.value)
    if "password" in args:
        assert args["password"] not in str(caught.value)


def test_check_names_pip_and_apt_when_paho_is_missing(tmp_path):
    # A 'paho' package that cannot be imported stands for one not installed.
    hidden = tmp_path / "hide" / "paho"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('No module named paho (hidden by the test)')\n")
    (tmp_path / "keiconf.py").write_text(
        "import queue\nfrom keilib.mqtt import MqttPublisher\n"
        "worker_def = [{'class': MqttPublisher, 'args': {'record_que': queue.Queue(), 'host': 'h'}}]\n")
    env = subprocess_env()
    env["PYTHONPATH"] = str(tmp_path / "hide") + ":" + env["PYTHONPATH"]
    done = subprocess.run([PYTHON, str(REPO / "kei.py"), "--check"], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "pip install 'kei[mqtt]'" in done.stderr and "sudo apt install python3-paho-mqtt" in done.stderr
    # with the package importable, the same config is valid
    done = subprocess.run([PYTHON, str(REPO / "kei.py"), "--check"], cwd=str(tmp_path), env=subprocess_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_a_second_kei_gets_its_own_node_id(tmp_path):
    first, second = default_node_id(str(tmp_path / "a")), default_node_id(str(tmp_path / "b"))
    assert first != second and first == default_node_id(str(tmp_path / "a"))
    one = MqttPublisher(queue.Queue(), node_id=first)
    two = MqttPublisher(queue.Queue(), node_id=second)
    ids = [p.discovery_config(("C3", "temp"))[1]["unique_id"] for p in (one, two)]
    assert ids[0] != ids[1]
    assert one.status_topic != two.status_topic and one.client_id != two.client_id


class Running:
    """A publisher thread on a FakeClock, stopped in ``close()``."""

    def __init__(self, port: int, **args):
        self.clock = FakeClock(T0)
        self.que: "queue.Queue" = queue.Queue()
        self.publisher = MqttPublisher(self.que, host="127.0.0.1", port=port, node_id="unit", clock=self.clock,
                                       reconnect_min=1, reconnect_max=1, **args)
        self.publisher.start()

    def put(self, *records: Record) -> None:
        for item in records:
            self.que.put(item)
        wait_for(lambda: self.que.empty() and self.que.unfinished_tasks >= 0, timeout=5)

    def close(self) -> None:
        assert self.publisher.stop(10)


@pytest.fixture
def running():
    made = []

    def make(port: int, **args) -> Running:
        made.append(Running(port, **args))
        return made[-1]

    try:
        yield make
    finally:
        for item in made:
            item.close()


@pytest.fixture
def subscribers():
    made = []

    def make(port: int, topics, **login) -> Subscriber:
        made.append(Subscriber(port, topics, **login))
        return made[-1]

    try:
        yield make
    finally:
        for item in made:
            item.close()


@needs_broker
def test_min_interval_sends_the_latest_value_once_the_interval_is_over(broker, running, subscribers, caplog):
    caplog.set_level(logging.INFO, logger="keilib.mqtt")
    sub = subscribers(broker.port, ["kei/unit/#"])
    run = running(broker.port, min_interval=10.0, discovery_prefix=None)
    # after the values sent again at connect (diagnostics come last), so none is sent twice
    wait_for(lambda: sub.last("kei/unit/diag/published"), timeout=10)
    run.put(record("temp", 20.5))
    wait_for(lambda: sub.seen("kei/unit/C3/temp"), timeout=5)
    run.put(record("temp", 20.6), record("temp", 20.7),                  # within the interval
            record("temp", 99.0, data_id=HISTORY_DATA_ID),             # history: never published
            ["C3", "hum", "55.5"],                                     # a keilog list: accepted
            "not a record")                                            # skipped, one line
    wait_for(lambda: sub.seen("kei/unit/C3/hum"), timeout=5)
    wait_for(lambda: "not a Record" in caplog.text, timeout=5)
    run.clock.advance(5)
    run.put(record("temp", 20.8))
    run.clock.advance(5.5)                                             # 10.5 s after the first
    wait_for(lambda: len(sub.seen("kei/unit/C3/temp")) >= 2, timeout=5)
    run.clock.advance(20)
    run.put(record("temp", 21.0))
    wait_for(lambda: len(sub.seen("kei/unit/C3/temp")) >= 3, timeout=5)
    assert [p for _, p, _ in sub.seen("kei/unit/C3/temp")] == ["20.5", "20.8", "21.0"]
    assert sub.last("kei/unit/C3/hum") == "55.5"
    assert caplog.text.count("not a Record") == 1


@needs_broker
def test_values_taken_while_the_broker_is_away_are_sent_on_connect(tmp_path, running, subscribers, caplog):
    caplog.set_level(logging.DEBUG)
    port = free_port()
    run = running(port, username="kei", password=PASSWORD)           # nothing listens yet
    run.put(record("temp", 1.0), record("temp", 2.0), record("hum", 40.0))
    down = Broker(tmp_path, port)
    try:
        down.start()
        sub = subscribers(port, ["kei/unit/#", "homeassistant/#"])
        wait_for(lambda: sub.last("kei/unit/C3/temp") == "2.0" and sub.last("kei/unit/C3/hum") == "40.0",
                 timeout=15, message="the latest values after the broker came")
        assert [p for _, p, r in sub.seen("kei/unit/C3/temp")] == ["2.0"]     # the latest only
        late = subscribers(port, ["kei/unit/C3/#"])
        wait_for(lambda: len(late.seen()) == 2, timeout=5, message="the stored values")
        assert sorted(late.seen()) == [("kei/unit/C3/hum", "40.0", True), ("kei/unit/C3/temp", "2.0", True)]
        config = json.loads(wait_for(lambda: sub.last("homeassistant/sensor/unit/c3_temp/config"), timeout=5))
        assert config["state_topic"] == "kei/unit/C3/temp" and "device_class" not in config
    finally:
        run.close()
        down.stop()
    assert PASSWORD not in caplog.text


@needs_broker
def test_read_commands_are_rate_limited(broker, running, subscribers):
    commands: "queue.Queue" = queue.Queue()
    sub = subscribers(broker.port, ["homeassistant/button/#"])
    run = running(broker.port, command_que=commands, read_interval=30)
    button = json.loads(wait_for(lambda: sub.last("homeassistant/button/unit/read_power/config"), timeout=10))
    assert button["command_topic"] == "kei/unit/read"
    for _ in range(3):
        sub.publish("kei/unit/read", "read")
        run.clock.advance(1)
    wait_for(lambda: commands.qsize() == 1, timeout=5)
    run.clock.advance(30)
    sub.publish("kei/unit/read", "read")
    wait_for(lambda: commands.qsize() == 2, timeout=5)
    assert [commands.get_nowait(), commands.get_nowait()] == ["read", "read"]


def readme_lines(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index(heading):]
    return section[section.index("```python\n") + 10:section.index("\n```", section.index("```python"))]


def test_the_readme_lines_added_to_the_example_config_are_valid(tmp_path):
    lines = readme_lines("## Home Assistant through MQTT")
    assert len(lines.splitlines()) == 3 and lines == readme_lines("### Home Assistant（MQTT）")
    (tmp_path / "keiconf.py").write_text((REPO / "keiconf_broute.py").read_text() + "\n" + lines + "\n")
    done = subprocess.run([PYTHON, str(REPO / "kei.py"), "--check"], cwd=str(tmp_path), env=subprocess_env(),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "MqttPublisher" in done.stdout


def make_certificates(directory) -> dict:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl"] + list(args), cwd=str(directory), check=True, capture_output=True, timeout=30)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=kei test CA")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, extra in (("server", ["-extfile", "san.ext"]), ("client", [])):
        run("req", *key, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=kei-" + name)
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", name + ".pem", "-days", "2", *extra)
    return {name: str(directory / name) for name in ("ca.pem", "server.pem", "server.key", "client.pem",
                                                     "client.key")}


@needs_broker
@pytest.mark.skipif(not shutil.which("openssl") or not MOSQUITTO_PASSWD, reason="openssl or mosquitto_passwd missing")
def test_tls_with_a_client_certificate_and_a_password(tmp_path, running, subscribers, caplog):
    caplog.set_level(logging.DEBUG)
    files = make_certificates(tmp_path)
    subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(tmp_path / "passwd"), "kei", PASSWORD], check=True,
                   capture_output=True, timeout=10)
    tls_port = free_port()
    # plain listener (for the test's subscriber) + a TLS listener that requires a client certificate
    server = Broker(tmp_path, extra="password_file %s\nallow_anonymous false\n"
                    "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n"
                    % (tmp_path / "passwd", tls_port, files["ca.pem"], files["server.pem"], files["server.key"]))
    try:
        server.start()
        sub = subscribers(server.port, ["kei/#"], username="kei", password=PASSWORD)
        wrong = running(tls_port, username="kei", password="wrong-Pw-4411", ca_file=files["ca.pem"],
                        cert_file=files["client.pem"], key_file=files["client.key"], discovery_prefix=None)
        wait_for(lambda: "refused the connection" in caplog.text, timeout=10, message="a wrong password refused")
        assert not sub.seen("kei/unit/status")
        wrong.close()
        good = running(tls_port, username="kei", password=PASSWORD, ca_file=files["ca.pem"],
                       cert_file=files["client.pem"], key_file=files["client.key"], discovery_prefix=None)
        good.put(record("temp", 23.5))
        wait_for(lambda: sub.last("kei/unit/C3/temp") == "23.5", timeout=10, message="a value over TLS")
        assert sub.last("kei/unit/status") == "online"
        assert "with TLS" in caplog.text
    finally:
        server.stop()
    assert PASSWORD not in caplog.text and "wrong-Pw-4411" not in caplog.text
