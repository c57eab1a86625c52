"""FileRecorder against real files in a temporary directory, on a fake clock."""

from __future__ import annotations

import datetime
import os
import queue
import subprocess
import time

import pytest

from keilib.record import Record
from keilib.recorder import FileRecorder
from support import read_text, wait_for

D = datetime.datetime


@pytest.fixture
def rig(tmp_path, fake_clock):
    record_que = queue.Queue(50)
    upload_que = queue.Queue(50)
    recorder = FileRecorder(record_que, fname_base="mylog", upload_que=upload_que,
                            directory=str(tmp_path), clock=fake_clock, retry_seconds=5)
    recorder.start()
    yield record_que, upload_que, recorder, tmp_path
    recorder.stop(5)


def lines(path):
    return read_text(path).splitlines()


def test_raw_lines_byte_for_byte(rig):
    record_que, _, _, tmp = rig
    record_que.put(Record(D(2026, 5, 20, 14, 0, 1), "BR", "E7", 1852))
    record_que.put(Record(D(2026, 5, 20, 14, 0, 2), "A", "T1", 12.34567, "0F"))
    raw = tmp / "20260520-mylog.txt"
    wait_for(lambda: len(lines(raw)) == 2)
    assert raw.read_bytes() == (b"2026/05/20 14:00:01,BR,E7,1852,x\n"
                                b"2026/05/20 14:00:02,A,T1,12.3457,0F\n")


def test_ten_minute_average_written_when_window_closes(rig, fake_clock):
    record_que, upload_que, recorder, tmp = rig
    for second, value in ((0, 100), (30, 200), (59, 600)):
        record_que.put(Record(D(2026, 5, 20, 14, 3, second), "BR", "E7", value))
    record_que.put(Record(D(2026, 5, 20, 14, 5, 0), "A", "T1", 1.5))
    record_que.put(Record(D(2026, 5, 20, 14, 6, 0), "A", "T1", 2.0))
    wait_for(lambda: len(lines(tmp / "20260520-mylog.txt")) == 5)
    summary = tmp / "sum20260520-mylog.txt"
    assert not summary.exists()                     # window 14:00-14:09 still open
    fake_clock.advance(10 * 60 + 31)                 # past 14:10 plus the grace
    wait_for(summary.exists)
    assert summary.read_text() == "2026/05/20 14:00,BR,E7,300.0\n2026/05/20 14:00,A,T1,1.75\n"
    assert upload_que.get(timeout=2) == ["sum20260520-mylog.txt", summary.read_text()]
    # the next window holds only what belongs to it; an empty window writes nothing
    record_que.put(Record(D(2026, 5, 20, 14, 10, 40), "BR", "E7", 50))
    fake_clock.advance(20 * 60)
    wait_for(lambda: len(lines(summary)) == 3)
    assert lines(summary)[2] == "2026/05/20 14:10,BR,E7,50.0"
    assert upload_que.get(timeout=2)[1] == "2026/05/20 14:10,BR,E7,50.0\n"
    assert upload_que.empty()


def test_record_date_decides_the_file_across_midnight(tmp_path):
    from keilib.clock import FakeClock
    clock = FakeClock(D(2026, 5, 20, 23, 59, 50))
    record_que = queue.Queue()
    recorder = FileRecorder(record_que, fname_base="b", directory=str(tmp_path), clock=clock)
    recorder.start()
    try:
        clock.advance(15)                           # now 00:00:05 the next day
        record_que.put(Record(D(2026, 5, 20, 23, 59, 59), "BR", "E7", 7))
        record_que.put(Record(D(2026, 5, 21, 0, 0, 4), "BR", "E7", 9))
        wait_for(lambda: (tmp_path / "20260521-b.txt").exists())
        clock.advance(10 * 60 + 30)                 # past 00:10 plus the grace
        wait_for(lambda: (tmp_path / "sum20260521-b.txt").exists())
    finally:
        recorder.stop(5)
    assert lines(tmp_path / "20260520-b.txt") == ["2026/05/20 23:59:59,BR,E7,7,x"]
    assert lines(tmp_path / "20260521-b.txt") == ["2026/05/21 00:00:04,BR,E7,9,x"]
    assert lines(tmp_path / "sum20260520-b.txt") == ["2026/05/20 23:50,BR,E7,7.0"]
    assert lines(tmp_path / "sum20260521-b.txt") == ["2026/05/21 00:00,BR,E7,9.0"]


