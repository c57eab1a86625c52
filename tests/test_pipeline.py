"""The data path: fan-out to every consumer, the averaging stage, the output base.

Process-level tests run a real kei.py in a temporary work directory; the
rest run real workers on real files, on a fake clock where windows matter.
"""

from __future__ import annotations

import datetime
import json
import logging
import queue
import random
import signal
import subprocess
import textwrap
import types

import pytest

from example_output import JsonLinesOutput
from keilib.average import Aggregate, Averager, WindowAverager
from keilib.clock import FakeClock
from keilib.daemon import prepare, start_order
from keilib.fanout import DROP_OLDEST, FanOutQueue, Inbox
from keilib.record import Record
from keilib.recorder import FileRecorder, summary_text
from keilib.spool import Spool, SpoolQueue
from keilib.worker import Worker
from support import PYTHON, REPO, read_text, subprocess_env, wait_for

D = datetime.datetime
KEI = str(REPO / "kei.py")


def lines(path) -> list:
    return read_text(path).splitlines()


class StuckSink(Worker):
    """A consumer that never takes anything (a hung output)."""

    CONSUMES = ("record_que",)

    def __init__(self, record_que):
        super().__init__()
        self.record_que = record_que

    def step(self):
        self.wait(None)


class StuckLatest(StuckSink):
    BUFFER_POLICY = DROP_OLDEST


def run_config(worker_def) -> list:
    """Validate, wire and build a config in-process; the workers in start order."""
    specs, instances, _ = prepare(types.SimpleNamespace(worker_def=worker_def), "test")
    by_index = {spec.index: instance for spec, instance in zip(specs, instances)}
    return [by_index[spec.index] for spec in start_order(specs)]


def stop_all(workers) -> None:
    for worker in reversed(workers):
        assert worker.stop(5), worker.name


# -- fan-out ----------------------------------------------------------------------

