"""Watcher rules on a FakeClock with real Records and real Health objects:
when an alert starts, reminds and clears, and that bad rules are refused."""

from __future__ import annotations

import logging
import queue

import pytest

from keilib.clock import FakeClock
from keilib.errors import ConfigError
from keilib.health import Health, Registry
from keilib.record import HISTORY_DATA_ID, Record
from keilib.watcher import Watcher
from support import wait_for


def make(rules, remind=3600, **args):
    clock = FakeClock()
    watcher = Watcher(queue.Queue(), rules, remind=remind, interval=1, host="testbox", clock=clock, **args)
    watcher.registry = Registry()
    return watcher, clock


def reading(clock, sensor, value, data_id="x"):
    unit, name = sensor.split("/")
    return Record(clock.now().replace(microsecond=0), unit, name, value, data_id)


def feed(watcher, clock, sensor, values, every=10.0):
    """One reading every ``every`` seconds; the events of each look."""
    events = []
    for value in values:
        watcher.take(reading(clock, sensor, value))
        events += watcher.evaluate()
        clock.advance(every)
    return events


def kinds(events):
    return [e.event for e in events]


def test_threshold_above_with_minimum_duration_and_hysteresis():
    watcher, clock = make([{"alert": "threshold", "sensor": "BR/E7", "above": 5000, "for": 120,
                            "hysteresis": 500, "name": "power high"}])
    # over for 110 s only: nothing; a dip below the limit-hysteresis resets the timer
    assert feed(watcher, clock, "BR/E7", [5200] * 12 + [4400]) == []
    # over again; 4800 is inside the hysteresis band: it still counts as over
    events = feed(watcher, clock, "BR/E7", [5100, 5300, 4800, 5100] + [5200] * 9)
    assert kinds(events) == ["start"]
    start = events[0]
    assert start.text.startswith("kei ALERT: power high: BR/E7 = ")
    assert "above 5000" in start.text and start.subject == "BR/E7"
    assert start.payload()["host"] == "testbox" and start.payload()["alert"] == "threshold"
    # inside the band: no clear, no second start
    assert feed(watcher, clock, "BR/E7", [4700, 4600, 4999]) == []
    events = feed(watcher, clock, "BR/E7", [4499])
    assert kinds(events) == ["clear"]
    assert events[0].text.startswith("kei CLEARED: power high: BR/E7 = 4499 is back (lasted")


def test_threshold_below_and_history_readings_ignored():
    watcher, clock = make([{"alert": "threshold", "sensor": "fz/temp", "below": -10, "hysteresis": 1}])
    watcher.take(Record(clock.now(), "fz", "temp", -20.0, HISTORY_DATA_ID))   # back-filled: not now
    assert watcher.evaluate() == []
    events = feed(watcher, clock, "fz/temp", [-12.0, -9.5, -9.2, -8.9])
    assert kinds(events) == ["start", "clear"]
    assert "below -10" in events[0].detail
    assert events[0].value == -12.0 and events[1].value == -8.9   # -9.5, -9.2: inside the band


def test_legacy_list_items_are_read_and_garbage_is_skipped(caplog):
    watcher, clock = make([{"alert": "threshold", "sensor": "ar1/temp", "above": 30}])
    with caplog.at_level(logging.WARNING, logger="keilib.watcher"):
        watcher.take(["ar1", "temp"])          # not a reading: one line, skipped
        watcher.take(["ar1", "temp", "31.5", "7"])
    assert "skipped an unusable item" in caplog.text
    assert kinds(watcher.evaluate()) == ["start"]


def test_reminder_at_most_every_remind_seconds_and_no_storm():
    watcher, clock = make([{"alert": "threshold", "sensor": "BR/E7", "above": 5000}], remind=3600)
    events = feed(watcher, clock, "BR/E7", [6000] * 1000, every=10)     # 10000 s over the limit
    assert kinds(events) == ["start", "reminder", "reminder"]
    assert events[1].since == events[0].since and events[1].text.startswith("kei STILL:")


def test_remind_none_never_reminds():
    watcher, clock = make([{"alert": "threshold", "sensor": "BR/E7", "above": 5000}], remind=None)
    assert kinds(feed(watcher, clock, "BR/E7", [6000] * 100, every=600)) == ["start"]