class CountingQueue(queue.Queue):
    """A real queue that counts how often its consumer came to look."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, block=True, timeout=None):
        self.gets += 1
        return super().get(block, timeout)


def test_idle_recorder_with_an_open_window_sleeps_instead_of_spinning(tmp_path, fake_clock):
    # While a window is open the recorder waits for it to fall due.  Fake time
    # stands still here, so the wait must still take real time, not return at once.
    record_que = CountingQueue()
    recorder = FileRecorder(record_que, fname_base="idle", directory=str(tmp_path), clock=fake_clock)
    record_que.put(Record(fake_clock.now(), "U", "S", 1))
    recorder.start()
    try:
        wait_for(lambda: (tmp_path / fake_clock.now().strftime("%Y%m%d-idle.txt")).exists())
        before = record_que.gets
        time.sleep(0.5)
        looks = record_que.gets - before
    finally:
        assert recorder.stop(5)
    assert 0 < looks < 200, looks          # a spin looks tens of thousands of times


def test_shutdown_writes_queue_and_open_window(tmp_path, fake_clock):
    record_que = queue.Queue()
    upload_que = queue.Queue()
    recorder = FileRecorder(record_que, fname_base="s", upload_que=upload_que,
                            directory=str(tmp_path), clock=fake_clock)
    for i in range(20):
        record_que.put(Record(D(2026, 5, 20, 14, 1, i), "U", "S", i))
    recorder.start()
    assert recorder.stop(5)
    assert len(lines(tmp_path / "20260520-s.txt")) == 20
    assert lines(tmp_path / "sum20260520-s.txt") == ["2026/05/20 14:00,U,S,9.5"]
    assert upload_que.get_nowait() == ["sum20260520-s.txt", "2026/05/20 14:00,U,S,9.5\n"]


def test_legacy_lists_are_stamped_when_taken(rig, fake_clock):
    record_que, _, _, tmp = rig
    record_que.put(["A", "T1", 21.5, "07"])
    record_que.put(["A", "T1", "not a number", "08"])     # skipped with a warning
    record_que.put(["B", "H", 40, "1"])
    wait_for(lambda: len(lines(tmp / "20260520-mylog.txt")) == 2)
    assert lines(tmp / "20260520-mylog.txt") == ["2026/05/20 14:00:00,A,T1,21.5,07",
                                                 "2026/05/20 14:00:00,B,H,40,1"]


def test_full_upload_queue_holds_blocks_and_loses_nothing(tmp_path, fake_clock):
    record_que = queue.Queue()
    upload_que = queue.Queue(1)
    upload_que.put(["occupied", ""])
    recorder = FileRecorder(record_que, fname_base="u", upload_que=upload_que,
                            directory=str(tmp_path), clock=fake_clock)
    recorder.start()
    try:
        for minute in (1, 11, 21):
            record_que.put(Record(D(2026, 5, 20, 14, minute, 0), "U", "S", minute))
        wait_for(lambda: len(lines(tmp_path / "20260520-u.txt")) == 3)
        fake_clock.advance(40 * 60)
        wait_for(lambda: len(lines(tmp_path / "sum20260520-u.txt")) == 3)
        assert recorder.is_alive()
        got = [upload_que.get(timeout=2) for _ in range(4)]
    finally:
        recorder.stop(5)
    assert [g[1] for g in got[1:]] == ["2026/05/20 14:00,U,S,1.0\n", "2026/05/20 14:10,U,S,11.0\n",
                                       "2026/05/20 14:20,U,S,21.0\n"]


def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def small_fs(tmp_path):
    """A real 64 KiB tmpfs (root can mount; CI runs as root), else a plain directory."""
    directory = tmp_path / "fs"
    directory.mkdir()
    mounted = os.geteuid() == 0 and _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(directory)).returncode == 0
    yield directory, mounted
    if mounted:
        _mount("-o", "remount,rw", str(directory))
        subprocess.run(["umount", str(directory)], check=False)


def test_read_only_directory_loses_nothing(small_fs, fake_clock, caplog):
    directory, mounted = small_fs
    if mounted:    # EROFS, as on a card the kernel switched to read-only
        block = lambda d: _mount("-o", "remount,ro", str(d))          # noqa: E731
        unblock = lambda d: _mount("-o", "remount,rw", str(d))        # noqa: E731
    else:          # EACCES, for a developer not running as root
        block = lambda d: os.chmod(d, 0o500)                         # noqa: E731
        unblock = lambda d: os.chmod(d, 0o700)                       # noqa: E731
    _unwritable_then_writable(directory, fake_clock, block, unblock)
    assert "cannot write" in caplog.text


def test_full_disk_loses_nothing(small_fs, fake_clock, caplog):
    directory, mounted = small_fs
    if not mounted:
        pytest.skip("needs root to mount a small tmpfs")
    filler = directory / "filler"

    def block(d):
        try:
            with open(filler, "wb") as handle:
                while True:
                    handle.write(b"x" * 4096)
                    handle.flush()
        except OSError:
            pass

    _unwritable_then_writable(directory, fake_clock, block, lambda d: filler.unlink())
    assert "No space left" in caplog.text


def test_unwritable_file_loses_nothing_once_writable_again(tmp_path, fake_clock, caplog):
    """The raw file's path is blocked (as by a full or read-only disk); data is held and retried."""
    blocker = tmp_path / "20260520-w.txt"

    def block(directory):
        blocker.mkdir()          # open(..., 'a') now fails with IsADirectoryError (an OSError)

    def unblock(directory):
        blocker.rmdir()

    _unwritable_then_writable(tmp_path, fake_clock, block, unblock)
    assert "cannot write" in caplog.text


