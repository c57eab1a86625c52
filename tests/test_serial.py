"""SerialReader over real pseudo-terminals; the codec, splitter and checkers directly."""

from __future__ import annotations

import datetime
import logging
import os
import queue
import re
import threading
import time
import tty
from typing import List, Optional

import pytest

from keilib.errors import ConfigError, ProtocolError
from keilib.logutil import LogLimiter
from keilib.record import Record
from keilib.serial import (Checker, DuplicateFilter, LineSplitter, OutlierChecker, Reading, SerialReader,
                           parse_line)
from support import wait_for


class Pty:
    """A pseudo-terminal standing in for a USB serial adapter.

    The reader opens ``link`` (like /dev/serial/by-id/...).  ``unplug()`` closes
    the pty and removes the link; ``plug()`` makes a new pty behind the link.
    The test keeps the slave open too, so nothing written is lost while the
    reader has the port closed.
    """

    def __init__(self, link: str, plugged: bool = True):
        self.link = link
        self.master: Optional[int] = None
        self.slave: Optional[int] = None
        if plugged:
            self.plug()

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.symlink(os.ttyname(self.slave), self.link)

    def unplug(self) -> None:
        os.remove(self.link)
        for fd in (self.master, self.slave):
            os.close(fd)
        self.master = self.slave = None

    def write(self, data: bytes) -> None:
        while data:
            data = data[os.write(self.master, data):]

    def close(self) -> None:
        if self.master is not None:
            self.unplug()


@pytest.fixture
def pty(tmp_path):
    link = Pty(str(tmp_path / "usb-FTDI_sensor-if00-port0"))
    yield link
    link.close()


class Harness:
    """A started SerialReader with its queue; collects what it recorded."""

    def __init__(self, reader: SerialReader, record_que: "queue.Queue[Record]"):
        self.reader = reader
        self.record_que = record_que
        self.records: List[Record] = []

    def drain(self) -> List[Record]:
        while True:
            try:
                self.records.append(self.record_que.get_nowait())
            except queue.Empty:
                return self.records

    def wait_records(self, count: int, timeout: float = 5.0) -> List[Record]:
        wait_for(lambda: len(self.drain()) >= count, timeout=timeout, message="%d records" % count)
        return self.records

    def values(self) -> list:
        return [(r.unit, r.sensor, r.value, r.data_id) for r in self.drain()]


@pytest.fixture
def start_reader(fake_clock):
    started: List[SerialReader] = []

    def start(port: str, cls=SerialReader, maxsize: int = 0, wait_open: bool = True, **kwargs) -> Harness:
        record_que: "queue.Queue[Record]" = queue.Queue(maxsize)
        kwargs.setdefault("clock", fake_clock)
        reader = cls(port, 115200, record_que=record_que, **kwargs)
        reader.start()
        started.append(reader)
        if wait_open:
            wait_for(lambda: reader.connected, timeout=5, message="port opened")
        return Harness(reader, record_que)

    yield start
    for reader in started:
        assert reader.stop(5), "reader did not stop"


def warnings_about(caplog, text: str, level: int = logging.WARNING) -> List[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "keilib.serial" and r.levelno == level and text in r.getMessage()]


def advance_until(clock, predicate, step: float = 1.0, timeout: float = 5.0) -> None:
    """Move the fake clock in steps until ``predicate`` holds (reopen back-offs)."""
    def tick():
        if predicate():
            return True
        clock.advance(step)
        time.sleep(0.005)
        return predicate()
    wait_for(tick, timeout=timeout, message=getattr(predicate, "__name__", "condition"))


# -- codec ----------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    (b"ar1,temp,23.25,117", Reading("ar1", "temp", 23.25, "117")),
    (b"ar1,temp,23.25,117\r", Reading("ar1", "temp", 23.25, "117")),
    (b"ar1,hum,41", Reading("ar1", "hum", 41, None)),
    (b" node_2 , t-1 ,\t-3.5e2 , a_B-9 ", Reading("node_2", "t-1", -350.0, "a_B-9")),
    (b"U,S,+.5", Reading("U", "S", 0.5, None)),
    (b"U,S,7.", Reading("U", "S", 7.0, None)),
    (b"U,S,999999999999999", Reading("U", "S", 999999999999999, None)),      # 15 digits: the largest
    (b"U,S,-9.99e14", Reading("U", "S", -9.99e14, None)),
    (b"U,S,1e-300", Reading("U", "S", 1e-300, None)),
])
def test_parse_line_accepts_the_format(raw, expected):
    reading = parse_line(raw)
    assert reading == expected
    assert type(reading.value) is type(expected.value)