def test_silent_sensor():
    watcher, clock = make([{"alert": "silent", "sensor": "u1/temp", "for": 600}])
    assert feed(watcher, clock, "u1/temp", [20.0] * 5, every=100) == []
    watcher.take(reading(clock, "u1/hum", 50.0))       # another sensor does not count
    clock.advance(599 - 100)
    assert watcher.evaluate() == []
    clock.advance(2)
    events = watcher.evaluate()
    assert kinds(events) == ["start"] and "no reading in 10 min" in events[0].text
    clock.advance(60)
    assert watcher.evaluate() == []
    watcher.take(reading(clock, "u1/temp", 21.0))
    assert kinds(watcher.evaluate()) == ["clear"]


def test_silent_sensor_that_never_spoke_counts_from_start():
    watcher, clock = make([{"alert": "silent", "sensor": "u9/temp", "for": 300}])
    assert watcher.evaluate() == []
    clock.advance(300)
    events = watcher.evaluate()
    assert kinds(events) == ["start"] and "u9/temp: no reading" in events[0].text


def test_link_down_for_minutes():
    watcher, clock = make([{"alert": "link_down", "for": 300}])
    reader = watcher.registry.add(Health("worker_def[0] (BrouteReader)", "BrouteReader"))
    recorder = watcher.registry.add(Health("worker_def[1] (FileRecorder)", "FileRecorder"))
    recorder.state("worker", "RUNNING")     # no link state: not a meter reader
    reader.state("worker", "RUNNING")
    reader.state("link", "SCAN")
    assert watcher.evaluate() == []
    clock.advance(200)
    reader.state("link", "POLL")
    assert watcher.evaluate() == []          # up again before 5 min: nothing
    reader.state("link", "JOIN")
    assert watcher.evaluate() == []          # seen down from here (the watcher looks every 'interval')
    clock.advance(299)
    assert watcher.evaluate() == []
    clock.advance(1)
    events = watcher.evaluate()
    assert kinds(events) == ["start"] and "link JOIN for 5 min" in events[0].text
    assert events[0].subject == "worker_def[0] (BrouteReader)"
    reader.state("link", "POLL")
    assert kinds(watcher.evaluate()) == ["clear"]
    # a reader waiting to be restarted is down too, whatever its last link state
    reader.state("worker", "BACKOFF")
    watcher.evaluate()
    clock.advance(300)
    events = watcher.evaluate()
    assert kinds(events) == ["start"] and "worker restarting" in events[0].text


def test_spool_stale_measured_from_last_success_or_first_waiting():
    watcher, clock = make([{"alert": "spool_stale", "for": 6 * 3600, "worker": "HttpPostUploader"}])
    uploader = watcher.registry.add(Health("worker_def[2] (HttpPostUploader)", "HttpPostUploader"))
    other = watcher.registry.add(Health("worker_def[3] (InfluxWriter)", "InfluxWriter"))
    other.gauge("spool_depth", 500)           # not the watched worker
    wall = clock.now().timestamp()
    uploader.gauge("spool_depth", 0)
    uploader.stamp("last_success", wall - 10 * 3600)      # long ago, but nothing is waiting
    assert watcher.evaluate() == []
    clock.advance(3600)
    uploader.gauge("spool_depth", 3)          # data waits from now on: the age counts from here
    assert watcher.evaluate() == []
    clock.advance(6 * 3600 - 1)
    assert watcher.evaluate() == []
    clock.advance(1)
    events = watcher.evaluate()
    assert kinds(events) == ["start"]
    assert "3 items waiting, nothing delivered for 6.0 h" in events[0].text
    # a delivery (stamp) clears it even though more is still waiting
    uploader.stamp("last_success", clock.now().timestamp())
    assert kinds(watcher.evaluate()) == ["clear"]


def test_restart_loop():
    watcher, clock = make([{"alert": "restart_loop", "count": 3, "within": 1800}])
    worker = watcher.registry.add(Health("worker_def[0] (SerialReader)", "SerialReader"))
    worker.count("restarts", 5)               # before the watcher started: not counted
    assert watcher.evaluate() == []
    for _ in range(2):
        clock.advance(600)
        worker.count("restarts")
        assert watcher.evaluate() == []
    clock.advance(1000)                       # the first is 1600 s old: still inside 1800 s
    worker.count("restarts")
    events = watcher.evaluate()
    assert kinds(events) == ["start"] and "restarted 3 times in 30 min" in events[0].text
    clock.advance(300)
    assert watcher.evaluate() == []           # two recent restarts left: still on
    clock.advance(3600)                       # a reminder while it lasts (remind=3600)...
    worker.count("restarts")
    assert kinds(watcher.evaluate()) == ["reminder"]    # ...even with fewer than 3 in the window
    clock.advance(1799)
    assert watcher.evaluate() == []
    clock.advance(2)
    assert kinds(watcher.evaluate()) == ["clear"]


