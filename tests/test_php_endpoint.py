"""php/upload.php against a real ``php -S`` with parallel worker processes."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
import requests

from phpserver import php_server_factory  # noqa: F401 - fixture
from support import REPO

KEY = "test-key-0123456789abcdef"
PHP_DIR = REPO / "php"


@pytest.fixture
def data_dir(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def server_env(data_dir: Path, **settings: str) -> dict:
    env = {"KEI_DATA_DIR": str(data_dir), "KEI_UPLOAD_KEY": KEY,
           "KEI_MIN_INTERVAL": "0", "KEI_MAX_BYTES": "1000"}
    env.update(settings)
    return env


@pytest.fixture
def endpoint(php_server_factory, data_dir):  # noqa: F811
    server = php_server_factory(PHP_DIR, env=server_env(data_dir), workers=4)
    return server.url("upload.php")


def post(url, **fields):
    form = {"type": "text", "key": KEY, "fname": "x.txt", "data": "a\n"}
    form.update(fields)
    form = {name: value for name, value in form.items() if value is not None}
    return requests.post(url, data=form, timeout=10)


def user_files(data_dir: Path) -> dict:
    """The uploaded files (not the endpoint's own dot files) and their bytes."""
    return {p.name: p.read_bytes() for p in data_dir.iterdir() if not p.name.startswith(".")}


def php_dir_listing():
    return sorted(str(p.relative_to(PHP_DIR)) for p in PHP_DIR.rglob("*"))


def test_ok_appends_exactly_the_bytes_sent(endpoint, data_dir):
    first = "2026/11/23 10:00,BR,E7,312.5\n"
    second = "2026/11/23 10:10,温度,T1,21.25\r\n"   # UTF-8 and CRLF kept as sent
    answer = post(endpoint, fname="sum20261123-log.txt", data=first)
    assert (answer.status_code, answer.text) == (200, "OK.")
    assert post(endpoint, fname="sum20261123-log.txt", data=second).text == "OK."
    assert post(endpoint, fname="b.csv", data="1,2\n").text == "OK."
    assert user_files(data_dir) == {"sum20261123-log.txt": (first + second).encode(),
                                    "b.csv": b"1,2\n"}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_only_post_is_accepted(endpoint, data_dir, method):
    answer = requests.request(method, endpoint, data={"type": "text", "key": KEY,
                                                      "fname": "x.txt", "data": "a"}, timeout=10)
    assert answer.status_code == 405
    assert answer.text.startswith("Error:")
    assert answer.headers["Allow"] == "POST"
    assert user_files(data_dir) == {}


@pytest.mark.parametrize("key", ["wrong", "", KEY[:-1], KEY + "x", None])
def test_bad_key_is_403(endpoint, data_dir, key):
    answer = post(endpoint, key=key)
    assert answer.status_code == 403
    assert answer.text == "Error: bad key"
    assert user_files(data_dir) == {}


def test_no_configured_key_refuses_everything_with_503(php_server_factory, data_dir):  # noqa: F811
    server = php_server_factory(PHP_DIR, env=server_env(data_dir, KEI_UPLOAD_KEY=""))
    for key in ("", "anything"):
        answer = post(server.url("upload.php"), key=key)
        assert answer.status_code == 503
        assert answer.text.startswith("Error:")
    assert user_files(data_dir) == {}


@pytest.mark.parametrize("fname", [
    "../x.txt", "a/b.txt", "a\\b.txt", "/etc/passwd.txt", "..", ".txt",
    "x.php", "x.txt.php", "x.php.txt", "x.phtml", "x.phar.csv", "upload.php", "config.php",
    ".htaccess", ".x.txt.ids", "x", "x.", "x..txt", "x.TXT", "x.txt\n", "x.txt\x00.php",
    " x.txt", "x.txt ", "x y.txt", "%2e%2e/x.txt", "x" * 97 + ".txt", "",
])
def test_bad_file_names_are_400_and_write_nothing(endpoint, data_dir, fname):
    before = php_dir_listing()
    answer = post(endpoint, fname=fname)
    assert answer.status_code == 400, (fname, answer.text)
    assert answer.text.startswith("Error: ")
    assert user_files(data_dir) == {}
    assert not list(data_dir.parent.glob("*.txt"))          # nothing beside data_dir
    assert php_dir_listing() == before                      # no file appeared in php/


@pytest.mark.parametrize("fname", ["x.txt", "sum20261123-my_log.txt", "a.b.c.csv",
                                   "x" * 96 + ".txt", "-_.txt"])
def test_good_file_names_are_accepted(endpoint, data_dir, fname):
    assert post(endpoint, fname=fname).text == "OK."
    assert user_files(data_dir) == {fname: b"a\n"}


@pytest.mark.parametrize("fields", [{"type": None}, {"type": "binary"}, {"data": ""},
                                    {"data": None}, {"id": "has space"}, {"id": "x" * 65},
                                    {"id": "a/b"}])
def test_other_bad_fields_are_400(endpoint, data_dir, fields):
    answer = post(endpoint, **fields)
    assert answer.status_code == 400, answer.text
    assert user_files(data_dir) == {}


def test_data_size_limit_is_413(endpoint, data_dir):
    answer = post(endpoint, data="x" * 1001)
    assert answer.status_code == 413
    assert answer.text == "Error: data larger than 1000 bytes"
    assert user_files(data_dir) == {}
    # The limit counts bytes, not characters: 334 three-byte characters.
    assert post(endpoint, data="あ" * 334).status_code == 413
    assert post(endpoint, data="x" * 1000).text == "OK."
    assert user_files(data_dir) == {"x.txt": b"x" * 1000}


def test_rate_limit_answers_429_with_retry_after_then_accepts(php_server_factory, data_dir):  # noqa: F811
    # An interval of a few seconds: the second POST (milliseconds later) is
    # surely inside it, even on a slow CI machine.
    server = php_server_factory(PHP_DIR, env=server_env(data_dir, KEI_MIN_INTERVAL="3"))
    url = server.url("upload.php")
    assert post(url, data="1\n").text == "OK."
    answer = post(url, data="2\n")
    assert answer.status_code == 429
    wait = int(answer.headers["Retry-After"])
    assert 1 <= wait <= 3                          # whole seconds, rounded up
    assert answer.text == "Error: too many uploads, retry in %d s" % wait
    assert user_files(data_dir) == {"x.txt": b"1\n"}
    # Let the interval pass without sleeping through it: move the key's last
    # accepted upload (the endpoint's own state file) 3 s into the past.
    rate_path = data_dir / ".kei-rate.json"
    rate = json.loads(rate_path.read_text())
    assert len(rate) == 1
    rate_path.write_text(json.dumps({who: last - 3 for who, last in rate.items()}))
    answer = post(url, data="2\n")
    assert (answer.status_code, answer.text) == (200, "OK.")
    assert user_files(data_dir) == {"x.txt": b"1\n2\n"}
    assert post(url, data="3\n").status_code == 429   # the interval starts again


def test_a_known_id_answers_ok_without_appending(endpoint, data_dir):
    assert post(endpoint, data="one\n", id="batch-1").text == "OK."
    assert post(endpoint, data="one\n", id="batch-1").text == "OK."
    assert post(endpoint, data="two\n", id="batch-2").text == "OK."
    assert post(endpoint, data="one\n", id="batch-1").text == "OK."
    # The same id for another file is another batch.
    assert post(endpoint, fname="y.txt", data="one\n", id="batch-1").text == "OK."
    # Old clients send no id: no de-duplication for them.
    assert post(endpoint, data="old\n").text == "OK."
    assert post(endpoint, data="old\n").text == "OK."
    assert user_files(data_dir) == {"x.txt": b"one\ntwo\nold\nold\n", "y.txt": b"one\n"}


def test_a_known_id_with_different_data_is_409_and_stores_nothing(endpoint, data_dir):
    assert post(endpoint, data="one\n", id="batch-1").text == "OK."
    answer = post(endpoint, data="other\n", id="batch-1")
    assert answer.status_code == 409
    assert answer.text == "Error: batch id batch-1 was already stored with different data"
    assert post(endpoint, data="one\n", id="batch-1").text == "OK."     # the true retry
    # The same id for another file is another batch, whatever its data.
    assert post(endpoint, fname="y.txt", data="other\n", id="batch-1").text == "OK."
    assert user_files(data_dir) == {"x.txt": b"one\n", "y.txt": b"other\n"}


def test_an_id_stored_before_digests_were_kept_stays_ok(endpoint, data_dir):
    """An ids file from an older endpoint has no digest: its ids answer OK as before."""
    (data_dir / "x.txt").write_bytes(b"one\n")
    (data_dir / ".x.txt.ids").write_text("old-1\n")
    assert post(endpoint, data="whatever\n", id="old-1").text == "OK."
    assert user_files(data_dir) == {"x.txt": b"one\n"}


def test_a_known_id_is_ok_even_inside_the_rate_limit(php_server_factory, data_dir):  # noqa: F811
    server = php_server_factory(PHP_DIR, env=server_env(data_dir, KEI_MIN_INTERVAL="30"))
    url = server.url("upload.php")
    assert post(url, data="one\n", id="b1").text == "OK."
    assert post(url, data="one\n", id="b1").text == "OK."     # retry: no 429
    assert post(url, data="two\n", id="b2").status_code == 429
    assert user_files(data_dir) == {"x.txt": b"one\n"}


def test_a_known_id_is_ok_even_after_the_size_limit_was_lowered(php_server_factory, data_dir):  # noqa: F811
    # Stored, the answer lost, the limit lowered, then the retry: still OK, not 413.
    big = "x" * 80 + "\n"
    server = php_server_factory(PHP_DIR, env=server_env(data_dir, KEI_MAX_BYTES="1000"))
    assert post(server.url("upload.php"), data=big, id="b1").text == "OK."
    server.stop()
    smaller = php_server_factory(PHP_DIR, env=server_env(data_dir, KEI_MAX_BYTES="50"))
    url = smaller.url("upload.php")
    assert post(url, data=big, id="b1").text == "OK."
    answer = post(url, data=big, id="b2")
    assert (answer.status_code, answer.text) == (413, "Error: data larger than 50 bytes")
    assert user_files(data_dir) == {"x.txt": big.encode()}


# A store killed in mid-flight (php stopped, power lost) leaves its pending
# record "<id> <size before> <length>"; what the file then holds decides.
# Here b1 ("one\n", 4 bytes at offset 5) was being stored; then b2 comes,
# then the client's retry of b1.
KILLED_STORES = [
    # after the append, before the id was recorded: b1 is kept, its retry not appended again
    ("after_append", b"zero\none\n", b"zero\none\nnext\n"),
    # in the middle of the append: the partial tail goes, the retry appends b1 once
    ("mid_append", b"zero\non", b"zero\nnext\none\n"),
    # before the append: the retry appends b1 once
    ("before_append", b"zero\n", b"zero\nnext\none\n"),
]


@pytest.mark.parametrize("case,left,expected", KILLED_STORES, ids=[c[0] for c in KILLED_STORES])
def test_a_store_killed_in_mid_flight_is_completed_once(endpoint, data_dir, case, left, expected):
    (data_dir / "x.txt").write_bytes(left)
    (data_dir / ".x.txt.pending").write_text("b1 5 4")
    assert post(endpoint, data="next\n", id="b2").text == "OK."
    assert post(endpoint, data="one\n", id="b1").text == "OK."
    assert (data_dir / "x.txt").read_bytes() == expected
    assert not (data_dir / ".x.txt.pending").exists()


def test_a_store_killed_after_its_append_still_refuses_other_data_for_its_id(endpoint, data_dir):
    (data_dir / "x.txt").write_bytes(b"zero\none\n")
    digest = hashlib.sha256(b"one\n").hexdigest()[:32]
    (data_dir / ".x.txt.pending").write_text("b1 5 4 %s" % digest)
    assert post(endpoint, data="uno\n", id="b1").status_code == 409
    assert post(endpoint, data="one\n", id="b1").text == "OK."
    assert (data_dir / "x.txt").read_bytes() == b"zero\none\n"


def test_id_store_is_bounded_and_keeps_the_newest(php_server_factory, data_dir):  # noqa: F811
    server = php_server_factory(PHP_DIR, env=server_env(data_dir, KEI_IDS_KEEP="5"))
    url = server.url("upload.php")
    for number in range(23):
        assert post(url, data="%d\n" % number, id="id%d" % number).text == "OK."
    ids = (data_dir / ".x.txt.ids").read_text().split()
    assert 5 <= len(ids) < 10
    assert ids[-1] == "id22"
    assert post(url, data="22\n", id="id22").text == "OK."      # still de-duplicated
    assert post(url, data="other\n", id="id22").status_code == 409  # and still checked
    sums = (data_dir / ".x.txt.sums").read_text().split("\n")[:-1]
    assert [line.split()[0] for line in sums] == ids             # trimmed together
    assert user_files(data_dir)["x.txt"] == "".join("%d\n" % n for n in range(23)).encode()


def run_threads(count, target):
    errors = []

    def guarded(number):
        try:
            target(number)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors


def test_concurrent_uploads_never_interleave_lines(endpoint, data_dir):
    # Each upload is 10 lines of 89 bytes: interleaving would break a line.
    def upload(thread):
        for batch in range(5):
            text = "".join("t%02d b%d l%d %s\n" % (thread, batch, line, "x" * 78)
                           for line in range(10))
            answer = post(endpoint, data=text, id="t%d-b%d" % (thread, batch))
            assert answer.text == "OK.", answer.text

    run_threads(20, upload)
    lines = user_files(data_dir)["x.txt"].decode().splitlines()
    assert len(lines) == 20 * 5 * 10
    assert all(len(line) == 88 and line.endswith("x" * 78) for line in lines)
    # Each upload's 10 lines are contiguous and in order.
    for start in range(0, len(lines), 10):
        head = lines[start].split()[:2]
        assert [line.split()[:3] for line in lines[start:start + 10]] == \
            [head + ["l%d" % n] for n in range(10)]


def test_concurrent_resends_of_one_batch_append_once(endpoint, data_dir):
    for round_number in range(5):
        batch_id = "same-%d" % round_number
        run_threads(20, lambda _: post(endpoint, data="%s\n" % batch_id, id=batch_id))
    assert user_files(data_dir)["x.txt"] == b"".join(b"same-%d\n" % n for n in range(5))


def test_data_directory_ships_with_deny_all_rules():
    rules = (PHP_DIR / "data" / ".htaccess").read_text()
    assert "Require all denied" in rules
    assert "Deny from all" in rules
    assert "config.php" in (PHP_DIR / ".htaccess").read_text()


def test_config_php_prints_nothing(endpoint):
    answer = requests.get(endpoint.replace("upload.php", "config.php"), timeout=10)
    assert answer.text == ""