def _unwritable_then_writable(directory, clock, block, unblock):
    record_que = queue.Queue()
    recorder = FileRecorder(record_que, fname_base="w", directory=str(directory), clock=clock,
                            retry_seconds=5)
    block(directory)
    recorder.start()
    try:
        for i in range(5):
            record_que.put(Record(D(2026, 5, 20, 14, 0, i), "U", "S", i))
        wait_for(lambda: record_que.empty() and recorder.pending_lines == 5)
        assert recorder.is_alive()
        unblock(directory)
        clock.advance(6)
        wait_for(lambda: len(lines(directory / "20260520-w.txt")) == 5)
        assert recorder.is_alive()
    finally:
        recorder.stop(5)
    assert lines(directory / "20260520-w.txt") == ["2026/05/20 14:00:0%d,U,S,%d,x" % (i, i) for i in range(5)]


def test_late_reading_is_raw_only(rig, fake_clock):
    record_que, _, _, tmp = rig
    record_que.put(Record(D(2026, 5, 20, 14, 2, 0), "U", "S", 1))
    wait_for(lambda: lines(tmp / "20260520-mylog.txt"))
    fake_clock.advance(11 * 60)
    wait_for(lambda: (tmp / "sum20260520-mylog.txt").exists())
    record_que.put(Record(D(2026, 5, 20, 14, 3, 0), "U", "S", 99))     # its window is written
    wait_for(lambda: len(lines(tmp / "20260520-mylog.txt")) == 2)
    fake_clock.advance(20 * 60)
    assert lines(tmp / "sum20260520-mylog.txt") == ["2026/05/20 14:00,U,S,1.0"]