@pytest.mark.parametrize("raw, reason", [
    (b"ar1,temp", "got 2 field(s)"),
    (b"ar1,temp,1,2,3", "got 5 field(s)"),
    (b"ar1", "got 1 field(s)"),
    (b",temp,1", "bad unit id ''"),
    (b"a r,temp,1", "bad unit id 'a r'"),
    (b"ar1,te.mp,1", "bad sensor id 'te.mp'"),
    (b"ar1,temp,1,", "bad data id ''"),
    (b"ar1,temp,nan", "not a number"),
    (b"ar1,temp,inf", "not a number"),
    (b"ar1,temp,-Infinity", "not a number"),
    (b"ar1,temp,1e999", "out of range"),
    (b"ar1,temp,1.7e308", "out of range (|value| < 1e15)"),         # two of them averaged to inf
    (b"ar1,temp,-1e15", "out of range (|value| < 1e15)"),
    (b"ar1,temp,1000000000000000", "out of range (|value| < 1e15)"),   # 16 digits
    (b"ar1,temp," + b"9" * 250, "value 99999999999999999999... (250 characters) is out of range"),
    (b"ar1,temp,0." + b"0" * 40 + b"1", "(43 characters) is out of range"),
    (b"ar1,temp,0x10", "not a number"),
    (b"ar1,temp,1_000", "not a number"),
    (b"ar1,temp,", "not a number"),
    (b"ar1,temp,12abc", "not a number"),
    (b"ar1,t\xe9mp,1", "not UTF-8 (byte 0xe9 at 5)"),
    (b"\xff\xfe\x00\x81", "not UTF-8"),
    (b"ar\x001,temp,1", "bad unit id"),
])
def test_parse_line_rejects_with_a_reason(raw, reason):
    with pytest.raises(ProtocolError) as info:
        parse_line(raw)
    assert reason in str(info.value)


