"""Log hygiene (issue 17.2, 17.5): rate-limited warnings and secret redaction.

Unit tests run the limiter on a FakeClock; the process tests run kei.py on a
real pty carrying 10 MB of noise, and with DEBUG=1 uploading to php -S through
a URL whose query and user info hold secrets.
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import tty

import pytest

from keilib.logutil import REDACTED, LogLimiter, RedactFilter, redact
from phpserver import PHP, PhpServer
from support import PYTHON, REPO, read_text, subprocess_env, wait_for

KEI = str(REPO / "kei.py")


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def captured():
    log = logging.getLogger("test.logutil")
    handler = ListHandler()
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log, handler.lines
    log.removeHandler(handler)


# -- LogLimiter ------------------------------------------------------------------

def test_first_few_in_full_then_one_summary_per_period(captured, fake_clock):
    log, lines = captured
    limiter = LogLimiter(log, fake_clock.monotonic, burst=3, period=600)
    for i in range(1000):
        limiter.warning("/dev/ttyUSB0", "bad lines", "port %s: skipped invalid line %d", "/dev/ttyUSB0", i)
        fake_clock.advance(0.1)                       # 100 s in all: inside the first period
    assert lines[:2] == ["port /dev/ttyUSB0: skipped invalid line 0", "port /dev/ttyUSB0: skipped invalid line 1"]
    assert lines[2].startswith("port /dev/ttyUSB0: skipped invalid line 2 (more bad lines on /dev/ttyUSB0 are "
                               "counted and summarized every 10 minutes)")
    assert len(lines) == 3
    limiter.flush()
    assert len(lines) == 3                            # the period is not over yet
    fake_clock.advance(501)                           # (0.1 s steps add up to a bit under 100 s)
    limiter.flush()
    assert lines[3:] == ["997 more bad lines on /dev/ttyUSB0 in the last 10 minutes "
                         "(last: port /dev/ttyUSB0: skipped invalid line 999)"]
    # Noise goes on: still one line per period, never the burst again.
    for _ in range(3):
        for i in range(600):
            limiter.warning("/dev/ttyUSB0", "bad lines", "port %s: bad %d", "/dev/ttyUSB0", i)
            fake_clock.advance(1)
    limiter.flush()
    assert len(lines) == 3 + 1 + 3
    assert all(re.match(r"600 more bad lines on /dev/ttyUSB0 in the last 10 minutes", line) for line in lines[4:])


def test_quiet_period_ends_the_episode_and_final_flush_reports_the_rest(captured, fake_clock):
    log, lines = captured
    limiter = LogLimiter(log, fake_clock.monotonic, burst=2, period=60)
    for i in range(5):
        limiter.warning("A", "bad lines", "a %d", i)
    limiter.warning("B", "bad lines", "b")           # another source: its own budget
    limiter.warning("A", "rejected readings", "r")   # another kind: its own budget
    assert lines == ["a 0", "a 1 (more bad lines on A are counted and summarized every 1 minute)", "b", "r"]
    fake_clock.advance(60)
    limiter.flush()                                  # the summary of A's three
    assert lines[4] == "3 more bad lines on A in the last 1 minute (last: a 4)"
    fake_clock.advance(60)
    limiter.flush()                                  # a whole quiet period: the episode ends
    limiter.warning("A", "bad lines", "a again")
    assert lines[5] == "a again"                     # shown in full again
    limiter.warning("A", "bad lines", "a more")
    limiter.warning("A", "bad lines", "a hidden")
    limiter.flush(final=True)                        # at stop: nothing counted is left unsaid
    assert lines[-1] == "1 more bad lines on A in the last 1 minute (last: a hidden)"
    assert limiter.suppressed_total == 4


def test_limiter_costs_nothing_when_the_level_is_off(captured, fake_clock):
    log, lines = captured
    log.setLevel(logging.INFO)
    limiter = LogLimiter(log, fake_clock.monotonic)
    for _ in range(100):
        limiter.message(logging.DEBUG, "p", "garbled lines", "x")
    limiter.flush(final=True)
    assert lines == [] and limiter.suppressed_total == 0


# -- redaction ----------------------------------------------------------------------

SECRET = "s3cr3t-T0KEN-9f1e"


@pytest.mark.parametrize("text, kept", [
    ('http://127.0.0.1:8080 "POST /upload.php?token=%s HTTP/1.1" 200 2' % SECRET,
     '"POST /upload.php?%s HTTP/1.1" 200 2' % REDACTED),
    ("https://kei:%s@example.org/upload.php" % SECRET, "https://%s@example.org/upload.php" % REDACTED),
    ("Max retries exceeded with url: /u.php?a=1&key=%s (Caused by ...)" % SECRET,
     "url: /u.php?%s (Caused by ...)" % REDACTED),
    ("fields type=text, key=%s, fname=x" % SECRET, "key=%s, fname=x" % REDACTED),
    ("{'upload_key': '%s', 'fname': 'a'}" % SECRET, "'upload_key': '%s" % REDACTED),
    ("password: %s" % SECRET, "password: %s" % REDACTED),
])
def test_redact_removes_queries_userinfo_and_secret_fields(text, kept):
    cleaned = redact(text)
    assert SECRET not in cleaned
    if kept:
        assert kept in cleaned


def test_redact_leaves_ordinary_lines_alone():
    for text in ["port /dev/ttyUSB0: skipped invalid line b'a,b': expected 3 fields (is it running?)",
                 "B-route: energy unit 0.1 kWh, coefficient 1, 6 digits",
                 "2026/05/20 14:00:00,BR,E7,512,x"]:
        assert redact(text) == text


def test_redact_skips_a_pattern_only_where_it_cannot_match():
    # redact() runs each pattern only when the text holds what a match needs;
    # on 20,000 texts built from the pieces that matter (cases, non-ASCII
    # letters that match ASCII ones case-insensitively) it equals running all three.
    from keilib.logutil import QUERY_PATTERN, SECRET_FIELD_PATTERN, USERINFO_PATTERN

    def every_pattern(text: str) -> str:
        text = re.sub(USERINFO_PATTERN, lambda m: m.group(1) + REDACTED + "@", text)
        text = re.sub(QUERY_PATTERN, "?" + REDACTED, text)
        return re.sub(SECRET_FIELD_PATTERN, lambda m: m.group(1) + m.group(2) + REDACTED, text)

    pieces = ["http://", "HTTPS://", "mqtt://", "u:pw@", "@", "host", "/", "?", "=", "&", "#", ":", " ",
              "'", '"', ",", ";", "token", "ToKeN", "PASSWORD", "passwd", "Pwd", "secret", "auth",
              "Authorization", "credentials", "key", "KEY", "upload_key", "-", "_", "x", "1",
              "\u017fecret", "\u212aey", "caf\u00e9", "\u30c8\u30fc\u30af\u30f3"]
    rng = random.Random(18)
    skipped = 0
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        assert redact(text) == every_pattern(text), text
        skipped += text.isascii() and "=" not in text and "@" not in text and redact(text) == text
    assert skipped > 1000        # the generator made texts that need no pattern, too
    assert redact("\u017fecret=abc") == "\u017fecret=" + REDACTED     # long s: 'secret' to the pattern


def test_filter_redacts_arguments_and_tracebacks(fake_clock):
    record = logging.LogRecord("urllib3", logging.DEBUG, __file__, 1, "%s %s", ("POST", "/u?token=" + SECRET), None)
    try:
        raise ConnectionError("Max retries exceeded with url: /u?token=" + SECRET)
    except ConnectionError:
        record.exc_info = sys.exc_info()
    assert RedactFilter().filter(record)
    line = logging.Formatter().format(record)
    assert SECRET not in line and "POST /u?" + REDACTED in line and "ConnectionError" in line


# -- real processes -------------------------------------------------------------------

NOISE_CONFIG = """
import queue
from keilib.recorder import FileRecorder
from keilib.serial import SerialReader

