"""InfluxWriter against real VictoriaMetrics and InfluxDB 1.6 (tests/servers.py).

A tiny local HTTP server stands in only where no real server gives the
answer on demand (429 with Retry-After, a 401 that echoes the token)."""

from __future__ import annotations

import datetime
import http.server
import logging
import queue
import threading
from pathlib import Path

import pytest
import requests

from keilib.errors import ConfigError
from keilib.influx import InfluxWriter, retry_after_seconds
from keilib.output import Outcome
from keilib.record import Record
from servers import InfluxDB, VictoriaMetrics, free_port, influxdb, victoria  # noqa: F401
from support import wait_for

T0 = datetime.datetime(2026, 5, 20, 14, 0, 0)
TOKEN = "tok-3f9a-very-secret-token"


def readings(n, start=T0, sensor="E7"):
    return [Record(start + datetime.timedelta(seconds=10 * i), "BR", sensor, 1000 + i) for i in range(n)]


@pytest.fixture
def make_writer(tmp_path):
    made = []

    def make(url, record_que=None, start=True, **kwargs):
        record_que = record_que if record_que is not None else queue.Queue()
        options = dict(spool_dir=tmp_path / "spool", retry_min=0.05, retry_max=0.2, timeout=5,
                       batch_seconds=0.05, site="home")
        options.update(kwargs)
        if "bucket" not in options and "database" not in options:
            options["database"] = "kei"
        writer = InfluxWriter(record_que, url, **options)
        made.append(writer)
        if start:
            writer.start()
        return writer, record_que

    yield make
    for writer in made:
        assert writer.stop(5)


def spooled(spool_dir: Path) -> list:
    """The units and batches waiting in a spool directory."""
    return sorted(p.name for p in Path(spool_dir).glob("*") if p.suffix in (".item", ".batch"))


def vm_samples(vm, sensor="E7"):
    """[(epoch ms, value)] of kei_value for one sensor, every raw sample."""
    out = []
    for series in vm.export('{__name__="kei_value",sensor="%s"}' % sensor):
        out += list(zip(series["timestamps"], series["values"]))
    return sorted(out)


def expected(records):
    return sorted((int(r.timestamp.timestamp()) * 1000, float(r.value)) for r in records)


# -- configuration and verdicts (no I/O) ---------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    (dict(), "either database"),
    (dict(database="a", bucket="b", org="o"), "either database"),
    (dict(bucket="b"), "org"),
    (dict(database="a", username="u"), "together"),
    (dict(database="a", token="t", username="u", password="p"), "not both"),
    (dict(database="a", site="two\nlines"), "site"),
    (dict(database="a", timeout=0), "timeout"),
    (dict(database="a", batch_seconds=-1), "batch_seconds"),
])
def test_bad_configuration_is_a_config_error(tmp_path, kwargs, words):
    with pytest.raises(ConfigError, match=words):
        InfluxWriter(queue.Queue(), "http://127.0.0.1:8086", spool_dir=tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists()          # no I/O in a constructor


@pytest.mark.parametrize("url", ["ftp://x", "http://u:p@host:8086", "http://h/?db=x", 5])
def test_bad_url_is_a_config_error(tmp_path, url):
    with pytest.raises(ConfigError, match="url"):
        InfluxWriter(queue.Queue(), url, database="kei", spool_dir=tmp_path / "s")


def test_verdicts_for_server_answers(tmp_path):
    writer = InfluxWriter(queue.Queue(), "http://127.0.0.1:1", database="kei", token=TOKEN,
                          spool_dir=tmp_path / "s")
    assert writer.judge(204, "").kind == Outcome.OK
    bad = writer.judge(400, '{"error":"partial write: field type conflict"}')
    assert bad.kind == Outcome.REJECT and "field type conflict" in bad.reason
    assert writer.judge(422, '{"code":"unprocessable","message":"points beyond retention"}').kind == Outcome.REJECT
    assert writer.judge(413, "too big").kind == Outcome.TOO_LARGE
    for status in (401, 403, 404):
        verdict = writer.judge(status, '{"error":"authorization failed %s"}' % TOKEN)
        assert verdict.kind == Outcome.RETRY and verdict.loud and TOKEN not in verdict.reason
    limited = writer.judge(429, "slow down", "7")
    assert limited.kind == Outcome.WAIT and limited.after == 7
    assert writer.judge(429, "slow down").kind == Outcome.RETRY
    unavailable = writer.judge(503, "", "12")
    assert unavailable.kind == Outcome.RETRY and unavailable.after == 12 and not unavailable.loud
    assert writer.judge(503, "", None).kind == Outcome.RETRY
    assert writer.judge(500, "boom", None).after is None


def test_retry_after_header_forms():
    assert retry_after_seconds("12") == 12
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480) == 30
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


# -- real servers ----------------------------------------------------------------