def test_one_rule_many_subjects_alert_separately():
    watcher, clock = make([{"alert": "restart_loop", "count": 1, "within": 60}])
    a = watcher.registry.add(Health("a", "A"))
    b = watcher.registry.add(Health("b", "B"))
    watcher.evaluate()
    a.count("restarts")
    b.count("restarts")
    assert sorted(e.subject for e in watcher.evaluate()) == ["a", "b"]


def test_log_channel_is_always_there(caplog):
    watcher, clock = make([{"alert": "threshold", "sensor": "BR/E7", "above": 1}])
    with caplog.at_level(logging.INFO, logger="keilib.watcher"):
        feed(watcher, clock, "BR/E7", [5, 0])
    levels = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert levels == [("WARNING", "kei ALERT"), ("INFO", "kei CLEARED")]


def test_runs_as_a_thread_on_the_fake_clock():
    clock = FakeClock()
    records = queue.Queue()
    watcher = Watcher(records, [{"alert": "threshold", "sensor": "u/p", "above": 10, "for": 60}],
                      interval=5, clock=clock)
    watcher.registry = Registry()
    watcher.start()
    try:
        records.put(Record(clock.now(), "u", "p", 11))
        wait_for(lambda: watcher.health.counters.get("in") == 1, message="the reading taken")
        assert list(watcher.history) == []
        def alerted():
            clock.advance(5)            # the watcher looks every 5 s of the fake clock
            return watcher.history
        wait_for(alerted, message="the alert")
        assert clock.monotonic() - 1000 >= 60
        assert watcher.history[0].event == "start"
    finally:
        assert watcher.stop(5)


@pytest.mark.parametrize("rules, message", [
    ([], "argument 'rules' must be a non-empty list"),
    ([{"alert": "treshold", "sensor": "BR/E7"}], "argument 'rules[0]' must be a dict whose 'alert' is one of"),
    ([{"alert": "threshold", "sensor": "BR/E7"}], "needs exactly one of 'above' or 'below'"),
    ([{"alert": "threshold", "sensor": "BR/E7", "above": 1, "below": 0}], "exactly one of"),
    ([{"alert": "threshold", "sensor": "E7", "above": 1}], "argument 'rules[0]['sensor']' must be 'UNIT/SENSOR'"),
    ([{"alert": "threshold", "sensor": "BR/E7", "above": "5kW"}], "argument 'rules[0]['above']' must be a finite number"),
    ([{"alert": "threshold", "sensor": "BR/E7", "above": 1, "for": -1}], "argument 'rules[0]['for']' must be a number from 0"),
    ([{"alert": "threshold", "sensor": "BR/E7", "above": 1, "hysteresis": -2}], "['hysteresis']' must be a number of at least 0"),
    ([{"alert": "threshold", "sensor": "BR/E7", "above": 1, "minutes": 2}], "unknown key 'minutes'"),
    ([{"alert": "silent", "sensor": "BR/E7"}], "alert 'silent' needs 'for'"),
    ([{"alert": "silent", "sensor": "BR/E7", "for": 0}], "['for']' must be a number from 1"),
    ([{"alert": "link_down", "for": 60, "worker": ""}], "['worker']' must be a worker's class name"),
    ([{"alert": "spool_stale"}], "alert 'spool_stale' needs 'for'"),
    ([{"alert": "restart_loop", "count": 0, "within": 60}], "['count']' must be an integer from 1 to 1000"),
    ([{"alert": "restart_loop", "count": 2}], "needs 'within'"),
    ([{"alert": "silent", "sensor": "a/b", "for": 5, "name": "two\nlines"}], "['name']' must be one line"),
])
def test_bad_rules_are_config_errors(rules, message):
    with pytest.raises(ConfigError) as caught:
        Watcher(queue.Queue(), rules)
    assert message in str(caught.value)


