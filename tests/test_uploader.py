"""HttpPostUploader and its spool, against the real php/upload.php under ``php -S``."""

from __future__ import annotations

import base64
import json
import logging
import queue
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from keilib.clock import ScaledClock
from keilib.errors import ConfigError
import keilib.spool
from keilib.uploader import (BATCH, ITEM, TEMP_PREFIX, HttpPostUploader, Spool, backoff_delay,
                             batch_id, classify, safe_url, split_id, split_lines, stated_limit)
from phpserver import PhpServer, php_server_factory  # noqa: F401 - fixture
from support import PYTHON, REPO, subprocess_env, wait_for

KEY = "uploader-test-key-5f1d2e"
PHP_DIR = REPO / "php"


@pytest.fixture
def data_dir(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def endpoint_env(data_dir: Path, **settings: str) -> dict:
    env = {"KEI_DATA_DIR": str(data_dir), "KEI_UPLOAD_KEY": KEY, "KEI_MIN_INTERVAL": "0"}
    env.update(settings)
    return env


@pytest.fixture
def server(php_server_factory, data_dir):  # noqa: F811
    return php_server_factory(PHP_DIR, env=endpoint_env(data_dir), workers=2)


@pytest.fixture
def make_uploader(tmp_path):
    """``make(url, **kwargs)`` -> (started uploader, its queue); stopped after the test."""
    made = []

    def make(url, start=True, upload_que=None, **kwargs):
        upload_que = upload_que if upload_que is not None else queue.Queue()
        options = dict(spool_dir=tmp_path / "spool", retry_min=0.05, retry_max=0.2, timeout=5)
        options.update(kwargs)
        options.setdefault("upload_key", KEY)
        uploader = HttpPostUploader(upload_que, url, **options)
        made.append(uploader)
        if start:
            uploader.start()
        return uploader, upload_que

    yield make
    for uploader in made:
        assert uploader.stop(5)


def content(data_dir: Path, fname: str) -> str:
    path = data_dir / fname
    return path.read_text(encoding="utf-8") if path.exists() else ""


def spool_units(spool_dir: Path) -> list:
    return sorted(p.name for p in Path(spool_dir).glob("*")
                  if p.suffix in (ITEM, BATCH) and not p.name.startswith("."))


def line(number: int, sensor: str = "T1") -> str:
    return "2026/11/23 %02d:%02d,U1,%s,%d.25\n" % (number // 6 % 24, number % 6 * 10, sensor, number)


# -- pure parts ----------------------------------------------------------------

def test_classify_answers():
    assert classify(200, "OK.") == "ok"
    assert classify(201, "\nOK") == "ok"
    assert classify(200, "Error: upload too frequent") == "retry"   # keilog's endpoint
    assert classify(200, "<html>captive portal</html>") == "retry"
    for status in (500, 502, 503, 429, 408, 301, 302, 307):
        assert classify(status, "Error: x") == "retry", status
    for status in (400, 401, 403, 404, 405, 413):
        assert classify(status, "Error: x") == "reject", status


def test_backoff_doubles_up_to_the_cap_with_jitter():
    rng = random.Random(1)
    for failures, ceiling in ((1, 5), (2, 10), (3, 20), (7, 320), (8, 600), (50, 600), (5000, 600)):
        for _ in range(50):
            delay = backoff_delay(failures, 5, 600, rng)
            assert ceiling / 2 <= delay <= ceiling, (failures, delay)


def test_safe_url_drops_credentials_and_query():
    assert safe_url("https://user:pw@example.com:8443/kei/upload.php?key=abc#x") == \
        "https://example.com:8443/kei/upload.php"
    assert safe_url("http://[::1]:80/u.php") == "http://[::1]:80/u.php"


def test_split_lines_cuts_at_line_ends_within_the_limit():
    text = "".join(line(n) for n in range(100))
    pieces = split_lines(text, 300)
    assert "".join(pieces) == text
    assert all(len(piece.encode()) <= 300 and piece.endswith("\n") for piece in pieces)
    assert split_lines("x" * 500 + "\nab\n", 100) == ["x" * 500 + "\n", "ab\n"]


def test_batch_ids_are_stable_and_distinct():
    assert batch_id(["a"], 0, 1) == "a"
    assert batch_id(["a", "b"], 0, 1) == batch_id(["a", "b"], 0, 1)
    ids = {batch_id(["a", "b"], 0, 1), batch_id(["a", "b"], 0, 2), batch_id(["a", "b"], 1, 2),
           batch_id(["a"], 0, 2), batch_id(["b", "a"], 0, 1)}
    assert len(ids) == 5


def test_constructor_checks_arguments_without_io(tmp_path):
    with pytest.raises(ConfigError, match="target_url"):
        HttpPostUploader(queue.Queue(), "ftp://x/", KEY)
    with pytest.raises(ConfigError, match="upload_key"):
        HttpPostUploader(queue.Queue(), "http://x/", None)
    with pytest.raises(ConfigError, match="retry_min"):
        HttpPostUploader(queue.Queue(), "http://x/", KEY, retry_min=0)
    with pytest.raises(ConfigError, match="retry_max"):
        HttpPostUploader(queue.Queue(), "http://x/", KEY, retry_min=10, retry_max=5)
    spool_dir = tmp_path / "not-yet"
    HttpPostUploader(queue.Queue(), "http://x/", KEY, spool_dir=spool_dir)
    assert not spool_dir.exists()
    # keilog's positional form, and the default spool in the working directory.
    uploader = HttpPostUploader(queue.Queue(), "https://example.com/upload.php", KEY)
    assert uploader.spool.directory == Path.cwd() / "spool"


# -- the spool on its own -----------------------------------------------------

def test_spool_merges_items_of_one_file_in_order_within_the_limit(tmp_path):
    spool = Spool(tmp_path / "spool", max_batch_bytes=100)
    spool.open()
    spool.add("a.txt", "a1\n")
    spool.add("b.txt", "b1\n")
    spool.add("a.txt", "a2\n")
    spool.add("a.txt", "x" * 95 + "\n")      # does not fit with a1+a2
    spool.add("a.txt", "a3\n")               # fits, but must not jump ahead of the long one
    batch = spool.next_batch()
    assert (batch.fname, batch.items, [data for _, data in batch.parts]) == ("a.txt", 2, ["a1\na2\n"])
    assert spool.next_batch().name == batch.name          # sealed: asked again, same batch
    spool.confirm_part(batch)
    assert [data for _, data in spool.next_batch().parts] == ["b1\n"]


def test_spool_splits_an_oversized_item_and_confirms_part_by_part(tmp_path):
    spool = Spool(tmp_path / "spool", max_batch_bytes=64)
    spool.open()
    text = "".join(line(n) for n in range(10))
    spool.add("a.txt", text)
    batch = spool.next_batch()
    assert len(batch.parts) > 1 and "".join(data for _, data in batch.parts) == text
    first_id = batch.parts[0][0]
    spool.confirm_part(batch)
    reopened = Spool(tmp_path / "spool", max_batch_bytes=64)
    reopened.open()                           # the confirmed part is gone for good
    again = reopened.next_batch()
    assert first_id not in [part_id for part_id, _ in again.parts]
    assert "".join(data for _, data in again.parts) == text[len(split_lines(text, 64)[0]):]


def test_spool_recovers_a_merge_interrupted_before_the_members_were_deleted(tmp_path):
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    spool.open()
    for number in range(3):
        spool.add("a.txt", line(number))
    before = {p.name: p.read_bytes() for p in spool_dir.glob("*.item")}
    batch = spool.next_batch()
    # Put the members back as if the process died right after writing the batch.
    for name, payload in before.items():
        (spool_dir / name).write_bytes(payload)
    (spool_dir / ".tmp-000000000009.item").write_text("half written")
    recovered = Spool(spool_dir)
    recovered.open()
    assert spool_units(spool_dir) == [batch.name]
    assert not list(spool_dir.glob(".tmp-*"))
    assert recovered.next_batch().parts == batch.parts


def drain(spool: Spool) -> str:
    """Everything the spool would send, confirming as it goes."""
    texts = []
    while True:
        batch = spool.next_batch()
        if batch is None:
            return "".join(texts)
        while batch.parts:
            texts.append(batch.parts[0][1])
            spool.confirm_part(batch)


def test_spool_moves_an_unreadable_unit_aside(tmp_path, caplog):
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    spool.open()
    spool.add("a.txt", "one\n")
    (spool_dir / "000000000001.item").write_text("{not json")
    (spool_dir / "000000000002.item").write_text(json.dumps({"fname": "a.txt",
                                                             "parts": [["i2", "three\n"]]}))
    reopened = Spool(spool_dir)
    reopened.open()
    assert "unreadable unit 000000000001.item" in caplog.text
    assert (spool_dir / "rejected" / "000000000001.item").read_text() == "{not json"
    assert drain(reopened) == "one\nthree\n"
    assert reopened.add("a.txt", "next\n") == "000000000003.item"


# -- against the real endpoint -------------------------------------------------

def test_items_arrive_in_order_exactly_once(server, data_dir, make_uploader, tmp_path):
    uploader, upload_que = make_uploader(server.url("upload.php"))
    expected = {"sum20261123-a.txt": "", "sum20261123-b.txt": ""}
    for number in range(60):
        fname = "sum20261123-a.txt" if number % 3 else "sum20261123-b.txt"
        upload_que.put([fname, line(number)])
        expected[fname] += line(number)
    for fname, text in expected.items():
        wait_for(lambda: content(data_dir, fname) == text, timeout=10, message=fname)
    wait_for(lambda: not spool_units(tmp_path / "spool"), message="empty spool")
    assert uploader.rejected_batches == 0


def test_outage_then_recovery_delivers_everything_once_in_order(server, data_dir, make_uploader,
                                                                tmp_path, caplog):
    caplog.set_level(logging.INFO)
    server.stop()
    uploader, upload_que = make_uploader(server.url("upload.php"))
    expected = "".join(line(n) for n in range(30))
    for number in range(30):
        upload_que.put(("day.txt", line(number)))
    wait_for(lambda: uploader.failed_attempts >= 3, message="failed attempts")
    assert spool_units(tmp_path / "spool")          # kept on disk while the server is away
    for number in range(30, 40):                    # more arrive during the outage
        upload_que.put(("day.txt", line(number)))
        expected += line(number)
    server.start()                                  # same port
    wait_for(lambda: content(data_dir, "day.txt") == expected, timeout=10, message="delivery")
    wait_for(lambda: not spool_units(tmp_path / "spool"), message="empty spool")
    assert "upload to http://127.0.0.1:%d/upload.php failed" % server.port in caplog.text
    assert "accepts uploads again" in caplog.text


def test_wrong_key_moves_the_item_to_rejected_and_never_logs_the_key(server, data_dir,
                                                                     make_uploader, tmp_path,
                                                                     caplog):
    caplog.set_level(logging.DEBUG)
    wrong_key = "wrong-key-0f9e8d7c6b"
    url = server.url("upload.php").replace("http://", "http://someone:url-password@")
    uploader, upload_que = make_uploader(url, upload_key=wrong_key)
    upload_que.put(["day.txt", "refused\n"])
    wait_for(lambda: list((tmp_path / "spool" / "rejected").glob("*")), message="rejected unit")
    upload_que.put(["day.txt", "refused too\n"])
    wait_for(lambda: uploader.rejected_batches == 2, message="second rejection")
    assert not spool_units(tmp_path / "spool")
    kept = [json.loads(p.read_text()) for p in (tmp_path / "spool" / "rejected").glob("*")]
    assert sorted(data for unit in kept for _, data in unit["parts"]) == ["refused\n", "refused too\n"]
    assert "HTTP 403 Error: bad key" in caplog.text
    assert "not retried" in caplog.text
    assert wrong_key not in caplog.text and "url-password" not in caplog.text
    for record in caplog.records:
        assert wrong_key not in repr(record.args)
    assert content(data_dir, "day.txt") == ""


def test_bad_name_is_rejected_but_later_items_still_go(server, data_dir, make_uploader, caplog):
    uploader, upload_que = make_uploader(server.url("upload.php"))
    upload_que.put(["../evil.php", "x\n"])
    upload_que.put(["ok.txt", "fine\n"])
    wait_for(lambda: content(data_dir, "ok.txt") == "fine\n", message="later item")
    assert uploader.rejected_batches == 1
    assert "HTTP 400" in caplog.text


OLD_ENDPOINT = r"""<?php
// keilog-style endpoint: always 200, "Error: ..." while the busy flag exists.
$dir = getenv('OLD_DATA_DIR');
if (file_exists("$dir/busy")) { echo "Error: upload too frequent"; exit; }
if (($_POST['key'] ?? '') !== getenv('OLD_KEY')) { echo "Error: key"; exit; }
file_put_contents("$dir/" . basename($_POST['fname']), $_POST['data'], FILE_APPEND | LOCK_EX);
echo "OK.";
"""


def test_old_endpoint_error_with_200_keeps_the_item(php_server_factory, make_uploader,  # noqa: F811
                                                    tmp_path, caplog):
    docroot = tmp_path / "old"
    docroot.mkdir()
    (docroot / "upload.php").write_text(OLD_ENDPOINT)
    (docroot / "busy").write_text("")
    old = php_server_factory(docroot, env={"OLD_DATA_DIR": str(docroot), "OLD_KEY": KEY})
    uploader, upload_que = make_uploader(old.url("upload.php"))
    upload_que.put(["day.txt", "kept\n"])
    wait_for(lambda: uploader.failed_attempts >= 2, message="retries")
    assert spool_units(tmp_path / "spool") and uploader.rejected_batches == 0
    assert "HTTP 200 Error: upload too frequent" in caplog.text
    (docroot / "busy").unlink()
    wait_for(lambda: content(docroot, "day.txt") == "kept\n", message="delivery after busy")
    wait_for(lambda: not spool_units(tmp_path / "spool"), message="empty spool")


def test_backlog_is_merged_and_drains_a_rate_limited_endpoint(php_server_factory, data_dir,  # noqa: F811
                                                              make_uploader, tmp_path):
    spool = Spool(tmp_path / "spool", max_batch_bytes=4000)
    spool.open()
    expected = {"a.txt": "", "b.txt": ""}
    for number in range(400):
        fname = "a.txt" if number % 4 else "b.txt"
        spool.add(fname, line(number))
        expected[fname] += line(number)
    total = sum(len(text) for text in expected.values())
    limited = php_server_factory(PHP_DIR, env=endpoint_env(data_dir, KEI_MIN_INTERVAL="0.2"))
    # Retry-After is whole seconds: a 20x clock keeps the test short.
    uploader, _ = make_uploader(limited.url("upload.php"), max_batch_bytes=4000,
                                clock=ScaledClock(20), retry_max=5)
    for fname, text in expected.items():
        wait_for(lambda: content(data_dir, fname) == text, timeout=15, message=fname)
    posts = sum(len((data_dir / (".%s.ids" % fname)).read_text().split()) for fname in expected)
    wait_for(lambda: uploader.sent_batches == posts, message="every POST confirmed")
    assert posts <= total // 4000 + 2           # 400 items went in a handful of POSTs
    assert uploader.rate_limited >= 1           # the limit did answer 429 on the way
    assert uploader.failed_attempts == 0        # ... which is not a failure


def test_restart_sends_the_spool_before_new_items(server, data_dir, make_uploader, tmp_path):
    dead_url = "http://127.0.0.1:%d/upload.php" % closed_port()
    first, first_que = make_uploader(dead_url)
    for number in range(5):
        first_que.put(["day.txt", line(number)])
    wait_for(lambda: first.failed_attempts >= 1, message="a failed attempt")
    assert first.stop(5)
    assert spool_units(tmp_path / "spool")
    new_items = queue.Queue()
    for number in range(5, 8):                     # already waiting when the uploader starts
        new_items.put(["day.txt", line(number)])
    make_uploader(server.url("upload.php"), upload_que=new_items)
    expected = "".join(line(n) for n in range(8))
    wait_for(lambda: content(data_dir, "day.txt") == expected, message="spool then new items")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_resending_a_batch_the_server_already_stored_does_not_duplicate(server, data_dir,
                                                                        make_uploader, tmp_path):
    # The crash window: the server appended, the answer never reached the spool.
    spool = Spool(tmp_path / "spool", max_batch_bytes=200)
    spool.open()
    for number in range(12):
        spool.add("day.txt", line(number))
    batch = spool.next_batch()
    part_id, data = batch.parts[0]
    answer = requests.post(server.url("upload.php"), timeout=5, data={
        "type": "text", "key": KEY, "fname": "day.txt", "data": data, "id": part_id})
    assert answer.text == "OK."
    uploader, _ = make_uploader(server.url("upload.php"), max_batch_bytes=200)
    expected = "".join(line(n) for n in range(12))
    wait_for(lambda: not spool_units(tmp_path / "spool"), message="empty spool")
    assert content(data_dir, "day.txt") == expected
    # The uploader re-sent the stored batch (same id) and then the rest.
    wait_for(lambda: uploader.sent_batches == 2, message="two confirmations")
    assert (data_dir / ".day.txt.ids").read_text().split()[0] == part_id


CHILD = """
import queue, sys, threading
from keilib.uploader import HttpPostUploader
uploader = HttpPostUploader(queue.Queue(), sys.argv[1], sys.argv[2], spool_dir=sys.argv[3],
                            max_batch_bytes=int(sys.argv[4]), retry_min=0.05, retry_max=0.2)
uploader.start()
threading.Event().wait()
"""


def test_kill_9_during_delivery_neither_loses_nor_duplicates(server, data_dir, make_uploader,
                                                             tmp_path):
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, max_batch_bytes=150)
    spool.open()
    expected = {"a.txt": "", "b.txt": ""}
    for number in range(240):
        fname = "ab"[number % 2] + ".txt"
        spool.add(fname, line(number))
        expected[fname] += line(number)
    total = sum(len(text) for text in expected.values())

    def delivered() -> int:
        return sum(len(content(data_dir, fname)) for fname in expected)

    for round_number in range(3):
        target = total * (round_number + 1) // 4
        child = subprocess.Popen([PYTHON, "-c", CHILD, server.url("upload.php"), KEY,
                                  str(spool_dir), "150"], env=subprocess_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: delivered() >= target, timeout=15, message="partial delivery")
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(5)
        assert delivered() < total, "delivered everything before the kill; make the spool bigger"
    make_uploader(server.url("upload.php"), max_batch_bytes=150)
    for fname, text in expected.items():
        wait_for(lambda: content(data_dir, fname) == text, timeout=15, message=fname)
    wait_for(lambda: not spool_units(spool_dir), message="empty spool")


@pytest.fixture
def hanging_server():
    """A server that accepts one connection and never answers: (url, accepted event)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    held = []
    accepted = threading.Event()

    def accept_and_hang():
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        held.append(connection)            # read nothing, answer nothing
        accepted.set()

    threading.Thread(target=accept_and_hang, daemon=True).start()
    yield "http://127.0.0.1:%d/upload.php" % listener.getsockname()[1], accepted
    listener.close()
    for connection in held:
        connection.close()


def test_stop_returns_promptly_while_the_server_hangs_and_keeps_everything(make_uploader, hanging_server,
                                                                           tmp_path):
    url, accepted = hanging_server
    uploader, upload_que = make_uploader(url, timeout=30)
    upload_que.put(["day.txt", "in flight\n"])
    assert accepted.wait(5)
    for number in range(3):            # queued behind the hanging request
        upload_que.put(["day.txt", line(number)])
    started = time.monotonic()
    assert uploader.stop(5)
    assert time.monotonic() - started < 2.5
    reopened = Spool(tmp_path / "spool")
    reopened.open()
    assert drain(reopened) == "in flight\n" + "".join(line(n) for n in range(3))


def test_items_queued_during_a_long_request_are_spooled_before_it_ends(make_uploader, hanging_server,
                                                                       tmp_path):
    # A crash (kill -9) while a request hangs must not find them only in memory.
    url, accepted = hanging_server
    uploader, upload_que = make_uploader(url, timeout=30)
    upload_que.put(["day.txt", "in flight\n"])
    assert accepted.wait(5)
    for number in range(3):
        upload_que.put(["day.txt", line(number)])
    spool_dir = tmp_path / "spool"
    wait_for(lambda: upload_que.empty() and len(list(spool_dir.glob("*.item"))) == 3, timeout=5)
    assert uploader.is_alive()         # the request hangs for 30 s: still in flight


def test_bad_items_are_logged_and_skipped(server, data_dir, make_uploader, caplog):
    uploader, upload_que = make_uploader(server.url("upload.php"))
    for bad in (None, "just text", ["only-name"], ["a.txt", 5], [1, "x"], ["a.txt", "b", "c"]):
        upload_que.put(bad)
    upload_que.put(["a.txt", ""])            # nothing to send
    upload_que.put(["a.txt", b"bytes are fine\n"])
    wait_for(lambda: content(data_dir, "a.txt") == "bytes are fine\n", message="good item")
    wait_for(lambda: uploader.sent_batches == 1, message="confirmation")
    assert uploader.is_alive() and uploader.rejected_batches == 0
    assert caplog.text.count("not [filename, text]") == 6


def test_backoff_waits_on_the_injected_clock(php_server_factory, data_dir, make_uploader,  # noqa: F811
                                             fake_clock):
    server = PhpServer(PHP_DIR, env=endpoint_env(data_dir))    # not started yet
    try:
        uploader, upload_que = make_uploader(server.url("upload.php"), clock=fake_clock,
                                             retry_min=100, retry_max=200)
        upload_que.put(["day.txt", "after the backoff\n"])
        wait_for(lambda: uploader.failed_attempts == 1, message="first failure")
        server.start()
        fake_clock.advance(200)
        wait_for(lambda: content(data_dir, "day.txt") == "after the backoff\n",
                 message="delivery once the fake clock passed the backoff")
    finally:
        server.close()


def test_an_unusable_spool_leaves_the_items_in_the_queue(make_uploader, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    uploader, upload_que = make_uploader("http://127.0.0.1:9/upload.php", start=False,
                                         spool_dir=blocker / "spool")
    upload_que.put(["day.txt", "kept for the next instance\n"])
    uploader.start()
    uploader.join(5)
    assert not uploader.is_alive()
    assert isinstance(uploader.failure, OSError)      # the launcher restarts it
    assert upload_que.get_nowait() == ["day.txt", "kept for the next instance\n"]



# -- HTTP 413: a merged batch too big for the endpoint -------------------------

def rejected_units(spool_dir: Path) -> list:
    return [json.loads(p.read_text()) for p in sorted((Path(spool_dir) / "rejected").glob("*"))]


def posted_ids(data_dir: Path, fname: str) -> list:
    return read_ids(data_dir / (".%s.ids" % fname))


def read_ids(path: Path) -> list:
    return path.read_text().split() if path.exists() else []


def test_split_ids_are_stable_distinct_and_valid_for_the_endpoint():
    assert split_id("abc", 0, 2) == split_id("abc", 0, 2)
    ids = {split_id("abc", 0, 2), split_id("abc", 1, 2), split_id("abc", 0, 3),
           split_id("abd", 0, 2), batch_id(["abc"], 0, 2), "abc"}
    assert len(ids) == 6
    assert all(len(i) == 32 and i.isalnum() for i in ids - {"abc"})
    assert stated_limit("Error: data larger than 4096 bytes") == 4096
    assert stated_limit("<html>413 Request Entity Too Large</html>") is None


def test_spool_split_head_is_one_atomic_rewrite_and_deterministic(tmp_path, monkeypatch):
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, max_batch_bytes=1000)
    spool.open()
    text = "".join(line(n) for n in range(60))
    spool.add("a.txt", text)                     # ~1600 bytes: 2 parts of <= 1000
    batch = spool.next_batch()
    assert len(batch.parts) == 2
    sealed = (spool_dir / batch.name).read_bytes()

    # Killed inside the rewrite, before the rename: the old batch is the truth.
    def killed_before_rename(directory, name, payload, sync_dir=True):
        (Path(directory) / (TEMP_PREFIX + name)).write_bytes(payload[:40])
        raise RuntimeError("killed")

    monkeypatch.setattr(keilib.spool, "write_atomic", killed_before_rename)
    with pytest.raises(RuntimeError):
        spool.split_head(batch, 300)
    monkeypatch.undo()
    assert (spool_dir / batch.name).read_bytes() == sealed
    again = Spool(spool_dir, max_batch_bytes=1000)
    again.open()
    assert not list(spool_dir.glob(TEMP_PREFIX + "*"))
    old = again.next_batch()
    assert old.parts == batch.parts

    # The same cut on two copies of the spool gives the same pieces and ids.
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    (copy_dir / batch.name).write_bytes(sealed)
    copy = Spool(copy_dir, max_batch_bytes=1000)
    copy.open()
    copied = copy.next_batch()
    assert again.split_head(old, 300) == copy.split_head(copied, 300) > 1
    assert old.parts == copied.parts
    # Every part was cut (the second one is larger than 300 too), in order,
    # with ids derived from the part they came from.
    assert all(len(data.encode()) <= 300 for _, data in old.parts)
    assert "".join(data for _, data in old.parts) == text
    first_ids = {split_id(batch.parts[0][0], n, len(split_lines(batch.parts[0][1], 300)))
                 for n in range(len(split_lines(batch.parts[0][1], 300)))}
    assert first_ids <= {part_id for part_id, _ in old.parts}
    # On disk as well: a restart goes on with the pieces.
    reopened = Spool(spool_dir)
    reopened.open()
    assert reopened.next_batch().parts == old.parts
    assert drain(reopened) == text


def test_413_for_a_merged_backlog_splits_it_and_lowers_the_limit_once(php_server_factory,  # noqa: F811
                                                                      data_dir, make_uploader,
                                                                      tmp_path, caplog):
    # The review's case: 300 valid 25-byte items became one refused batch.
    small = php_server_factory(PHP_DIR, env=endpoint_env(data_dir, KEI_MAX_BYTES="4096"))
    uploader, upload_que = make_uploader(small.url("upload.php"), start=False)
    for number in range(300):
        upload_que.put(["day.txt", "2026/11/23 %05d,U1,T1,2\n" % number])
    expected = "".join("2026/11/23 %05d,U1,T1,2\n" % number for number in range(300))
    assert len(expected) == 300 * 25
    uploader.start()
    wait_for(lambda: content(data_dir, "day.txt") == expected, timeout=15, message="delivery")
    wait_for(lambda: not spool_units(tmp_path / "spool"), message="empty spool")
    assert uploader.rejected_batches == 0 and not rejected_units(tmp_path / "spool")
    assert uploader.spool.max_batch_bytes == 4096
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "at most 4096 bytes" in warnings[0], warnings
    assert "HTTP 413 Error: data larger than 4096 bytes" in warnings[0]


def test_several_hundred_items_against_a_tiny_limit_arrive_once_in_order(php_server_factory,  # noqa: F811
                                                                         data_dir, make_uploader,
                                                                         tmp_path, caplog):
    spool = Spool(tmp_path / "spool")
    spool.open()
    expected = {"a.txt": "", "b.txt": ""}
    for number in range(500):
        fname = "a.txt" if number % 3 else "b.txt"
        text = line(number) if number % 7 else line(number) + line(number, "T2")
        spool.add(fname, text)
        expected[fname] += text
    small = php_server_factory(PHP_DIR, env=endpoint_env(data_dir, KEI_MAX_BYTES="300"))
    uploader, upload_que = make_uploader(small.url("upload.php"))
    for number in range(500, 540):                 # more arrive while it drains
        upload_que.put(["a.txt", line(number)])
        expected["a.txt"] += line(number)
    for fname, text in expected.items():
        wait_for(lambda: content(data_dir, fname) == text, timeout=20, message=fname)
    wait_for(lambda: not spool_units(tmp_path / "spool"), message="empty spool")
    assert uploader.rejected_batches == 0 and not rejected_units(tmp_path / "spool")
    assert uploader.failed_attempts == 0
    assert uploader.spool.max_batch_bytes == 300
    assert caplog.text.count("for the rest of this run") == 1
    # Every POST within the limit, none stored twice.
    for fname in expected:
        ids = posted_ids(data_dir, fname)
        assert len(ids) == len(set(ids)) >= len(expected[fname]) // 300


NGINX_413 = r"""<?php
// A proxy in front of the endpoint with a smaller body limit that says no number.
if (strlen($_POST['data'] ?? '') > (int) getenv('PROXY_MAX')) {
    http_response_code(413);
    echo "<html><head><title>413 Request Entity Too Large</title></head></html>";
    exit;
}
$dir = getenv('PROXY_DATA_DIR');
file_put_contents("$dir/" . basename($_POST['fname']), $_POST['data'], FILE_APPEND | LOCK_EX);
file_put_contents("$dir/posts", $_POST['id'] . "\n", FILE_APPEND | LOCK_EX);
echo "OK.";
"""


def test_413_without_a_stated_limit_halves_until_it_fits(php_server_factory, make_uploader,  # noqa: F811
                                                         tmp_path, caplog):
    docroot = tmp_path / "proxy"
    docroot.mkdir()
    (docroot / "upload.php").write_text(NGINX_413)
    proxy = php_server_factory(docroot, env={"PROXY_DATA_DIR": str(docroot), "PROXY_MAX": "700"})
    spool = Spool(tmp_path / "spool")
    spool.open()
    expected = "".join(line(n) for n in range(200))
    for number in range(200):
        spool.add("day.txt", line(number))
    uploader, _ = make_uploader(proxy.url("upload.php"))
    wait_for(lambda: content(docroot, "day.txt") == expected, timeout=15, message="delivery")
    wait_for(lambda: not spool_units(tmp_path / "spool"), message="empty spool")
    assert uploader.rejected_batches == 0
    assert 350 <= uploader.spool.max_batch_bytes <= 700
    lowered = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert 1 <= len(lowered) <= 4, lowered        # 5239 bytes -> 2619 -> 1309 -> 654
    ids = read_ids(docroot / "posts")
    assert len(ids) == len(set(ids))


def test_a_single_line_too_large_goes_to_rejected_and_the_rest_is_delivered(
        php_server_factory, data_dir, make_uploader, tmp_path, caplog):  # noqa: F811
    small = php_server_factory(PHP_DIR, env=endpoint_env(data_dir, KEI_MAX_BYTES="1000"))
    huge = "2026/11/23 12:00,U1,BLOB," + "x" * 3000 + "\n"
    other = "2026/11/23 13:00,U1,BLOB," + "y" * 1500 + "\n"
    uploader, upload_que = make_uploader(small.url("upload.php"), start=False)
    expected = ""
    for number in range(100):
        upload_que.put(["day.txt", line(number)])
        expected += line(number)
    upload_que.put(["day.txt", huge])                      # an item that alone is too large
    upload_que.put(["day.txt", line(100) + other + line(101)])   # a too-long line inside an item
    expected += line(100) + line(101)
    for number in range(102, 200):
        upload_que.put(["day.txt", line(number)])
        expected += line(number)
    uploader.start()
    wait_for(lambda: content(data_dir, "day.txt") == expected, timeout=15, message="delivery")
    wait_for(lambda: not spool_units(tmp_path / "spool"), message="empty spool")
    kept = rejected_units(tmp_path / "spool")
    assert sorted(data for unit in kept for _, data in unit["parts"]) == sorted([huge, other])
    assert all(unit["fname"] == "day.txt" for unit in kept)
    assert uploader.rejected_batches == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, errors
    assert "single line of %d bytes" % len(huge) in caplog.text
    assert "single line of %d bytes" % len(other) in caplog.text
    assert all("HTTP 413 Error: data larger than 1000 bytes" in e and "not retried" in e
               for e in errors)


def test_an_item_alone_too_large_is_rejected_whole(php_server_factory, data_dir,  # noqa: F811
                                                   make_uploader, tmp_path):
    small = php_server_factory(PHP_DIR, env=endpoint_env(data_dir, KEI_MAX_BYTES="100"))
    uploader, upload_que = make_uploader(small.url("upload.php"))
    upload_que.put(["day.txt", "z" * 200 + "\n"])
    wait_for(lambda: uploader.rejected_batches == 1, message="rejection")
    upload_que.put(["day.txt", "fits\n"])
    wait_for(lambda: content(data_dir, "day.txt") == "fits\n", message="the next item")
    assert [unit["parts"][0][1] for unit in rejected_units(tmp_path / "spool")] == ["z" * 200 + "\n"]
    assert uploader.spool.max_batch_bytes == 65536     # one line says nothing about merging


@pytest.mark.parametrize("crash", ["inside the rewrite", "after the rewrite",
                                   "after the first piece was stored"])
def test_a_crash_in_the_middle_of_a_split_neither_loses_nor_duplicates(
        php_server_factory, data_dir, make_uploader, tmp_path, monkeypatch, crash):  # noqa: F811
    small = php_server_factory(PHP_DIR, env=endpoint_env(data_dir, KEI_MAX_BYTES="400"))
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    spool.open()
    expected = "".join(line(n) for n in range(120))
    for number in range(120):
        spool.add("day.txt", line(number))
    original_split = Spool.split_head
    original_confirm = Spool.confirm_part

    def crashing_split(self, batch, limit):
        if crash == "inside the rewrite":
            def half_write(directory, name, payload, sync_dir=True):
                (Path(directory) / (TEMP_PREFIX + name)).write_bytes(payload[:100])
                raise RuntimeError("killed inside the rewrite")
            monkeypatch.setattr(keilib.spool, "write_atomic", half_write)
        pieces = original_split(self, batch, limit)
        if crash == "after the rewrite":
            raise RuntimeError("killed after the rewrite")

        def crashing_confirm(self, batch):
            raise RuntimeError("killed after the server stored a piece")
        monkeypatch.setattr(Spool, "confirm_part", crashing_confirm)
        return pieces

    monkeypatch.setattr(Spool, "split_head", crashing_split)
    first, _ = make_uploader(small.url("upload.php"))
    wait_for(lambda: first.failure is not None, message="the injected crash")
    first.join(5)
    assert str(first.failure).startswith("killed")
    monkeypatch.undo()                                # the restart runs the real code
    stored_before = content(data_dir, "day.txt")
    if crash == "after the first piece was stored":
        assert stored_before and expected.startswith(stored_before)
    else:
        assert stored_before == ""
    make_uploader(small.url("upload.php"))
    wait_for(lambda: content(data_dir, "day.txt") == expected, timeout=15, message="delivery")
    wait_for(lambda: not spool_units(spool_dir), message="empty spool")
    assert not rejected_units(spool_dir)
    ids = posted_ids(data_dir, "day.txt")
    assert len(ids) == len(set(ids))


def test_kill_9_while_splitting_for_a_small_endpoint_neither_loses_nor_duplicates(
        php_server_factory, data_dir, make_uploader, tmp_path):  # noqa: F811
    # Every run starts with the default merge limit, meets 413 and splits again.
    small = php_server_factory(PHP_DIR, env=endpoint_env(data_dir, KEI_MAX_BYTES="200"),
                               workers=2)
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    spool.open()
    expected = {"a.txt": "", "b.txt": "", "c.txt": ""}
    for number in range(300):
        fname = "abc"[number % 3] + ".txt"
        spool.add(fname, line(number))
        expected[fname] += line(number)
    total = sum(len(text) for text in expected.values())

    def delivered() -> int:
        return sum(len(content(data_dir, fname)) for fname in expected)

    for round_number in range(3):
        target = total * (round_number + 1) // 4
        child = subprocess.Popen([PYTHON, "-c", CHILD, small.url("upload.php"), KEY,
                                  str(spool_dir), "65536"], env=subprocess_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: delivered() >= target, timeout=15, message="partial delivery")
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(5)
        assert delivered() < total, "delivered everything before the kill; make the spool bigger"
    uploader, _ = make_uploader(small.url("upload.php"))
    for fname, text in expected.items():
        wait_for(lambda: content(data_dir, fname) == text, timeout=15, message=fname)
    wait_for(lambda: not spool_units(spool_dir), message="empty spool")
    assert not rejected_units(spool_dir)
    for fname in expected:
        ids = posted_ids(data_dir, fname)
        assert len(ids) == len(set(ids))


# -- HTTP details: credentials in the URL, redirects, proxies ---------------------

@pytest.fixture
def recording_server():
    """A real HTTP server on loopback that notes every request and answers
    with the next of ``answers`` (status, headers) or 200 OK."""
    import http.server

    seen, answers = [], []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append({"line": self.requestline, "headers": dict(self.headers),
                         "form": urllib.parse.parse_qs(body.decode("ascii"))})
            status, headers = answers.pop(0) if answers else (200, {})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            text = b"OK\n" if status == 200 else b"not here\n"
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield "http://127.0.0.1:%d" % httpd.server_address[1], seen, answers
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_credentials_in_the_url_go_as_basic_auth_not_into_the_host(recording_server, make_uploader, caplog):
    base, seen, _ = recording_server
    url = base.replace("http://", "http://kei%20box:p%40ss@") + "/kei/upload.php?site=1"
    make_uploader(url)[1].put(["day.txt", "hello\n"])
    wait_for(lambda: seen, message="the request")
    assert seen[0]["line"] == "POST /kei/upload.php?site=1 HTTP/1.1"
    assert seen[0]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"kei box:p@ss").decode()
    assert seen[0]["form"]["data"] == ["hello\n"] and seen[0]["form"]["key"] == [KEY]
    assert "p@ss" not in caplog.text and "p%40ss" not in caplog.text


def test_a_redirect_is_not_followed_but_retried(recording_server, make_uploader, caplog):
    base, seen, answers = recording_server
    answers.append((302, {"Location": base + "/elsewhere.php"}))
    make_uploader(base + "/upload.php")[1].put(["day.txt", "hello\n"])
    wait_for(lambda: len(seen) == 2, message="the retry after the 302")
    # the same POST to the same place again, never a GET to the Location
    assert [s["line"] for s in seen] == ["POST /upload.php HTTP/1.1"] * 2
    assert seen[1]["form"] == seen[0]["form"]
    assert "HTTP 302" in caplog.text


def test_the_proxy_variables_are_honoured(recording_server, make_uploader, monkeypatch):
    base, seen, _ = recording_server
    monkeypatch.setenv("http_proxy", base)               # the recording server is the proxy
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    make_uploader("http://upload.kei.invalid/upload.php")[1].put(["day.txt", "via proxy\n"])
    wait_for(lambda: seen, message="the request at the proxy")
    assert seen[0]["line"] == "POST http://upload.kei.invalid/upload.php HTTP/1.1"
    assert seen[0]["form"]["data"] == ["via proxy\n"]