def test_bad_fname_base_is_refused(tmp_path):
    from keilib.errors import ConfigError
    # What the endpoint or the graph page would refuse is refused here, at --check time.
    for bad in ("a/b", "a.b", "a b", "caf\u00e9", "a\0b", "", "x" * 81, 5):
        with pytest.raises(ConfigError, match="fname_base"):
            FileRecorder(queue.Queue(), fname_base=bad, directory=str(tmp_path))


def test_keilog_display_arguments_are_accepted_and_ignored(tmp_path, caplog):
    """keilog's FileRecorder signature had disp_def/disp_que (never implemented)."""
    recorder = FileRecorder(queue.Queue(), fname_base="d", upload_que=None, disp_def=[], disp_que=None,
                            directory=str(tmp_path))
    assert recorder.fname_base == "d" and "ignored" not in caplog.text
    FileRecorder(queue.Queue(), "d", None, [{"unit": "A"}], queue.Queue(), directory=str(tmp_path))
    assert "ignored" in caplog.text


def test_clock_stepping_back_is_averaged_again(rig, fake_clock, caplog):
    record_que, _, _, tmp = rig
    record_que.put(Record(D(2026, 5, 20, 14, 2, 0), "U", "S", 1))
    fake_clock.advance(11 * 60)
    wait_for(lambda: lines(tmp / "sum20260520-mylog.txt"))
    fake_clock.set(D(2026, 5, 20, 13, 0, 0))          # NTP steps the clock back an hour
    for minute in range(3):
        record_que.put(Record(D(2026, 5, 20, 13, minute, 0), "U", "S", 5))
    wait_for(lambda: len(lines(tmp / "20260520-mylog.txt")) == 4)
    fake_clock.advance(11 * 60)
    wait_for(lambda: len(lines(tmp / "sum20260520-mylog.txt")) == 2)
    assert lines(tmp / "sum20260520-mylog.txt")[1] == "2026/05/20 13:00,U,S,5.0"
    assert "the clock went back" in caplog.text and "late reading" not in caplog.text


def test_late_readings_are_logged_once_per_window(rig, fake_clock, caplog):
    import logging
    caplog.set_level(logging.INFO)
    record_que, _, _, tmp = rig
    record_que.put(Record(D(2026, 5, 20, 14, 2, 0), "U", "S", 1))
    fake_clock.advance(11 * 60)
    wait_for(lambda: lines(tmp / "sum20260520-mylog.txt"))
    for second in range(5):
        record_que.put(Record(D(2026, 5, 20, 14, 3, second), "U", "S", 2))
    wait_for(lambda: len(lines(tmp / "20260520-mylog.txt")) == 6)
    assert caplog.text.count("late reading") == 1


def test_held_upload_blocks_are_bounded(tmp_path, fake_clock, monkeypatch, caplog):
    import keilib.recorder as recorder_module
    monkeypatch.setattr(recorder_module, "MAX_PENDING_UPLOADS", 2)
    record_que, upload_que = queue.Queue(), queue.Queue(1)
    upload_que.put(["occupied", ""])                 # nobody ever takes from it
    recorder = FileRecorder(record_que, fname_base="b", upload_que=upload_que,
                            directory=str(tmp_path), clock=fake_clock)
    recorder.start()
    try:
        for minute in (1, 11, 21, 31):
            record_que.put(Record(D(2026, 5, 20, 14, minute, 0), "U", "S", minute))
        wait_for(lambda: len(lines(tmp_path / "20260520-b.txt")) == 4)
        fake_clock.advance(60 * 60)
        wait_for(lambda: len(lines(tmp_path / "sum20260520-b.txt")) == 4)   # the files have everything
        assert [block[1] for block in recorder.pending_uploads] == [
            "2026/05/20 14:20,U,S,21.0\n", "2026/05/20 14:30,U,S,31.0\n"]
        assert caplog.text.count("not uploaded (it is in the file)") == 2
    finally:
        recorder.request_stop()
        upload_que.get_nowait()
        recorder.stop(10)


def fill(directory) -> None:
    """Fill a file system to the last byte (whole pages, then single bytes)."""
    with open(directory / "filler", "wb", buffering=0) as handle:
        for size in (65536, 4096, 1):
            try:
                while True:
                    handle.write(b"x" * size)
            except OSError:
                pass