def test_splitter_whole_halves_bytewise_and_garbage_in_front():
    stream = b"\x00\xffjunk\nA,t,1,1\r\nA,t,2\n" + b"x" * 300 + b"\nA,t,3,3\n"
    expected = [(b"\x00\xffjunk", False), (b"A,t,1,1\r", False), (b"A,t,2", False),
                (b"x" * 256, True), (b"A,t,3,3", False)]
    for size in (len(stream), len(stream) // 2 + 1, 7, 1):
        splitter = LineSplitter(256)
        out = []
        for i in range(0, len(stream), size):
            out += splitter.feed(stream[i:i + size])
        assert out == expected, size


def test_splitter_overlong_costs_one_report_and_bounded_memory():
    splitter = LineSplitter(16)
    assert splitter.feed(b"a" * 10) == []
    assert splitter.feed(b"b" * 10) == [(b"a" * 10 + b"b" * 6, True)]
    for _ in range(100):
        assert splitter.feed(b"c" * 1000) == []          # still the same line: nothing more
        assert len(splitter._buffer) <= 16
    assert splitter.feed(b"tail\nA,t,1\n") == [(b"A,t,1", False)]
    assert splitter.feed(b"x" * 17 + b"\n") == [(b"x" * 16, True)]   # over-long but complete
    assert splitter.feed(b"y" * 16 + b"\n") == [(b"y" * 16, False)]  # exactly the limit is fine


# -- checkers ---------------------------------------------------------------------

def test_outlier_range():
    checker = OutlierChecker()
    checker.add("ar1", "temp", -10, 50, None)
    assert checker.check("ar1", "temp", 20)
    assert not checker.check("ar1", "temp", 50.5)
    assert not checker.check("ar1", "temp", -11)
    assert checker.check("ar1", "temp", 50)             # bounds are inclusive
    assert checker.check("ar1", "temp", -10)
    assert checker.check("other", "temp", 1e9)             # no rule: passes
    assert checker.check("ar1", "hum", -1e9)


def test_outlier_jump_rejected_then_persisting_jump_becomes_the_base():
    checker = OutlierChecker()
    checker.add("ar1", "temp", None, None, 2)
    assert checker.check("ar1", "temp", 20)                # first value is the base
    assert checker.check("ar1", "temp", 21.5)              # within variation: new base
    assert not checker.check("ar1", "temp", 30)            # jump 1: rejected
    assert checker.check("ar1", "temp", 22)                # back near the base: resets the count
    assert not checker.check("ar1", "temp", 30)            # jump 1
    assert not checker.check("ar1", "temp", 31)            # jump 2
    assert checker.check("ar1", "temp", 30.5)              # jump 3: believed, new base 30.5
    assert checker.check("ar1", "temp", 31)                # near the new base
    assert not checker.check("ar1", "temp", 22)            # the old level is now the jump


def test_outlier_out_of_range_does_not_count_as_a_jump():
    checker = OutlierChecker()
    checker.add("u", "s", 0, 100, 1)
    assert checker.check("u", "s", 10)
    assert not checker.check("u", "s", 50)
    assert not checker.check("u", "s", 500)                # out of range: state untouched
    assert not checker.check("u", "s", 50)
    assert checker.check("u", "s", 50)                     # third consecutive jump


@pytest.mark.parametrize("args, text", [
    ((0, "100", 1), "argument 'max' must be a number"),
    ((10, 0, 1), "min 10 is above max 0"),
    ((0, 10, -1), "variation must be >= 0"),
    ((True, 10, 1), "argument 'min' must be a number"),
    ((float("nan"), 10, 1), "argument 'min' must be a number from -1000000000000000 to 1000000000000000"),
    ((0, 1e300, 1), "argument 'max' must be a number from"),
])
def test_outlier_add_validates(args, text):
    with pytest.raises(ConfigError, match=re.escape(text)):
        OutlierChecker().add("u", "s", *args)


def test_checker_base_requires_check():
    with pytest.raises(TypeError):
        Checker()  # type: ignore[abstract]

    class Even(Checker):
        def check(self, unit, sensor, value):
            return value % 2 == 0
    assert Even().check("u", "s", 2) and not Even().check("u", "s", 3)


def test_duplicate_filter_bounds():
    dups = DuplicateFilter(lines=3, seconds=10)
    assert not dups.seen(("u", "s", 1, "1"), 0)
    assert dups.seen(("u", "s", 1, "1"), 5)
    assert dups.seen(("u", "s", 1.0, "1"), 5)              # 1 and 1.0 are the same value
    assert not dups.seen(("u", "s", 1, "1"), 10.5)         # too old: a real reading
    for i in range(3):
        dups.seen(("u", "s", 2, str(i)), 11)
    assert not dups.seen(("u", "s", 1, "1"), 11)           # pushed out by 3 newer lines


# -- constructor --------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, text", [
    (dict(port=None), "argument 'port' must be a device path"),
    (dict(port=""), "argument 'port' must be a device path"),
    (dict(port=" "), "argument 'port' must be a device path"),
    (dict(port="/dev/tty\x00USB0"), "argument 'port' must be a device path"),
    (dict(baudrate="115200"), "argument 'baudrate' must be an integer from 50 to 4000000"),
    (dict(baudrate=0), "argument 'baudrate' must be an integer from 50 to 4000000"),
    (dict(baudrate=10 ** 400), "argument 'baudrate' must be an integer from 50 to 4000000, got an integer "
                               "of 401 digits"),
    (dict(record_que=None), "record_que is required"),
    (dict(record_que=[]), "record_que must be a queue.Queue"),
    (dict(checker=object()), "checker must have a check"),
])
def test_constructor_validates(kwargs, text):
    args = dict(port="/dev/ttyUSB0", baudrate=9600, record_que=queue.Queue())
    args.update(kwargs)
    with pytest.raises(ConfigError, match=re.escape(text)):
        SerialReader(**args)


def test_constructor_does_no_io(tmp_path):
    reader = SerialReader(str(tmp_path / "nothing-here"), 9600, record_que=queue.Queue())
    assert not reader.connected and not reader.is_alive()


