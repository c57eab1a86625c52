"""Watcher channels end to end with real local servers: a webhook receiver
(http.server), SMTP with STARTTLS and login (aiosmtpd), MQTT (mosquitto).
A channel that is down and comes back still delivers each message once;
secrets never reach the log."""

from __future__ import annotations

import json
import logging
import queue
import time

import pytest

from alertservers import MailServer, WebhookReceiver, free_port
from keilib.clock import FakeClock
from keilib.health import Registry
from keilib.record import Record
from keilib.watcher import Watcher
from support import wait_for

RULE = {"alert": "threshold", "sensor": "BR/E7", "above": 5000, "name": "power high"}
SECRET_PATH = "/services/T000/B000/XyZsEcReTpAtH"
SECRET_QUERY = "token=QqSeCrEtToKeN"
MAIL_PASSWORD = "mAiLpAsSwOrD-42"


def start_watcher(clock, **args):
    records = queue.Queue()
    watcher = Watcher(records, [RULE], interval=1, host="testbox", clock=clock, **args)
    watcher.registry = Registry()
    watcher.start()
    return watcher, records


def advance_until(clock, predicate, message, step=1.0, timeout=20.0):
    """Move the fake clock on (retries wait on it) until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + message)
        clock.advance(step)
        time.sleep(0.02)


def alert_and_clear(records, clock):
    records.put(Record(clock.now(), "BR", "E7", 6000))
    records.put(Record(clock.now(), "BR", "E7", 100))


def all_log_text(caplog):
    return "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)


def test_webhook_gets_start_and_clear_as_json():
    clock = FakeClock()
    receiver = WebhookReceiver()
    watcher = None
    try:
        watcher, records = start_watcher(clock, webhook_url=receiver.url("/hook?x=1"),
                                         webhook_headers={"Authorization": "Bearer abc"})
        alert_and_clear(records, clock)
        wait_for(lambda: receiver.count() == 2, timeout=10, message="two webhook posts")
        start, clear = receiver.bodies()
        assert start["event"] == "start" and clear["event"] == "clear"
        assert start["text"] == start["content"] == "kei ALERT: power high: BR/E7 = 6000 is above 5000"
        assert start["rule"] == "power high" and start["alert"] == "threshold"
        assert start["subject"] == "BR/E7" and start["value"] == 6000 and start["host"] == "testbox"
        assert start["since"] == clock.now().isoformat(timespec="seconds")
        assert clear["text"].startswith("kei CLEARED: power high: BR/E7 = 100 is back")
        path, headers, _ = receiver.requests[0]
        assert path == "/hook?x=1" and headers["Authorization"] == "Bearer abc"
        assert headers["Content-Type"] == "application/json"
        assert watcher.health.counters["sent_webhook"] == 2
    finally:
        if watcher is not None:
            assert watcher.stop(5)
        receiver.close()


def test_webhook_text_format_posts_the_text_alone():
    clock = FakeClock()
    receiver = WebhookReceiver()
    watcher = None
    try:
        watcher, records = start_watcher(clock, webhook_url=receiver.url("/kei-topic"), webhook_format="text")
        records.put(Record(clock.now(), "BR", "E7", 7000))
        wait_for(lambda: receiver.count() == 1, timeout=10, message="a webhook post")
        _, headers, body = receiver.requests[0]
        assert body.decode() == "kei ALERT: power high: BR/E7 = 7000 is above 5000"
        assert headers["Content-Type"].startswith("text/plain")
    finally:
        if watcher is not None:
            assert watcher.stop(5)
        receiver.close()


def test_webhook_down_then_up_delivers_each_message_once_and_never_logs_the_url(caplog):
    clock = FakeClock()
    port = free_port()                           # nothing listens there yet
    url = "http://127.0.0.1:%d%s?%s" % (port, SECRET_PATH, SECRET_QUERY)
    receiver = None
    watcher = None
    caplog.set_level(logging.DEBUG)          # urllib3 too: its DEBUG line names the request path
    try:
        watcher, records = start_watcher(clock, webhook_url=url)
        records.put(Record(clock.now(), "BR", "E7", 6000))
        wait_for(lambda: watcher.health.counters.get("send_failures_webhook", 0) >= 1, timeout=10,
                 message="a failed send")
        advance_until(clock, lambda: watcher.health.counters.get("send_failures_webhook", 0) >= 2,
                      "a retry that fails too")
        receiver = WebhookReceiver(port)
        receiver.fail_next = 1                   # up, but answering 503 once: retried again
        advance_until(clock, lambda: receiver.count() >= 1, "the alert after the server came up")
        for _ in range(30):                      # much more time: no second copy
            clock.advance(60)
        time.sleep(0.2)
        assert [b["event"] for b in receiver.bodies()] == ["start"]
        assert receiver.requests[0][0] == SECRET_PATH + "?" + SECRET_QUERY
        assert watcher.health.counters["sent_webhook"] == 1
        assert watcher.health.counters["send_failures_webhook"] >= 3
        log = all_log_text(caplog)
        assert "sending to webhook http://127.0.0.1:%d failed" % port in log
        assert "HTTP 503" in log
        assert '"POST <redacted> HTTP/1.1" 200' in log       # urllib3's line, without the path
        for secret in ("XyZsEcReTpAtH", "QqSeCrEtToKeN", "B000"):
            assert secret not in log
    finally:
        if watcher is not None:
            assert watcher.stop(5)
        if receiver is not None:
            receiver.close()


def test_mail_with_starttls_and_login(tmp_path, caplog):
    pytest.importorskip("aiosmtpd", reason="aiosmtpd is a test dependency (requirements-dev.txt)")
    caplog.set_level(logging.DEBUG)
    server = MailServer(tmp_path, "kei@example.org", MAIL_PASSWORD)
    clock = FakeClock()
    watcher = None
    try:
        watcher, records = start_watcher(clock, mail={
            "host": "127.0.0.1", "port": server.port, "username": "kei@example.org",
            "password": MAIL_PASSWORD, "sender": "kei@example.org",
            "to": ["owner@example.org", "other@example.org"], "ca_file": server.cert})
        alert_and_clear(records, clock)
        wait_for(lambda: len(server.messages) == 2, timeout=15, message="two mails")
        first, second = server.messages
        assert first["Subject"] == "kei ALERT: power high: BR/E7 = 6000 is above 5000"
        assert first["To"] == "owner@example.org, other@example.org"
        assert "event: start" in first.get_payload() and "host: testbox" in first.get_payload()
        assert second["Subject"].startswith("kei CLEARED: power high")
        assert server.logins == [("kei@example.org", True)] * 2
        assert MAIL_PASSWORD not in all_log_text(caplog)
    finally:
        if watcher is not None:
            assert watcher.stop(5)
        server.close()


def test_mail_wrong_password_is_retried_and_never_logged(tmp_path, caplog):
    pytest.importorskip("aiosmtpd", reason="aiosmtpd is a test dependency (requirements-dev.txt)")
    caplog.set_level(logging.DEBUG)
    server = MailServer(tmp_path, "kei@example.org", "the-right-one")
    clock = FakeClock()
    watcher = None
    try:
        watcher, records = start_watcher(clock, mail={
            "host": "127.0.0.1", "port": server.port, "username": "kei@example.org",
            "password": MAIL_PASSWORD, "sender": "kei@example.org", "to": "owner@example.org",
            "ca_file": server.cert})
        records.put(Record(clock.now(), "BR", "E7", 6000))
        advance_until(clock, lambda: len(server.logins) >= 2, "two refused logins")
        assert server.messages == [] and not any(ok for _, ok in server.logins)
        assert watcher.is_alive()
        log = all_log_text(caplog)
        assert "sending to mail via 127.0.0.1:%d failed (SMTPAuthenticationError" % server.port in log
        assert MAIL_PASSWORD not in log
    finally:
        if watcher is not None:
            assert watcher.stop(5)
        server.close()


def test_mqtt_topic_gets_the_json_payload(tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is a test dependency (requirements-dev.txt)")
    from mqttbroker import Broker, Subscriber
    broker = Broker(tmp_path).start()
    subscriber = None
    watcher = None
    clock = FakeClock()
    try:
        subscriber = Subscriber(broker.port, ["home/alerts"])
        watcher, records = start_watcher(clock, mqtt={"host": "127.0.0.1", "port": broker.port,
                                                      "topic": "home/alerts"})
        alert_and_clear(records, clock)
        wait_for(lambda: len(subscriber.seen("home/alerts")) == 2, timeout=15, message="two MQTT messages")
        start, clear = [json.loads(payload) for _, payload, _ in subscriber.seen("home/alerts")]
        assert (start["event"], clear["event"]) == ("start", "clear")
        assert start["text"] == "kei ALERT: power high: BR/E7 = 6000 is above 5000"
        assert not any(retain for _, _, retain in subscriber.seen("home/alerts"))
    finally:
        if watcher is not None:
            assert watcher.stop(5)
        if subscriber is not None:
            subscriber.close()
        broker.stop()


def test_mqtt_broker_down_then_up_delivers_once(tmp_path):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is a test dependency (requirements-dev.txt)")
    from mqttbroker import Broker, Subscriber
    broker = Broker(tmp_path)                 # not started yet
    subscriber = None
    watcher = None
    clock = FakeClock()
    try:
        watcher, records = start_watcher(clock, mqtt={"host": "127.0.0.1", "port": broker.port})
        records.put(Record(clock.now(), "BR", "E7", 6000))
        wait_for(lambda: watcher.health.counters.get("send_failures_mqtt", 0) >= 1, timeout=10,
                 message="a failed publish")
        broker.start()
        subscriber = Subscriber(broker.port, ["kei/alerts"])
        advance_until(clock, lambda: subscriber.seen("kei/alerts"), "the alert after the broker came up")
        for _ in range(10):
            clock.advance(60)
        time.sleep(0.2)
        assert [json.loads(p)["event"] for _, p, _ in subscriber.seen("kei/alerts")] == ["start"]
    finally:
        if watcher is not None:
            assert watcher.stop(5)
        if subscriber is not None:
            subscriber.close()
        broker.stop()


def test_a_hanging_webhook_does_not_hold_up_the_rules():
    import socket
    silent = socket.socket()                 # accepts connections (the kernel does), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    clock = FakeClock()
    watcher = None
    try:
        watcher, records = start_watcher(clock, webhook_url="http://127.0.0.1:%d/hook" % silent.getsockname()[1])
        alert_and_clear(records, clock)
        records.put(Record(clock.now(), "BR", "E7", 7000))
        wait_for(lambda: len(watcher.history) == 3, timeout=5, message="start, clear, start while the webhook hangs")
        assert [e.event for e in watcher.history] == ["start", "clear", "start"]
        assert watcher.channels[0].pending() == 3 and watcher.health.counters.get("sent_webhook") is None
    finally:
        if watcher is not None:
            assert watcher.stop(10)
        silent.close()