def test_a_line_cut_by_a_full_disk_is_finished_not_repeated(small_fs, fake_clock, caplog):
    """The kernel writes part of a line before ENOSPC (the raw file's last page
    had room for a few bytes): once space returns the rest of that line is
    written, so every line is whole and every reading is there once."""
    directory, mounted = small_fs
    if not mounted:
        pytest.skip("needs root to mount a small tmpfs")
    raw = directory / "20260520-p.txt"
    pad = ["2026/05/20 13:00:00,U,pad,%d,x\n" % n for n in range(10 ** 6)]
    text, number = "", 0
    while len(text) + len(pad[number]) + 30 <= 4090:      # 6 bytes left in the file's page
        text += pad[number]
        number += 1
    text += "2026/05/20 13:00:00,U,pad,%s,x\n" % ("7" * (4090 - len(text) - 29))
    raw.write_text(text)
    assert raw.stat().st_size == 4090
    fill(directory)
    record_que = queue.Queue()
    recorder = FileRecorder(record_que, fname_base="p", directory=str(directory), clock=fake_clock,
                            retry_seconds=5)
    recorder.start()
    try:
        for second in range(5):
            record_que.put(Record(D(2026, 5, 20, 14, 0, second), "u1", "seq", 470 + second))
        wait_for(lambda: "cannot write" in caplog.text, message="the full disk noticed")
        assert raw.stat().st_size == 4096                  # the kernel took part of a line
        (directory / "filler").unlink()
        fake_clock.advance(6)
        wait_for(lambda: len(lines(raw)) == text.count("\n") + 5, message="held lines written")
    finally:
        recorder.stop(5)
    written = lines(raw)
    for line in written:
        Record.parse_raw_line(line)                        # every line is well-formed
    assert written[-5:] == ["2026/05/20 14:00:0%d,u1,seq,%d,x" % (s, 470 + s) for s in range(5)]


def test_half_a_line_left_by_a_crash_is_cut_at_open(tmp_path, fake_clock, caplog):
    raw = tmp_path / "20260520-c.txt"
    raw.write_bytes(b"2026/05/20 13:59:59,U,S,1,x\n2026/05/20 14:0")      # kill -9 mid-write
    record_que = queue.Queue()
    recorder = FileRecorder(record_que, fname_base="c", directory=str(tmp_path), clock=fake_clock)
    recorder.start()
    try:
        record_que.put(Record(D(2026, 5, 20, 14, 0, 1), "U", "S", 2))
        wait_for(lambda: len(lines(raw)) == 2)
    finally:
        recorder.stop(5)
    assert lines(raw) == ["2026/05/20 13:59:59,U,S,1,x", "2026/05/20 14:00:01,U,S,2,x"]
    assert "ended in an incomplete line (15 bytes" in caplog.text


def test_a_25_minute_step_back_averages_every_repeated_reading(rig, fake_clock, caplog):
    """NTP steps the clock back 25 minutes, from 15:45:39 to 15:20:39 (the
    issue's case: the old 20-minute margin below the last written window end,
    15:40, did not notice it): the first reading after the step, and every one
    in the repeated windows, is averaged and uploaded."""
    record_que, upload_que, _, tmp = rig
    fake_clock.set(D(2026, 12, 1, 15, 35, 0))
    for minute in (31, 32):
        record_que.put(Record(D(2026, 12, 1, 15, minute, 0), "u1", "seq", minute))
    wait_for(lambda: len(lines(tmp / "20261201-mylog.txt")) == 2)
    fake_clock.set(D(2026, 12, 1, 15, 45, 39))                  # the 15:30 window is written
    wait_for(lambda: lines(tmp / "sum20261201-mylog.txt") == ["2026/12/01 15:30,u1,seq,31.5"])
    upload_que.get(timeout=2)
    fake_clock.set(D(2026, 12, 1, 15, 20, 39))                  # stepped back 25 minutes
    record_que.put(Record(D(2026, 12, 1, 15, 20, 39), "u1", "seq", 20))   # the first after the step
    record_que.put(Record(D(2026, 12, 1, 15, 33, 0), "u1", "seq", 33))
    wait_for(lambda: len(lines(tmp / "20261201-mylog.txt")) == 4)
    fake_clock.set(D(2026, 12, 1, 15, 45, 39))
    wait_for(lambda: len(lines(tmp / "sum20261201-mylog.txt")) == 3)
    assert lines(tmp / "sum20261201-mylog.txt")[1:] == ["2026/12/01 15:20,u1,seq,20.0",
                                                        "2026/12/01 15:30,u1,seq,33.0"]
    uploaded = "".join(upload_que.get(timeout=2)[1] for _ in range(2))
    assert uploaded.splitlines() == lines(tmp / "sum20261201-mylog.txt")[1:]
    assert "late reading" not in caplog.text and "the clock went back" in caplog.text