def test_every_reading_reaches_victoriametrics_v1_with_its_timestamp(victoria, make_writer):  # noqa: F811
    records = readings(50) + [Record(T0.replace(microsecond=500000), "1", "temp", 21.5)]
    writer, que = make_writer(victoria.url)
    for record in records:
        que.put(record)
    que.put("not a record")                     # skipped with one line
    que.put(["2", "hum", "55.5", "x"])          # a keilog list: stamped on arrival
    wait_for(lambda: writer.health.counters.get("delivered") and not spooled(writer.spool.directory)
             and writer.health.counters.get("in") == len(records) + 2, timeout=20)
    assert vm_samples(victoria) == expected(records[:-1])
    assert victoria.export('{__name__="kei_value",sensor="hum"}')[0]["values"] == [55.5]
    [temp] = victoria.export('{__name__="kei_value",sensor="temp"}')
    assert temp["timestamps"] == [int(T0.timestamp()) * 1000 + 500] and temp["values"] == [21.5]
    assert temp["metric"]["site"] == "home" and temp["metric"]["unit"] == "1"


def test_v2_api_with_token_reaches_victoriametrics_and_the_token_is_never_logged(
        victoria, make_writer, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    records = readings(20)
    writer, que = make_writer(victoria.url, bucket="kei", org="home", token=TOKEN)
    for record in records:
        que.put(record)
    wait_for(lambda: len(vm_samples(victoria)) == 20, timeout=20)
    assert vm_samples(victoria) == expected(records)
    assert "/api/v2/write" in caplog.text
    assert TOKEN not in caplog.text


def test_server_away_then_back_nothing_lost_or_duplicated(tmp_path, make_writer):
    vm = VictoriaMetrics(tmp_path / "vm")
    try:
        vm.start()
        writer, que = make_writer(vm.url)
        first = readings(10)
        for record in first:
            que.put(record)
        wait_for(lambda: len(vm_samples(vm)) == 10, timeout=20)
        vm.stop()
        second = readings(15, start=T0 + datetime.timedelta(hours=1))
        for record in second:
            que.put(record)
        wait_for(lambda: writer.health.counters.get("retries", 0) >= 2, timeout=20)
        assert spooled(writer.spool.directory)              # kept while the server is away
        vm.start()                                          # same port, same data
        wait_for(lambda: not spooled(writer.spool.directory), timeout=20)
        assert vm_samples(vm) == expected(first + second)
    finally:
        vm.stop()


def test_influxdb_wrong_password_is_loud_and_nothing_is_lost_once_fixed(tmp_path, make_writer, caplog):
    server = InfluxDB(tmp_path / "influx", auth=True)
    try:
        server.start()
        server.create_database("kei")
        records = readings(12)
        que = queue.Queue()
        for record in records:
            que.put(record)
        bad_password = "wrong-pw-1234"
        writer, _ = make_writer(server.url, record_que=que, username=server.ADMIN, password=bad_password)
        wait_for(lambda: writer.health.counters.get("retries", 0) >= 2 and que.empty(), timeout=20)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and "HTTP 401" in r.getMessage()]
        assert errors and "authorization failed" in errors[0].getMessage()
        assert spooled(writer.spool.directory)
        assert writer.stop(5)
        # The user fixes the password and restarts: the spool is delivered.
        fixed, _ = make_writer(server.url, record_que=que, username=server.ADMIN,
                               password=server.ADMIN_PASSWORD)
        wait_for(lambda: not spooled(fixed.spool.directory), timeout=20)
        [series] = server.query("SELECT value FROM kei", db="kei")
        assert sorted((t, v) for t, v in series["values"]) == expected(records)
        assert bad_password not in caplog.text and server.ADMIN_PASSWORD not in caplog.text
    finally:
        server.stop()