record_que = queue.Queue()
worker_def = [
    {'class': SerialReader, 'args': {'port': %(port)r, 'baudrate': 115200, 'record_que': record_que}},
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'noise'}},
]
"""


def test_ten_megabytes_of_noise_on_a_pty_give_a_bounded_log(tmp_path):
    master, slave = os.openpty()
    tty.setraw(slave)                 # the test keeps the slave open: nothing is lost before kei opens it
    port = str(tmp_path / "usb-noise-if00-port0")
    os.symlink(os.ttyname(slave), port)
    (tmp_path / "keiconf.py").write_text(textwrap.dedent(NOISE_CONFIG % {"port": port}))
    proc = subprocess.Popen([PYTHON, KEI], cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "kei.log"
    try:
        wait_for(lambda: "opened at 115200 baud" in read_text(log), timeout=15, message="the port opened")
        noise = random.Random(17).getrandbits(8 * 10_000_000).to_bytes(10_000_000, "little")
        view = memoryview(noise + b"\nafter,noise,42\n")
        while view:
            view = view[os.write(master, view[:65536]):]
        wait_for(lambda: list(tmp_path.glob("2*-noise.txt")) and
                 ",after,noise,42," in read_text(next(tmp_path.glob("2*-noise.txt"))),
                 timeout=40, message="the good line after the noise")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()
        os.close(master)
        os.close(slave)
    text = read_text(log)
    full = re.findall(r" - WARNING - port \S+: skipped ", text)
    assert len(full) == LogLimiter.BURST
    # The rest is one summary line, written at the stop (the run is shorter than a period).
    summary = re.findall(r"(\d+) more bad lines on %s in the last \d+ minutes?" % re.escape(port), text)
    assert len(summary) == 1 and int(summary[0]) > 10_000     # ~39,000 lines of noise (1 in 256 bytes is LF)
    assert len(text.encode()) < 20_000, "kei.log grew to %d bytes" % len(text.encode())


@pytest.mark.skipif(PHP is None, reason="php-cli is not installed (.ci/run installs it)")
def test_debug_log_never_shows_the_url_query_or_user_info(tmp_path):
    token, password, key = "tok-5e1f-QUERYSECRET", "pw-77c1-USERINFO", "key-93ab-UPLOADKEY"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = PhpServer(REPO / "php", env={"KEI_DATA_DIR": str(data_dir), "KEI_UPLOAD_KEY": key,
                                          "KEI_MIN_INTERVAL": "0"})
    url = server.url("upload.php").replace("http://", "http://kei:%s@" % password) + "?token=" + token
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "keiconf.py").write_text(textwrap.dedent("""
        import queue
        from keilib.recorder import FileRecorder
        from keilib.uploader import HttpPostUploader
        from upload_e2e_workers import PastReader, resume_clock

        clock = resume_clock('reader.state', '2026-11-20T23:20:00', 2400)
        record_que = queue.Queue()
        upload_que = queue.Queue()
        worker_def = [
            {'class': PastReader, 'args': {'record_que': record_que, 'state_path': 'reader.state',
                                           'per_run': 25, 'clock': clock}},
            {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'redact',
                                             'upload_que': upload_que, 'clock': clock}},
            {'class': HttpPostUploader, 'args': {'upload_que': upload_que, 'target_url': %r,
                                                 'upload_key': %r, 'retry_min': 0.05, 'retry_max': 0.3}},
        ]
    """ % (url, key)))
    out_path = tmp_path / "stdout.txt"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([PYTHON, KEI], cwd=workdir, env=subprocess_env(DEBUG="1"),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        # The server is down first: the failed attempts' messages carry the URL too.
        wait_for(lambda: "failed" in read_text(out_path), timeout=20, message="a failed upload")
        server.start()
        wait_for(lambda: list(data_dir.glob("sum*-redact.txt")), timeout=20, message="an upload stored")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()
        server.close()
    output = read_text(out_path)
    # the failures name the endpoint, without its user info and query
    assert " - DEBUG - " in output and "upload to %s failed" % server.url("upload.php") in output
    for secret in (token, password, key):
        assert secret not in output


def test_broute_reader_limits_malformed_frame_warnings(caplog, fake_clock):
    from keilib.broute import BrouteReader
    from keilib.skstack import BP35C2
    caplog.set_level(logging.WARNING, logger="keilib.broute")
    reader = BrouteReader(BP35C2("/dev/null"), "0123456789ABCDEF0123456789ABCDEF", "PASSWORD1234",
                          clock=fake_clock)
    for i in range(50):                                # a garbled link: 50 broken frames
        reader.handle_frame(bytes([0x10, 0x81, i]))
    warnings = [r.getMessage() for r in caplog.records if "malformed ECHONET frame" in r.getMessage()]
    assert len(warnings) == LogLimiter.BURST
    fake_clock.advance(LogLimiter.PERIOD)
    reader.log_limit.flush()
    assert caplog.records[-1].getMessage().startswith(
        "45 more malformed frames on the meter link in the last 10 minutes (last: B-route: malformed")


def test_wisun_driver_limits_garbled_lines_at_debug(caplog, fake_clock):
    from keilib.sim import protocol_sim
    from keilib.sim.wisun import WisunModule
    from keilib.skstack import BP35C2
    caplog.set_level(logging.DEBUG, logger="keilib.skstack")
    module = WisunModule(kind="bp35c2", latency="zero", clock=fake_clock, seed=7)
    protocol_sim.register("logutil-garbled", module)
    device = BP35C2("sim://wisun?name=logutil-garbled")
    device.clock = fake_clock
    try:
        device.open()
        for _ in range(30):
            module.inject_garbage()
        wait_for(lambda: device._read_items() is not None and device.log_limit.suppressed_total >= 25,
                 timeout=10, message="30 garbled lines read")
    finally:
        device.close()
        module.close()
        protocol_sim.forget("logutil-garbled")
    skipped = [r for r in caplog.records if r.getMessage().startswith("<< skipped")]
    assert len(skipped) == LogLimiter.BURST


# -- DailyLogFile: kei.log renamed at local midnight, three kept -------------------

@pytest.fixture
def local_zone(monkeypatch):
    """Set the local time zone (a POSIX TZ string: no tz database needed)."""
    import time

    def use(zone: str) -> None:
        monkeypatch.setenv("TZ", zone)
        time.tzset()
    yield use
    monkeypatch.undo()
    time.tzset()


def local(*fields: int) -> float:
    import time
    year, month, day, hour, minute = (fields + (0, 0))[:5]
    return time.mktime((year, month, day, hour, minute, 0, 0, 0, -1))


def log_at(handler: logging.Handler, when: float, text: str) -> None:
    handler.handle(logging.makeLogRecord({"name": "kei", "msg": text, "levelno": logging.INFO,
                                          "levelname": "INFO", "created": when}))


def open_log(path, last_written: float, content: str = ""):
    """A DailyLogFile on ``path``, which holds ``content`` last written at ``last_written``."""
    from keilib.logutil import DailyLogFile
    path.write_text(content)
    os.utime(path, (last_written, last_written))
    handler = DailyLogFile(str(path), keep=3)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def test_daily_log_file_rotates_at_the_first_record_from_midnight_on(tmp_path, local_zone):
    local_zone("JST-9")
    log = tmp_path / "kei.log"
    handler = open_log(log, local(2026, 12, 1, 8))
    try:
        log_at(handler, local(2026, 12, 1, 9), "morning")
        log_at(handler, local(2026, 12, 1, 23, 59) + 59.9, "last of the day")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["kei.log"]
        log_at(handler, local(2026, 12, 2), "midnight")
        log_at(handler, local(2026, 12, 2, 0, 1), "after")
    finally:
        handler.close()
    assert read_text(tmp_path / "kei.log.2026-12-01") == "morning\nlast of the day\n"
    assert read_text(log) == "midnight\nafter\n"


def test_daily_log_file_keeps_the_newest_three_and_nothing_else_is_touched(tmp_path, local_zone):
    local_zone("JST-9")
    others = ["kei.log.old", "kei.log.2026-01-01.gz", "kei.log.2026-1-1", "other.log.2026-01-01"]
    for name in others:
        (tmp_path / name).write_text("keep me\n")
    log = tmp_path / "kei.log"
    handler = open_log(log, local(2026, 12, 1, 8))
    try:
        for day in range(1, 7):                          # Dec 1 .. Dec 6, one line at noon each
            log_at(handler, local(2026, 12, day, 12), "day %d" % day)
    finally:
        handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(others + ["kei.log", "kei.log.2026-12-03", "kei.log.2026-12-04",
                                     "kei.log.2026-12-05"]), names
    assert read_text(tmp_path / "kei.log.2026-12-05") == "day 5\n"
    assert read_text(log) == "day 6\n"


def test_daily_log_file_left_by_the_last_run_is_named_by_its_own_day(tmp_path, local_zone):
    local_zone("JST-9")
    log = tmp_path / "kei.log"
    handler = open_log(log, local(2026, 11, 27, 22), "written before the box was switched off\n")
    try:
        log_at(handler, local(2026, 12, 1, 7), "started again")
    finally:
        handler.close()
    assert read_text(tmp_path / "kei.log.2026-11-27") == "written before the box was switched off\n"
    assert read_text(log) == "started again\n"


def test_daily_log_file_follows_local_midnight_across_a_dst_change(tmp_path, local_zone):
    # Central Europe: 25 October 2026 has 25 hours; the log still turns at local midnight.
    local_zone("CET-1CEST,M3.5.0,M10.5.0/3")
    log = tmp_path / "kei.log"
    handler = open_log(log, local(2026, 10, 25, 1))
    try:
        log_at(handler, local(2026, 10, 25, 23, 30), "late on the long day")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["kei.log"]
        log_at(handler, local(2026, 10, 26, 0, 0), "next day")
    finally:
        handler.close()
    assert read_text(tmp_path / "kei.log.2026-10-25") == "late on the long day\n"
    assert read_text(log) == "next day\n"


def test_daily_log_file_that_cannot_be_renamed_loses_no_line(tmp_path, local_zone, capsys):
    local_zone("JST-9")
    log = tmp_path / "kei.log"
    handler = open_log(log, local(2026, 12, 1, 8))
    (tmp_path / "kei.log.2026-12-01").mkdir()            # the backup's name is taken by a folder
    (tmp_path / "kei.log.2026-12-01" / "x").write_text("")
    try:
        log_at(handler, local(2026, 12, 1, 9), "before")
        log_at(handler, local(2026, 12, 2, 0, 5), "after midnight")
        log_at(handler, local(2026, 12, 2, 0, 6), "tried again tomorrow, not now")
    finally:
        handler.close()
    assert read_text(log) == "before\nafter midnight\ntried again tomorrow, not now\n"
    errors = capsys.readouterr().err
    assert errors.count("--- Logging error ---") == 1 and "kei.log.2026-12-01" in errors, errors