@pytest.mark.parametrize("consumers", [2, 3])
def test_every_consumer_of_one_queue_gets_every_record_in_order(tmp_path, consumers):
    config = textwrap.dedent("""
        import queue
        from keilib.recorder import FileRecorder
        from example_output import JsonLinesOutput
        from fixture_workers import CountingReader

        record_que = queue.Queue(20)
        worker_def = [
            {'class': CountingReader, 'args': {'record_que': record_que, 'count': 300}},
            {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'first'}},
            {'class': JsonLinesOutput, 'args': {'record_que': record_que, 'path': 'out.jsonl',
                                                'batch_seconds': 0.2}},
            {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'third'}},
        ][:%d]
        """ % (consumers + 1))
    (tmp_path / "keiconf.py").write_text(config)
    check = subprocess.run([PYTHON, KEI, "--check"], cwd=tmp_path, env=subprocess_env(),
                           capture_output=True, text=True, timeout=20)
    assert check.returncode == 0, check.stderr
    assert "wiring: worker_def[0] (CountingReader) -> fan-out -> worker_def[1] (FileRecorder)" in check.stdout
    process = subprocess.Popen([PYTHON, KEI], cwd=tmp_path, env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        raw = lambda base: [l for p in sorted(tmp_path.glob("2*-%s.txt" % base)) for l in lines(p)]  # noqa: E731
        wait_for(lambda: len(raw("first")) == 300, timeout=15, message="first consumer")
        wait_for(lambda: len(lines(tmp_path / "out.jsonl")) == 300, timeout=15, message="second consumer")
        if consumers == 3:
            wait_for(lambda: len(raw("third")) == 300, timeout=15, message="third consumer")
            assert raw("third") == raw("first")
        assert [line.split(",")[3] for line in raw("first")] == [str(n) for n in range(300)]
        assert [json.loads(line)["value"] for line in lines(tmp_path / "out.jsonl")] == list(range(300))
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    log = read_text(tmp_path / "kei.log")
    assert "wiring: worker_def[0] (CountingReader) -> fan-out -> " in log
    assert "each its own buffer of 20" in log


class Hand(Worker):
    """A producer that puts nothing by itself: the test puts through its queue."""

    PRODUCES = ("record_que",)

    def __init__(self, record_que):
        super().__init__()
        self.record_que = record_que

    def step(self):
        self.wait(None)


def test_a_stuck_output_never_delays_the_raw_file(tmp_path):
    record_que = queue.Queue(5)
    workers = run_config([
        {"class": Hand, "args": {"record_que": record_que}},
        {"class": FileRecorder, "args": {"record_que": record_que, "fname_base": "raw",
                                         "directory": str(tmp_path)}},
        {"class": StuckSink, "args": {"record_que": record_que}},
        {"class": StuckLatest, "args": {"record_que": record_que}},
    ])
    hand, = [w for w in workers if isinstance(w, Hand)]
    stuck, = [w for w in workers if type(w) is StuckSink]
    latest, = [w for w in workers if isinstance(w, StuckLatest)]
    assert isinstance(hand.record_que, FanOutQueue) and isinstance(stuck.record_que, Inbox)
    for worker in workers:
        worker.start()
    try:
        stamp = D(2026, 5, 20, 14, 0, 0)
        for number in range(40):
            # put() returns at once though two consumers take nothing (the test would hang
            # otherwise), and the raw file is at most this one record behind.
            hand.record_que.put(Record(stamp + datetime.timedelta(seconds=number), "U", "S", number))
            wait_for(lambda: len(lines(tmp_path / "20260520-raw.txt")) == number + 1, timeout=5,
                     message="record %d in the raw file" % number)
        assert stuck.record_que.qsize() == 40            # 'hold': kept, past its buffer of 5
        assert latest.record_que.qsize() == 5            # 'drop_oldest': the newest 5 ...
        assert [r.value for r in list(latest.record_que.queue)] == [35, 36, 37, 38, 39]
        assert latest.health.snapshot()["counters"]["dropped"] == 35   # ... and the rest counted
    finally:
        stop_all(workers)


def test_legacy_lists_are_stamped_once_for_every_consumer(tmp_path, fake_clock):
    inboxes = [Inbox("a", 10), Inbox("b", 10)]
    fan = FanOutQueue(inboxes, clock=fake_clock)
    fan.put(["ar1", "temp", "21.5", "7"])
    first, second = inboxes[0].get_nowait(), inboxes[1].get_nowait()
    assert first is second and isinstance(first, Record)
    assert first.timestamp == fake_clock.now() and first.value == 21.5


def test_a_spool_queue_has_the_item_on_disk_before_put_returns(tmp_path):
    spool = Spool(tmp_path / "spool")
    handoff = SpoolQueue(spool, lambda item: (item[0], item[1]))
    handoff.put(["sum20260520-x.txt", "2026/05/20 14:00,U,S,1.0\n"])
    units = [json.loads(p.read_text()) for p in (tmp_path / "spool").glob("*.item")]
    assert units == [{"fname": "sum20260520-x.txt", "parts": [[units[0]["parts"][0][0],
                                                                  "2026/05/20 14:00,U,S,1.0\n"]]}]
    assert handoff.get_nowait() == SpoolQueue.SPOOLED


# -- the averaging stage -------------------------------------------------------------

def reference_summary(records, late=()) -> str:
    """Today's summary lines, computed independently: mean = sum / count in arrival
    order per (10-minute window, unit, sensor), windows in time order."""
    windows: dict = {}
    for index, record in enumerate(records):
        if index in late:
            continue
        start = record.timestamp.replace(minute=record.timestamp.minute // 10 * 10, second=0)
        sums = windows.setdefault(start, {})
        total, count = sums.get((record.unit, record.sensor), (0, 0))
        sums[(record.unit, record.sensor)] = (total + record.value, count + 1)
    text = ""
    for start in sorted(windows):
        for (unit, sensor), (total, count) in windows[start].items():
            mean = total / count
            text += "%s,%s,%s,%s\n" % (start.strftime("%Y/%m/%d %H:%M"), unit, sensor, repr(round(mean, 4)))
    return text


def test_the_averaging_stage_gives_todays_summary_lines(tmp_path):
    """Random readings across midnight, with a late one: the Averager's aggregates,
    the FileRecorder's summary file and an independent computation agree."""
    rng = random.Random(7)
    clock = FakeClock(D(2026, 5, 20, 23, 30, 0))
    raw_que, stage_que, aggregate_que = queue.Queue(), queue.Queue(), queue.Queue()
    recorder = FileRecorder(raw_que, fname_base="avg", directory=str(tmp_path), clock=clock)
    stage = Averager(stage_que, aggregate_que, clock=clock)
    recorder.start()
    stage.start()
    records, late, fed = [], set(), 0
    try:
        for minute in range(60):                         # 23:30 .. 00:29, past midnight
            for unit, sensor in (("BR", "E7"), ("A", "T1"), ("A", "H1")):
                if rng.random() < 0.8:
                    value = rng.choice([rng.randint(-3000, 5000), round(rng.uniform(-20, 40), 3)])
                    stamp = clock.now() + datetime.timedelta(seconds=rng.randint(0, 59))
                    records.append(Record(stamp, unit, sensor, value))
            if minute == 25:                             # 23:55: a reading for the 23:40 window,
                records.append(Record(D(2026, 5, 20, 23, 41, 0), "A", "T1", 99))   # already written
                late.add(len(records) - 1)
            for record in records[fed:]:
                raw_que.put(record)
                stage_que.put(record)
            fed = len(records)
            wait_for(lambda: raw_que.empty() and stage_que.empty(), timeout=5)
            clock.advance(60)
            wait_for(lambda: recorder.averager.next_due() is None
                     or recorder.averager.next_due() + recorder.grace > clock.now(), timeout=5)
    finally:
        recorder.stop(5)
        stage.stop(5)
    aggregates = []
    while not aggregate_que.empty():
        aggregates.append(aggregate_que.get_nowait())
    assert all(isinstance(a, Aggregate) for a in aggregates)
    files = read_text(tmp_path / "sum20260520-avg.txt") + read_text(tmp_path / "sum20260521-avg.txt")
    expected = reference_summary(records, late)
    assert files == expected
    assert summary_text(aggregates) == expected
    for aggregate in aggregates:                         # count, min and max are right too
        values = [r.value for i, r in enumerate(records) if i not in late
                  and (r.unit, r.sensor) == (aggregate.unit, aggregate.sensor)
                  and aggregate.timestamp <= r.timestamp < aggregate.end]
        assert (aggregate.count, aggregate.minimum, aggregate.maximum) == (len(values), min(values), max(values))


def test_window_averager_reopens_windows_after_the_clock_steps_back():
    averager = WindowAverager(600)
    assert averager.add(Record(D(2026, 12, 1, 15, 41, 0), "u1", "seq", 1))
    assert len(averager.pop_closed(D(2026, 12, 1, 15, 50, 30))) == 1
    assert not averager.add(Record(D(2026, 12, 1, 15, 42, 0), "u1", "seq", 2))     # late
    # NTP steps the clock back 25 minutes: the repeated time is new time.
    assert averager.notice_clock(D(2026, 12, 1, 15, 25, 39)) == D(2026, 12, 1, 15, 50)
    assert averager.add(Record(D(2026, 12, 1, 15, 25, 39), "u1", "seq", 3))
    assert averager.add(Record(D(2026, 12, 1, 15, 41, 0), "u1", "seq", 4))
    assert [block[0].value for block in averager.pop_closed(None)] == [3, 4]


def test_windows_of_other_lengths_divide_the_day():
    averager = WindowAverager(900)
    averager.add(Record(D(2026, 5, 20, 14, 29, 59), "U", "S", 1))
    averager.add(Record(D(2026, 5, 20, 14, 30, 0), "U", "S", 3))
    blocks = averager.pop_closed(None)
    assert [(b[0].timestamp, b[0].window) for b in blocks] == [(D(2026, 5, 20, 14, 15), 900),
                                                               (D(2026, 5, 20, 14, 30), 900)]


# -- the output base -----------------------------------------------------------------

def test_a_damaged_spool_entry_is_set_aside_and_blocks_nothing(tmp_path, caplog):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "000000000000.batch").write_text(json.dumps({"fname": "all", "parts": [], "members": []}))
    (spool_dir / "000000000001.item").write_text(json.dumps({"fname": "all", "parts": [[1, 2]]}))
    (spool_dir / "000000000002.item").write_text(json.dumps({"fname": "all", "parts": [["id2", "behind\n"]]}))
    output = JsonLinesOutput(queue.Queue(), str(tmp_path / "out.jsonl"), spool_dir=spool_dir)
    output.start()
    try:
        wait_for(lambda: read_text(tmp_path / "out.jsonl") == "behind\n", message="the unit behind")
        output.source.put(Record(D(2026, 5, 20, 14, 0, 0), "U", "S", 1))
        wait_for(lambda: len(lines(tmp_path / "out.jsonl")) == 2, message="new records too")
    finally:
        assert output.stop(5)
    assert sorted(p.name for p in (spool_dir / "rejected").iterdir()) == [
        "000000000000.batch", "000000000001.item"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("unreadable unit" in r.getMessage() for r in errors)


def test_the_example_output_retries_batches_and_rejects_for_good(tmp_path, fake_clock):
    record_que = queue.Queue()
    output = JsonLinesOutput(record_que, str(tmp_path / "out.jsonl"), fail_first=2,
                             spool_dir=tmp_path / "spool", batch_seconds=30, retry_min=10,
                             retry_max=20, clock=fake_clock)
    output.start()
    try:
        for number in range(3):
            record_que.put(Record(D(2026, 5, 20, 14, 0, number), "U", "S", number))
        wait_for(lambda: record_que.empty(), message="taken")
        assert not list((tmp_path / "spool").glob("*.item"))    # held for batch_seconds
        fake_clock.advance(30)
        wait_for(lambda: output.failed_attempts == 1, message="first failure")
        assert len(list((tmp_path / "spool").glob("*.*"))) == 1  # the 3 records: one unit
        fake_clock.advance(20)
        wait_for(lambda: output.failed_attempts == 2, message="second failure")
        fake_clock.advance(20)
        wait_for(lambda: len(lines(tmp_path / "out.jsonl")) == 3, message="delivered")
        record_que.put(Record(D(2026, 5, 20, 14, 1, 0), "poison", "S", 0))
        wait_for(lambda: fake_clock.advance(30) or output.rejected_batches == 1, message="rejected")
    finally:
        assert output.stop(5)
    assert [json.loads(l)["value"] for l in lines(tmp_path / "out.jsonl")] == [0, 1, 2]
    counters = output.health.snapshot()["counters"]
    assert counters["delivered"] == 1 and counters["retries"] == 2 and counters["rejected"] == 1
    assert len(list((tmp_path / "spool" / "rejected").iterdir())) == 1


def test_an_output_loses_nothing_at_stop(tmp_path):
    record_que = queue.Queue()
    output = JsonLinesOutput(record_que, str(tmp_path / "out.jsonl"), fail_first=10 ** 6,
                             spool_dir=tmp_path / "spool", batch_seconds=3600, retry_min=3600,
                             retry_max=3600)
    output.start()
    for number in range(50):
        record_que.put(Record(D(2026, 5, 20, 14, 0, 0), "U", "S", number))
    wait_for(lambda: record_que.empty())
    assert output.stop(5)
    again = JsonLinesOutput(queue.Queue(), str(tmp_path / "out.jsonl"), spool_dir=tmp_path / "spool")
    again.start()
    try:
        wait_for(lambda: len(lines(tmp_path / "out.jsonl")) == 50, message="the spool, sent")
    finally:
        assert again.stop(5)
