"""A real MQTT broker for tests: Debian's ``mosquitto`` on 127.0.0.1, a free
port and a temporary config, stopped in ``finally``; plus a paho subscriber
that keeps every message it sees."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from support import wait_for

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:<port>; ``stop()`` and ``start()`` again keep the port."""

    def __init__(self, directory: Path, port: Optional[int] = None, extra: str = ""):
        self.directory = directory
        self.port = port or free_port()
        self.process: Optional[subprocess.Popen] = None
        self.config = directory / "mosquitto.conf"
        # ``extra``: more settings, e.g. a password_file or a second (TLS) listener
        # user: mosquitto started as root drops to user 'mosquitto', which cannot
        # read the temporary files; stay the user the tests run as.
        self.config.write_text("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                               "user %s\nlog_dest file %s\n%s" % (
                                   self.port, pwd.getpwuid(os.getuid()).pw_name, directory / "mosquitto.log",
                                   extra))

    def start(self) -> "Broker":
        assert MOSQUITTO, "mosquitto is not installed (.ci/run installs it)"
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(self._accepts, timeout=10, interval=0.05, message="mosquitto listening")
        return self

    def _accepts(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError("mosquitto exited: %s" % self.process.stderr.read().decode(errors="replace"))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def broker(tmp_path) -> Iterator[Broker]:
    running = Broker(tmp_path)
    try:
        yield running.start()
    finally:
        running.stop()


_CLIENT_NUMBERS = itertools.count(1)   # a broker drops a client whose id connects again


class Subscriber:
    """A paho client subscribed to ``topics``; ``messages`` lists (topic, payload, retain)."""

    def __init__(self, port: int, topics: List[str], username: Optional[str] = None,
                 password: Optional[str] = None):
        import paho.mqtt.client as mqtt
        self.lock = threading.Lock()
        self.messages: List[Tuple[str, str, bool]] = []
        self.connects = 0
        client_id = "test-subscriber-%d-%d" % (port, next(_CLIENT_NUMBERS))
        try:                                    # paho-mqtt 2.x
            from paho.mqtt.enums import CallbackAPIVersion
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        except ImportError:                     # 1.6 (Debian 12): the same callbacks, fewer arguments
            self.client = mqtt.Client(client_id=client_id)
        self.client.reconnect_delay_set(1, 1)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.topics = topics
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        wait_for(lambda: self.connects, timeout=10, message="test subscriber connected")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, *properties: Any) -> None:
        for topic in self.topics:
            client.subscribe(topic, qos=1)
        with self.lock:
            self.connects += 1

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload.decode("utf-8", "replace"),
                                  bool(message.retain)))

    def seen(self, topic: Optional[str] = None, prefix: Optional[str] = None) -> List[Tuple[str, str, bool]]:
        with self.lock:
            return [m for m in self.messages
                    if (topic is None or m[0] == topic) and (prefix is None or m[0].startswith(prefix))]

    def last(self, topic: str) -> Optional[str]:
        got = self.seen(topic)
        return got[-1][1] if got else None

    def latest(self, prefix: str = "") -> Dict[str, str]:
        result: Dict[str, str] = {}
        for topic, payload, _ in self.seen(prefix=prefix):
            result[topic] = payload
        return result

    def mark(self) -> int:
        with self.lock:
            return len(self.messages)

    def since(self, mark: int) -> List[Tuple[str, str, bool]]:
        with self.lock:
            return list(self.messages[mark:])

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