def test_worker_def_snippet_in_docstring_loads():
    doc = SerialReader.__doc__
    snippet = doc[doc.index("``worker_def`` entry::") + len("``worker_def`` entry::"):]
    record_que: "queue.Queue[Record]" = queue.Queue()
    entry = eval(snippet.strip(), {"SerialReader": SerialReader, "record_que": record_que,  # noqa: S307
                                   "checker": OutlierChecker()})
    reader = entry["class"](**entry["args"])
    assert reader.record_que is record_que and reader.baudrate == 115200


# -- the reader on a pty ---------------------------------------------------------------

def test_valid_lines_are_recorded_with_their_values_and_arrival_time(pty, start_reader, fake_clock):
    h = start_reader(pty.link)
    pty.write(b"ar1,temp,23.25,117\r\nar1,hum,41\nar2,p,-1.5e3,9\n")
    h.wait_records(3)
    fake_clock.advance(2)
    pty.write(b"ar1,temp,23.5,118\r\n")
    records = h.wait_records(4)
    assert [(r.unit, r.sensor, r.value, r.data_id) for r in records] == [
        ("ar1", "temp", 23.25, "117"), ("ar1", "hum", 41, "x"), ("ar2", "p", -1500.0, "9"),
        ("ar1", "temp", 23.5, "118")]
    start = datetime.datetime(2026, 5, 20, 14, 0, 0)
    assert [r.timestamp for r in records] == [start] * 3 + [start + datetime.timedelta(seconds=2)]
    assert records[0].to_raw_line() == "2026/05/20 14:00:00,ar1,temp,23.25,117"
    assert records[1].to_raw_line() == "2026/05/20 14:00:00,ar1,hum,41,x"
    assert h.reader.stats["records"] == 4


INVALID = [
    (b"\xff\xfe\x00garbled\x81", "not UTF-8", r"b'\xff\xfe\x00garbled\x81'"),
    (b"ar1,t\xe9mp,1,5", "not UTF-8", r"b'ar1,t\xe9mp,1,5'"),
    (b"ar1,temp", "got 2 field(s)", "b'ar1,temp'"),
    (b"ar1,temp,1,2,3", "got 5 field(s)", "b'ar1,temp,1,2,3'"),
    (b"ar1,temp,nan,6", "not a number", "b'ar1,temp,nan,6'"),
    (b"ar1,temp,inf", "not a number", "b'ar1,temp,inf'"),
    (b"ar1,temp,1e999", "out of range", "b'ar1,temp,1e999'"),
    (b"a;1,temp,3", "bad unit id", "b'a;1,temp,3'"),
    (b"Z" * 1000, "longer than 256 bytes", "b'" + "Z" * 80 + "'...(256 bytes)"),
]


@pytest.mark.parametrize("bad, reason, shown", INVALID, ids=[i[1] + str(n) for n, i in enumerate(INVALID)])
def test_each_invalid_kind_is_skipped_with_one_log_line(pty, start_reader, caplog, bad, reason, shown):
    caplog.set_level(logging.WARNING, logger="keilib.serial")
    h = start_reader(pty.link)
    pty.write(b"ok,a,1,1\n" + bad + b"\r\nok,a,2,2\n")
    records = h.wait_records(2)
    wait_for(lambda: h.reader.stats["invalid"] == 1)
    assert [(r.value, r.data_id) for r in records] == [(1, "1"), (2, "2")]
    messages = [r.getMessage() for r in caplog.records if r.name == "keilib.serial"]
    assert len(messages) == 1, messages
    assert reason in messages[0] and pty.link in messages[0] and shown in messages[0]


def test_a_burst_of_garbage_costs_only_itself(pty, start_reader, caplog):
    caplog.set_level(logging.WARNING, logger="keilib.serial")
    h = start_reader(pty.link)
    garbage = b"".join(bad + b"\n" for bad, _, _ in INVALID)
    good = [b"u,s,%d,%d\n" % (i, i) for i in range(20)]
    pty.write(garbage + b"".join(good[:10]) + b"\x80\x80" * 200 + b"\n" + b"".join(good[10:]) + b"\n\r\n\n")
    records = h.wait_records(20)
    assert [r.value for r in records] == list(range(20))
    wait_for(lambda: h.reader.stats["invalid"] == len(INVALID) + 1)
    # The first few in full, the rest counted for the summary (blank lines are silent).
    assert len(INVALID) + 1 > LogLimiter.BURST
    assert len(warnings_about(caplog, "skipped")) == LogLimiter.BURST
    assert h.reader.log_limit.suppressed_total == len(INVALID) + 1 - LogLimiter.BURST