def test_influxdb_field_type_conflict_is_rejected_for_good_with_the_message(influxdb, make_writer, caplog):  # noqa: F811
    influxdb.create_database("kei")
    stamp = int(T0.timestamp())
    # Someone else's integer field 'value' in the same series: our float conflicts.
    answer = requests.post(influxdb.url + "/write", params={"db": "kei", "precision": "s"},
                           data=b"kei,sensor=E7,site=home,unit=BR value=5i %d\n" % stamp, timeout=10)
    assert answer.status_code == 204
    writer, que = make_writer(influxdb.url)
    que.put(readings(1)[0])
    wait_for(lambda: writer.health.counters.get("rejected"), timeout=20)
    rejected = list((writer.spool.directory / "rejected").glob("*"))
    assert rejected and "value=1000.0" in rejected[0].read_text()
    assert any("field type conflict" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    # Later data goes on (field types are per measurement and shard: a month later).
    que.put(Record(T0 + datetime.timedelta(days=30), "BR", "E0", 12.5))
    wait_for(lambda: influxdb.query("SELECT value FROM kei WHERE sensor='E0'", db="kei"), timeout=20)


def test_missing_database_is_loud_and_kept(influxdb, make_writer, caplog):  # noqa: F811
    writer, que = make_writer(influxdb.url, database="nope")
    que.put(readings(1)[0])
    wait_for(lambda: any(r.levelno == logging.ERROR and "HTTP 404" in r.getMessage()
                         for r in caplog.records), timeout=20)
    assert spooled(writer.spool.directory)
    influxdb.create_database("nope")
    wait_for(lambda: not spooled(writer.spool.directory), timeout=20)
    assert influxdb.query("SELECT value FROM kei", db="nope")


class _Answering(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the class's status/headers; the body echoes
    the Authorization header (a server that leaks it must not make us leak it)."""
    status = 429
    headers_out = {"Retry-After": "7"}
    seen = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append(self.headers.get("Authorization"))
        body = ('{"error":"no thanks %s"}' % self.headers.get("Authorization")).encode()
        self.send_response(self.status)
        for name, value in self.headers_out.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(handler):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_429_retry_after_is_honoured(make_writer, caplog):
    caplog.set_level(logging.INFO)
    handler = type("Limited", (_Answering,), {"status": 429, "headers_out": {"Retry-After": "7"}, "seen": []})
    httpd = _serve(handler)
    try:
        writer, que = make_writer("http://127.0.0.1:%d" % httpd.server_address[1], retry_max=60,
                                  bucket="b", org="o", token=TOKEN)
        que.put(readings(1)[0])
        wait_for(lambda: handler.seen, timeout=20)
        wait_for(lambda: "asks to wait 7 s" in caplog.text, timeout=10)
        assert len(handler.seen) == 1                       # not retried at the 0.05 s backoff
        assert handler.seen[0] == "Token " + TOKEN
        assert TOKEN not in caplog.text
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_401_echoing_the_token_is_logged_redacted_at_error(make_writer, caplog):
    handler = type("Refusing", (_Answering,), {"status": 401, "headers_out": {}, "seen": []})
    httpd = _serve(handler)
    try:
        make_writer("http://127.0.0.1:%d" % httpd.server_address[1], bucket="b", org="o", token=TOKEN)[1] \
            .put(readings(1)[0])
        wait_for(lambda: len(handler.seen) >= 2, timeout=20)
        wait_for(lambda: sum(r.levelno == logging.ERROR and "HTTP 401" in r.getMessage()
                             for r in caplog.records) >= 2, timeout=10)
        assert TOKEN not in caplog.text and "***" in caplog.text
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_averager_aggregates_reach_victoriametrics_as_kei_10min(victoria, make_writer, fake_clock):  # noqa: F811
    """Readings -> the real Averager (fake clock crosses the window) -> InfluxWriter."""
    from keilib.average import Averager
    record_que, aggregate_que = queue.Queue(), queue.Queue()
    averager = Averager(record_que, aggregate_que, window=600, grace=30, clock=fake_clock)
    start = fake_clock.now()                                  # 14:00:00, a window start
    for i, value in enumerate([100, 200, 600]):
        record_que.put(Record(start + datetime.timedelta(seconds=60 * i), "BR", "E7", value))
    averager.start()
    try:
        make_writer(victoria.url, record_que=aggregate_que)
        wait_for(lambda: record_que.empty(), timeout=10)
        fake_clock.advance(600 + 31)                          # the window ends, grace passes
        wait_for(lambda: victoria.export('{__name__="kei_10min_count"}'), timeout=20)
    finally:
        assert averager.stop(5)
    stamp = int(start.timestamp()) * 1000
    got = {name: victoria.export('{__name__="kei_10min_%s",sensor="E7"}' % name)[0]
           for name in ("mean", "min", "max", "count")}
    assert {name: (s["timestamps"], s["values"]) for name, s in got.items()} == {
        "mean": ([stamp], [300]), "min": ([stamp], [100]), "max": ([stamp], [600]), "count": ([stamp], [3])}


def _readme_block(after: str) -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    return text[text.index(after):].split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("heading", ["### InfluxWriter: InfluxDB / VictoriaMetrics", "### PrometheusExporter"])
def test_readme_config_blocks_make_their_workers(heading, tmp_path, monkeypatch):
    """The README's worker_def entries are valid: import line + one entry."""
    import textwrap
    block = _readme_block(heading)
    first, rest = block.split("\n", 1)
    namespace = {"record_que": queue.Queue()}
    exec(first, namespace)                                  # noqa: S102 - our own README
    [entry] = eval("[%s\n]" % textwrap.dedent(rest), namespace)  # noqa: S307
    monkeypatch.chdir(tmp_path)
    worker = entry["class"](**entry["args"])
    assert type(worker).__name__ in heading