class SyncSpy:
    """Wraps the real os.fdatasync (the sync still happens) and notes, for
    each call, the real time and how many bytes the file then held."""

    def __init__(self, monkeypatch):
        self.real = os.fdatasync
        self.calls = []
        monkeypatch.setattr(os, "fdatasync", self)

    def __call__(self, fd):
        self.real(fd)
        self.calls.append((time.monotonic(), os.fstat(fd).st_size))

    def synced_bytes(self):
        return max((size for _, size in self.calls), default=0)


def test_written_lines_reach_storage_within_the_sync_time_in_few_syncs(tmp_path, fake_clock, monkeypatch):
    spy = SyncSpy(monkeypatch)
    record_que = queue.Queue()
    recorder = FileRecorder(record_que, fname_base="dur", directory=str(tmp_path), clock=fake_clock,
                            sync_seconds=0.5)
    raw = tmp_path / fake_clock.now().strftime("%Y%m%d-dur.txt")

    def size():
        return raw.stat().st_size if raw.exists() else 0

    recorder.start()
    try:
        # A lone reading is synced at once (the last sync is long past).
        record_que.put(Record(fake_clock.now(), "U", "S", 1))
        wait_for(lambda: spy.synced_bytes() == size() > 0, timeout=5)
        first_syncs = len(spy.calls)
        # A stream: 300 readings over about a second are synced a few times, not 300.
        for index in range(300):
            record_que.put(Record(fake_clock.now(), "U", "S", index))
            time.sleep(0.003)
        wait_for(lambda: len(lines(raw)) == 301 and spy.synced_bytes() == size(), timeout=5,
                 message="the last line synced without any new record to wake the recorder")
        stream_syncs = len(spy.calls) - first_syncs
    finally:
        assert recorder.stop(5)
    assert first_syncs == 1
    assert 1 <= stream_syncs <= 8, stream_syncs


def test_sync_seconds_none_leaves_it_to_the_kernel_as_keilog(tmp_path, fake_clock, monkeypatch):
    spy = SyncSpy(monkeypatch)
    record_que = queue.Queue()
    recorder = FileRecorder(record_que, fname_base="nos", directory=str(tmp_path), clock=fake_clock,
                            sync_seconds=None)
    recorder.start()
    try:
        record_que.put(Record(fake_clock.now(), "U", "S", 1))
        wait_for(lambda: lines(tmp_path / fake_clock.now().strftime("%Y%m%d-nos.txt")), timeout=5)
        time.sleep(0.3)
        assert spy.calls == []
    finally:
        assert recorder.stop(5)
    assert len(spy.calls) == 2             # at stop, as the files close: raw and 10-minute file


@pytest.mark.parametrize("value", [-1, 61, "0.5", True])
def test_bad_sync_seconds_is_refused(tmp_path, value):
    from keilib.errors import ConfigError
    with pytest.raises(ConfigError, match="sync_seconds"):
        FileRecorder(queue.Queue(), fname_base="x", directory=str(tmp_path), sync_seconds=value)