def test_resent_lines_are_dropped_and_repeats_without_dataid_kept(pty, start_reader, caplog):
    caplog.set_level(logging.DEBUG, logger="keilib.serial")
    h = start_reader(pty.link)
    pty.write(b"tw1,t,20.5,7\n" b"tw1,t,20.5,7\n"      # radio resend: dropped
              b"tw1,t,20.5,8\n"                      # same value, new id: a reading
              b"tw1,h,20.5,7\n"                      # other sensor, same id: a reading
              b"tw1,t,20.50,7\r\n"                   # same value written differently: a resend
              b"ar,t,5\n" b"ar,t,5\n" b"ar,t,5\n"    # no DATAID: every line is a reading
              b"end,t,1,1\n")
    h.wait_records(7)
    assert h.values() == [("tw1", "t", 20.5, "7"), ("tw1", "t", 20.5, "8"), ("tw1", "h", 20.5, "7"),
                          ("ar", "t", 5, "x"), ("ar", "t", 5, "x"), ("ar", "t", 5, "x"), ("end", "t", 1, "1")]
    assert h.reader.stats["duplicates"] == 2
    assert len(warnings_about(caplog, "resent line", logging.DEBUG)) == 2


def test_same_key_after_the_window_is_a_new_reading(pty, start_reader, fake_clock):
    h = start_reader(pty.link)
    pty.write(b"n,t,1,0\n")
    h.wait_records(1)
    fake_clock.advance(SerialReader.DUP_SECONDS)
    pty.write(b"n,t,1,0\n")                               # the id counter wrapped: a real reading
    h.wait_records(2)
    lines = b"".join(b"n,t,%d,%d\n" % (i, i) for i in range(1, SerialReader.DUP_LINES + 1))
    pty.write(lines + b"n,t,1,0\n")                       # pushed out of the last DUP_LINES lines
    h.wait_records(SerialReader.DUP_LINES + 3)
    assert h.values()[-1] == ("n", "t", 1, "0")


def test_checker_rejects_outliers_with_a_log_line(pty, start_reader, caplog):
    caplog.set_level(logging.WARNING, logger="keilib.serial")
    checker = OutlierChecker()
    checker.add("ar1", "temp", -20, 60, 3)
    h = start_reader(pty.link, checker=checker)
    pty.write(b"ar1,temp,20,1\nar1,temp,85,2\nar1,temp,40,3\nar1,temp,41,4\nar1,temp,40.5,5\n"
              b"ar1,temp,41,6\nar1,hum,999,7\n")
    h.wait_records(4)
    wait_for(lambda: h.reader.stats["rejected"] == 3)
    assert [(r.sensor, r.value) for r in h.drain()] == [("temp", 20), ("temp", 40.5), ("temp", 41), ("hum", 999)]
    rejected = warnings_about(caplog, "rejected by the checker")
    assert rejected == ["port %s: ar1,temp value %r rejected by the checker" % (pty.link, v) for v in (85, 40, 41)]


def test_a_failing_user_checker_does_not_stop_the_reader(pty, start_reader, caplog):
    class Broken(Checker):
        def check(self, unit, sensor, value):
            return 1 / (value - 3) != 0

    h = start_reader(pty.link, checker=Broken())
    pty.write(b"u,s,1\nu,s,3\nu,s,5\n")
    assert [r.value for r in h.wait_records(3)] == [1, 3, 5]
    assert len(warnings_about(caplog, "checker failed on u,s,3 (ZeroDivisionError", logging.ERROR)) == 1
    assert h.reader.is_alive()