@pytest.mark.parametrize("args, message", [
    ({"record_que": None}, "argument 'record_que' must be a queue.Queue"),
    ({"remind": 5}, "argument 'remind' must be a number of at least 60"),
    ({"interval": 0}, "argument 'interval' must be a number from 0.1"),
    ({"webhook_url": "ftp://x/y"}, "argument 'webhook_url' must be an http:// or https:// URL"),
    ({"webhook_url": "http://x/y", "webhook_format": "xml"}, "argument 'webhook_format' must be one of"),
    ({"webhook_headers": {"a": "b"}}, "argument 'webhook_headers' needs 'webhook_url'"),
    ({"mail": {"host": "m", "sender": "a@b", "to": "c@d", "username": "u"}}, "'username' and 'password'"),
    ({"mail": {"host": "m", "sender": "a@b", "to": "nobody"}}, "key 'to' must be an e-mail address"),
    ({"mail": {"host": "m", "sender": "a@b", "to": "c@d", "username": "u", "password": "p",
               "starttls": False}}, "a login needs 'starttls': True"),
    ({"mail": {"host": "m", "sender": "a@b", "to": "c@d", "smtp": 1}}, "argument 'mail': unknown key 'smtp'"),
    ({"mqtt": {"host": "b", "topic": "kei/#"}}, "argument 'mqtt['topic']' must be a topic without"),
    ({"mqtt": {"host": "b", "qos": 3}}, "argument 'mqtt['qos']' must be one of 0, 1, 2"),
    ({"mqtt": {"host": "b", "ca_file": "/no/such/ca.pem"}}, "argument 'mqtt' key 'ca_file' must name an existing"),
    ({"mail": {"host": "m", "sender": "a@b", "to": "c@d", "ca_file": 5}}, "argument 'mail' key 'ca_file' must"),
])
def test_bad_arguments_are_config_errors(args, message):
    full = {"record_que": queue.Queue(), "rules": [{"alert": "link_down", "for": 60}]}
    full.update(args)
    with pytest.raises(ConfigError) as caught:
        Watcher(**full)
    assert message in str(caught.value)


def _check(tmp_path, config, hide_paho):
    import subprocess
    from support import PYTHON, REPO, subprocess_env
    (tmp_path / "keiconf.py").write_text("import queue\nfrom keilib.watcher import Watcher\nq = queue.Queue()\n"
                                        + config)
    env = subprocess_env()
    if hide_paho:        # a 'paho' package that cannot be imported stands for one not installed
        hidden = tmp_path / "hide" / "paho"
        hidden.mkdir(parents=True, exist_ok=True)
        (hidden / "__init__.py").write_text("raise ImportError('No module named paho (hidden by the test)')\n")
        env["PYTHONPATH"] = str(tmp_path / "hide") + ":" + env["PYTHONPATH"]
    return subprocess.run([PYTHON, str(REPO / "kei.py"), "--check"], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=30)


def test_check_paho_needed_only_for_the_mqtt_channel(tmp_path):
    plain = "worker_def = [{'class': Watcher, 'args': {'record_que': q, 'rules': [{'alert': 'link_down', 'for': 60}]}}]\n"
    done = _check(tmp_path, plain, hide_paho=True)
    assert done.returncode == 0, done.stderr
    with_mqtt = plain.replace("}]}}]", "}], 'mqtt': {'host': 'broker'}}}]")
    done = _check(tmp_path, with_mqtt, hide_paho=True)
    assert done.returncode == 2
    assert "worker_def[0] (Watcher): argument 'mqtt' needs the Python package paho-mqtt" in done.stderr
    assert "pip install 'kei[mqtt]'" in done.stderr and "sudo apt install python3-paho-mqtt" in done.stderr


def test_check_names_the_entry_and_the_rule(tmp_path):
    done = _check(tmp_path, "worker_def = [{'class': Watcher, 'args': {'record_que': q, 'rules': "
                            "[{'alert': 'silent', 'sensor': 'BR/E7', 'for': 'ten minutes'}]}}]\n", hide_paho=False)
    assert done.returncode == 2
    assert "worker_def[0] (Watcher): argument 'rules[0]['for']' must be a number from 1" in done.stderr


@pytest.mark.parametrize("heading", ["## Alerts", "### アラート（通知）"])
def test_readme_example_config_builds(heading):
    """The README's example (English and Japanese) is a valid Watcher."""
    pytest.importorskip("paho.mqtt.client", reason="the example has the MQTT channel (requirements-dev.txt)")
    import re
    from support import REPO
    text = (REPO / "README.md").read_text()
    section = text[text.index(heading + "\n"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    space = {"record_que": queue.Queue(), "worker_def": []}
    exec(compile(code, "README.md", "exec"), space)
    entry = space["worker_def"][0]
    watcher = entry["class"](**entry["args"])
    assert [r.kind for r in watcher.rules] == ["threshold", "threshold", "silent", "link_down",
                                                "spool_stale", "restart_loop"]
    assert [c.kind for c in watcher.channels] == ["webhook", "mail", "mqtt"]