def test_unplug_and_replug_resumes_and_loses_nothing_after(pty, start_reader, fake_clock, caplog):
    caplog.set_level(logging.INFO, logger="keilib.serial")
    h = start_reader(pty.link)
    pty.write(b"".join(b"u,s,%d,%d\n" % (i, i) for i in range(10)))
    h.wait_records(10)
    pty.unplug()
    wait_for(lambda: not h.reader.connected, message="reader noticed the unplug")
    wait_for(lambda: warnings_about(caplog, "lost"))
    for _ in range(5):                         # several failed reopen attempts...
        fake_clock.advance(SerialReader.REOPEN_MAX)
        time.sleep(0.02)
    assert len(warnings_about(caplog, "lost")) == 1           # ...logged once
    assert not warnings_about(caplog, "cannot open")
    pty.plug()
    advance_until(fake_clock, lambda: h.reader.connected, step=SerialReader.REOPEN_MAX)
    assert len(warnings_about(caplog, "back after")) == 1
    pty.write(b"".join(b"u,s,%d,%d\n" % (i, i) for i in range(10, 300)))
    records = h.wait_records(300)
    assert [r.value for r in records] == list(range(300))
    assert h.reader.is_alive()


def test_port_missing_at_start_then_appearing(tmp_path, start_reader, fake_clock, caplog):
    caplog.set_level(logging.INFO, logger="keilib.serial")
    pty = Pty(str(tmp_path / "ttyUSB-later"), plugged=False)
    try:
        h = start_reader(pty.link, wait_open=False)
        wait_for(lambda: warnings_about(caplog, "cannot open"))
        for _ in range(6):
            fake_clock.advance(SerialReader.REOPEN_MAX)
            time.sleep(0.02)
        assert len(warnings_about(caplog, "cannot open")) == 1
        assert not h.reader.connected and h.reader.is_alive()
        pty.plug()
        advance_until(fake_clock, lambda: h.reader.connected, step=SerialReader.REOPEN_MAX)
        assert len(warnings_about(caplog, "appeared after")) == 1
        pty.write(b"late,s,1,1\n")
        assert h.wait_records(1)[0].unit == "late"
    finally:
        pty.close()


class WaitRecordingReader(SerialReader):
    """Records each back-off delay instead of sleeping it; stops after 8."""

    def wait(self, seconds):
        self.waits = getattr(self, "waits", []) + [seconds]
        if len(self.waits) >= 8:
            self.request_stop()
        return self.stopping


def test_reopen_backoff_doubles_to_the_cap(tmp_path):
    reader = WaitRecordingReader(str(tmp_path / "never"), 9600, record_que=queue.Queue())
    reader.start()
    reader.join(5)
    assert reader.waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def flood(master: int, pattern: bytes, done: threading.Event, size: int = 997) -> None:
    """Write ``pattern`` over and over as one endless stream, ``size`` bytes per write
    (not a multiple of the line length: writes end mid-line, as a UART's do),
    as fast as the pty takes it, until ``done``."""
    os.set_blocking(master, False)
    stream = pattern * (size // len(pattern) + 2)
    offset = 0
    while not done.is_set():
        try:
            written = os.write(master, stream[offset:offset + size])
        except BlockingIOError:
            done.wait(0.001)    # the pty buffer is full: the reader is behind
            continue
        offset = (offset + written) % len(pattern)


class SlowBackoffReader(SerialReader):
    REOPEN_FIRST = 30.0


@pytest.mark.parametrize("state", ["idle", "flooded", "port missing", "port lost", "queue full"])
def test_stop_is_honoured_within_a_second_in_every_state(tmp_path, pty, start_reader, state, caplog):
    from keilib.clock import SYSTEM_CLOCK
    if state == "port missing":
        h = start_reader(str(tmp_path / "absent"), cls=SlowBackoffReader, clock=SYSTEM_CLOCK, wait_open=False)
        wait_for(lambda: warnings_about(caplog, "cannot open"))
    else:
        h = start_reader(pty.link, cls=SlowBackoffReader, clock=SYSTEM_CLOCK,
                         maxsize=1 if state == "queue full" else 0)
    if state == "flooded":
        done = threading.Event()
        flooder = threading.Thread(target=flood, args=(pty.master, b"f,s,1\n", done), daemon=True)
        flooder.start()
        wait_for(lambda: h.reader.stats["records"] > 1000)
    elif state == "port lost":
        pty.unplug()
        wait_for(lambda: warnings_about(caplog, "lost"))
    elif state == "queue full":
        pty.write(b"q,s,1\nq,s,2\n")
        wait_for(lambda: h.record_que.full())
    started = time.monotonic()
    assert h.reader.stop(5)
    assert time.monotonic() - started < 1.0
    if state == "flooded":
        done.set()
        flooder.join(5)


def test_full_queue_waits_and_loses_nothing(pty, start_reader, fake_clock, caplog):
    caplog.set_level(logging.INFO, logger="keilib.serial")
    h = start_reader(pty.link, maxsize=2)
    pty.write(b"".join(b"q,s,%d,%d\n" % (i, i) for i in range(6)))
    wait_for(h.record_que.full)
    advance_until(fake_clock, lambda: warnings_about(caplog, "has been full for"))
    assert h.record_que.qsize() == 2 and h.reader.stats["dropped"] == 0
    records = h.wait_records(6)                 # a consumer appears: everything arrives, in order
    assert [r.value for r in records] == list(range(6))
    wait_for(lambda: warnings_about(caplog, "takes readings again"))
    assert len(warnings_about(caplog, "has been full for")) == 1
    assert not warnings_about(caplog, "dropped", logging.ERROR)


def test_full_queue_too_long_drops_with_an_error_naming_each_reading(pty, start_reader, fake_clock, caplog):
    caplog.set_level(logging.INFO, logger="keilib.serial")
    h = start_reader(pty.link, maxsize=1)
    pty.write(b"q,s,0,0\nq,s,1,1\n")
    wait_for(h.record_que.full)
    advance_until(fake_clock, lambda: h.reader.stats["dropped"] == 1, step=5)
    assert len(warnings_about(caplog, "has been full for")) == 1
    pty.write(b"q,s,2,2\nq,s,3,3\n")            # still full: dropped at once, each named
    wait_for(lambda: h.reader.stats["dropped"] == 3)
    dropped = warnings_about(caplog, "dropped reading", logging.ERROR)
    assert [m.split("dropped reading ")[1][19:] for m in dropped] == [",q,s,1,1", ",q,s,2,2", ",q,s,3,3"]
    assert re.search(r"record_que full for (6\d|[7-9]\d) s; dropped", dropped[0])
    assert [r.value for r in h.drain()] == [0]  # room again
    pty.write(b"q,s,4,4\n")
    assert [r.value for r in h.wait_records(2)] == [0, 4]
    wait_for(lambda: warnings_about(caplog, "takes readings again"))
    assert "(3 dropped)" in warnings_about(caplog, "takes readings again")[0]


class LongSettleReader(SerialReader):
    SETTLE_SECONDS = 1.0      # real seconds; long, so the test's write surely falls inside


def test_a_line_tail_arriving_right_after_the_open_is_discarded(pty, start_reader, caplog):
    caplog.set_level(logging.INFO, logger="keilib.serial")
    h = start_reader(pty.link, cls=LongSettleReader, wait_open=False)
    wait_for(lambda: h.reader._serial is not None, message="port open")
    pty.write(b"nit1,temp,22.5,7\nunit1,temp,22.6,8\n")     # the tail of a line, then a whole one
    wait_for(lambda: h.reader.connected, message="settled")
    pty.write(b"unit1,temp,22.7,9\n")
    h.wait_records(2)
    assert h.values() == [("unit1", "temp", 22.6, "8"), ("unit1", "temp", 22.7, "9")]
    assert len(warnings_about(caplog, "discarded the first line after opening", logging.INFO)) == 1


def test_opening_into_a_running_stream_never_records_a_fragment(pty, start_reader):
    done = threading.Event()
    flooder = threading.Thread(target=flood, args=(pty.master, b"unit1,temp,22.5\n", done), daemon=True)
    flooder.start()
    try:
        h = start_reader(pty.link)
        h.wait_records(500)
    finally:
        done.set()
        flooder.join(5)
    assert {(unit, sensor, value) for unit, sensor, value, _ in h.values()} == {("unit1", "temp", 22.5)}


class FlappingPortReader(WaitRecordingReader):
    """Opens fine, then every read fails: the back-off must still grow."""

    def step(self):
        if self._serial is not None:
            self._serial.close()          # the next read raises, as on a dead adapter
        super().step()


def test_a_port_that_opens_but_fails_at_once_backs_off(pty):
    reader = FlappingPortReader(pty.link, 9600, record_que=queue.Queue())
    reader.start()
    reader.join(5)
    assert reader.waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
