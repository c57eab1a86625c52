"""kei.py as a real process: config validation, signals, logging, supervision."""

from __future__ import annotations

import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from support import PYTHON, REPO, read_text, subprocess_env, wait_for

KEI = str(REPO / "kei.py")

GOOD_CONFIG = """
import queue
from keilib.recorder import FileRecorder
from fixture_workers import CountingReader

record_que = queue.Queue(50)
worker_def = [
    {'class': CountingReader, 'args': {'record_que': record_que, 'count': %(count)d}},
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'run'}},
]
"""


def write_config(workdir: Path, text: str, name: str = "keiconf.py") -> Path:
    path = workdir / name
    path.write_text(textwrap.dedent(text))
    return path


def run_kei(workdir: Path, *args: str, timeout: float = 20, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, KEI, *args], cwd=workdir, env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def start_kei(workdir: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, KEI, *args], cwd=workdir, env=subprocess_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def raw_lines(workdir: Path, base: str = "run") -> list:
    return [line for path in sorted(workdir.glob("2*-%s.txt" % base)) for line in read_text(path).splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_stop_signal_writes_everything_and_exits_zero(tmp_path, sig):
    # A slow recorder: when the signal comes, readings are still queued.
    write_config(tmp_path, GOOD_CONFIG.replace("FileRecorder", "SlowFileRecorder").replace(
        "from keilib.recorder import SlowFileRecorder\n", "").replace(
        "import CountingReader", "import CountingReader, SlowFileRecorder") % {"count": 200})
    proc = start_kei(tmp_path)
    try:
        wait_for(lambda: "all 200 readings queued" in read_text(tmp_path / "kei.log"), timeout=10)
        sent_at = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - sent_at < 10
    finally:
        proc.kill()
        proc.communicate()
    lines = raw_lines(tmp_path)
    assert [line.split(",")[3] for line in lines] == [str(i) for i in range(200)]
    log = read_text(tmp_path / "kei.log")
    assert "stopping all workers (%s)" % sig.name in log
    taken = re.search(r"SlowFileRecorder: (\d+) queued reading\(s\) taken at stop", log)
    assert taken and int(taken.group(1)) > 0, "nothing was left queued: the test proves no draining"
    assert "kei stopped" in log
    # the open 10-minute window was written at shutdown
    assert list(tmp_path.glob("sum*-run.txt"))


def test_usr1_toggles_log_level(tmp_path):
    write_config(tmp_path, GOOD_CONFIG % {"count": 1})
    proc = start_kei(tmp_path)
    log = tmp_path / "kei.log"
    try:
        wait_for(lambda: "kei 0" in read_text(log) and "started with" in read_text(log), timeout=10)
        assert "CountingReader idle" not in read_text(log)        # INFO level: no DEBUG lines
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "log level changed to DEBUG" in read_text(log))
        wait_for(lambda: "CountingReader idle" in read_text(log))
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "log level changed to INFO" in read_text(log))
        size = len(read_text(log))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()
    assert "CountingReader idle" not in read_text(log)[size:]


def test_debug_environment_logs_to_stdout(tmp_path):
    write_config(tmp_path, GOOD_CONFIG % {"count": 3})
    proc = start_kei(tmp_path, DEBUG="0")
    try:
        wait_for(lambda: (tmp_path / "kei.log").exists() or raw_lines(tmp_path), timeout=10)
        wait_for(lambda: len(raw_lines(tmp_path)) == 3, timeout=10)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert " - DEBUG - " in out and "started with 2 worker(s)" in out
    assert not (tmp_path / "kei.log").exists()


def test_dead_worker_is_restarted_with_backoff(tmp_path):
    marker = tmp_path / "starts"
    write_config(tmp_path, """
        from fixture_workers import FailingWorker
        worker_def = [{'class': FailingWorker, 'args': {'marker': %r}}]
    """ % str(marker))
    proc = start_kei(tmp_path)
    try:
        wait_for(lambda: read_text(marker).count("start") >= 3, timeout=15)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()
    log = read_text(tmp_path / "kei.log")
    assert "RuntimeError: deliberate failure for the test" in log          # the traceback
    assert "Traceback (most recent call last)" in log
    assert "worker_def[0] (FailingWorker) ended unexpectedly" in log
    assert "restarting in 1 s" in log and "restarting in 2 s" in log     # doubling backoff


def test_worker_that_overrides_run_and_dies_is_logged_with_traceback_and_restarted(tmp_path):
    # keilog workers may override run(); their exception bypasses Worker.run.
    marker = tmp_path / "starts"
    write_config(tmp_path, """
        from fixture_workers import LegacyRunWorker
        worker_def = [{'class': LegacyRunWorker, 'args': {'marker': %r}}]
    """ % str(marker))
    proc = start_kei(tmp_path)
    try:
        wait_for(lambda: read_text(marker).count("start") >= 2, timeout=15)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        _, err = proc.communicate()
    log = read_text(tmp_path / "kei.log")
    assert "LegacyRunWorker died: RuntimeError: legacy run() failed" in log
    assert "Traceback (most recent call last)" in log and 'in run\n    raise RuntimeError' in log
    assert "worker_def[0] (LegacyRunWorker) ended unexpectedly" in log
    assert "(RuntimeError: legacy run() failed); restarting in 1 s" in log
    assert "Traceback" not in err                    # not on stderr, where nobody reads it


def test_worker_whose_run_returns_quietly_is_restarted_at_once_not_at_a_poll(tmp_path):
    # The main loop sleeps until something happens (a minute when all is well):
    # a run() override that just returns must wake it all the same.
    marker = tmp_path / "starts"
    write_config(tmp_path, """
        from fixture_workers import QuietLegacyRunWorker
        worker_def = [{'class': QuietLegacyRunWorker, 'args': {'marker': %r}}]
    """ % str(marker))
    proc = start_kei(tmp_path)
    try:
        # restarts after 1 s and 2 s of backoff: far sooner than the loop's minute
        wait_for(lambda: read_text(marker).count("start") >= 3, timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()
    assert "worker_def[0] (QuietLegacyRunWorker) ended unexpectedly" in read_text(tmp_path / "kei.log")


def test_only_the_outermost_run_signals_the_end():
    import threading
    from keilib.worker import Worker

    order = []

    class Base(Worker):
        def run(self):
            order.append("base run returned")

    class Derived(Base):
        def run(self):
            super().run()
            order.append("derived ran on: ended=%s" % self.ending)
            release.wait(10)

    release, ended = threading.Event(), threading.Event()
    worker = Derived()
    worker.exit_event = ended
    worker.start()
    # Base.run has returned, the thread goes on: the launcher must not be told yet.
    assert not ended.wait(0.3)
    release.set()
    assert ended.wait(10) and worker.ending
    worker.join(10)
    assert order == ["base run returned", "derived ran on: ended=False"]
    plain = Base()
    plain.exit_event = threading.Event()
    plain.start()
    assert plain.exit_event.wait(10) and plain.ending


def test_backoff_doubles_to_sixty_seconds_and_resets_after_ten_minutes_of_running():
    from keilib.daemon import Supervised, Waker, WorkerSpec, WorkerState
    from keilib.health import Registry
    from fixture_workers import FailingWorker
    spec = WorkerSpec(0, FailingWorker, {})
    waker = Waker()
    supervised = Supervised(spec, spec.build(), waker, Registry())
    now = 1000.0

    def run_and_die(ran: float) -> float:
        """Start (or restart) the worker, let it die after ``ran`` s; the delay chosen."""
        nonlocal now
        if supervised.state == WorkerState.STARTING:
            supervised.start(now)
        else:
            now = supervised.restart_at
            supervised.check(now)                  # restarts it
        assert supervised.state == WorkerState.RUNNING
        supervised.instance.join(5)                # FailingWorker raises at once
        now += ran
        supervised.check(now)
        assert supervised.state == WorkerState.BACKOFF
        return supervised.restart_at - now

    delays = [run_and_die(1.0) for _ in range(9)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert run_and_die(600.0) == 1                 # it had run 10 minutes: start again at 1 s
    assert run_and_die(1.0) == 2
    assert spec.health.snapshot()["counters"]["restarts"] == 11   # kept across instances


def test_log_file_rotates_at_midnight_and_keeps_three_days(tmp_path):
    import logging
    import time
    from keilib.daemon import setup_logging
    from keilib.logutil import DailyLogFile, next_midnight
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        handler = setup_logging(str(tmp_path), debug=False)
        assert isinstance(handler, DailyLogFile) and handler.keep == 3
        noon = next_midnight(time.time()) + 12 * 3600     # tomorrow (local time), give or take DST
        days = []
        for day in range(5):
            when = noon + day * 86400
            days.append(time.strftime("%Y-%m-%d", time.localtime(when)))
            handler.handle(logging.makeLogRecord({"name": "kei", "msg": "day %d", "args": (day,),
                                                  "levelno": logging.INFO, "levelname": "INFO",
                                                  "created": when}))
        kept = sorted(p.name for p in tmp_path.glob("kei.log.*"))
        assert kept == ["kei.log." + day for day in days[1:4]], kept      # today's and day 0's are gone
        assert read_text(tmp_path / ("kei.log." + days[3])).strip().endswith("day 3")
        assert read_text(tmp_path / "kei.log").strip().endswith("day 4")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


CONFIG_ERRORS = [
    ("no_worker_def", "x = 1\n", "no 'worker_def' defined"),
    ("not_a_list", "worker_def = {}\n", "'worker_def' must be a list, got dict"),
    ("entry_not_dict", "worker_def = [42]\n", "worker_def[0]: must be a dict"),
    ("missing_class", "worker_def = [{'args': {}}]\n", "worker_def[0]: missing 'class'"),
    ("missing_args", "from fixture_workers import FailingWorker\nworker_def = [{'class': FailingWorker}]\n",
     "worker_def[0] (FailingWorker): missing 'args'"),
    ("class_not_worker", "worker_def = [{'class': dict, 'args': {}}]\n", "'class' must be a Worker class"),
    ("args_not_dict", "from keilib.recorder import FileRecorder\n"
                      "worker_def = [{'class': FileRecorder, 'args': []}]\n",
     "worker_def[0] (FileRecorder): 'args' must be a dict"),
    ("unknown_arg", "import queue\nfrom keilib.recorder import FileRecorder\nq = queue.Queue()\n"
                    "worker_def = [{'class': FileRecorder, 'args': {'record_que': q, 'fname_bas': 'x'}}]\n",
     "worker_def[0] (FileRecorder): unknown argument 'fname_bas'"),
    ("missing_arg", "from keilib.recorder import FileRecorder\n"
                    "worker_def = [{'class': FileRecorder, 'args': {'fname_base': 'x'}}]\n",
     "worker_def[0] (FileRecorder): missing argument 'record_que'"),
    ("not_a_queue", "from keilib.recorder import FileRecorder\n"
                    "worker_def = [{'class': FileRecorder, 'args': {'record_que': [1]}}]\n",
     "worker_def[0] (FileRecorder): argument 'record_que' must be a queue.Queue, got list"),
    ("bad_value", "import queue\nfrom keilib.recorder import FileRecorder\n"
                  "worker_def = [{'class': FileRecorder, 'args': {'record_que': queue.Queue(), 'fname_base': '../x'}}]\n",
     "worker_def[0] (FileRecorder): argument 'fname_base' must be 1 to 80 letters"),
    ("record_que_as_upload_que", "import queue\nfrom keilib.recorder import FileRecorder\n"
                                 "from keilib.uploader import HttpPostUploader\nrq = queue.Queue()\n"
                                 "worker_def = [{'class': FileRecorder, 'args': {'record_que': rq}},\n"
                                 "  {'class': HttpPostUploader, 'args': {'upload_que': rq, 'target_url': "
                                 "'http://127.0.0.1:9/u.php', 'upload_key': 'k'}}]\n",
     "one queue is worker_def[0] (FileRecorder)'s 'record_que' (readings) and worker_def[1] "
     "(HttpPostUploader)'s 'upload_que' (upload blocks)"),
    ("same_queue_in_and_out", "import queue\nfrom keilib.recorder import FileRecorder\nq = queue.Queue()\n"
                              "worker_def = [{'class': FileRecorder, 'args': {'record_que': q, 'upload_que': q}}]\n",
     "worker_def[0] (FileRecorder)'s 'record_que' (readings) and worker_def[0] (FileRecorder)'s "
     "'upload_que' (upload blocks)"),
    ("same_fname_base", "import queue\nfrom keilib.recorder import FileRecorder\nq = queue.Queue()\n"
                        "worker_def = [{'class': FileRecorder, 'args': {'record_que': q, 'fname_base': 'x'}},\n"
                        "  {'class': FileRecorder, 'args': {'record_que': queue.Queue(), 'fname_base': 'x'}}]\n",
     "worker_def[0] (FileRecorder) and worker_def[1] (FileRecorder) both use files "),
    ("loop_queue", "import queue\nfrom keilib.average import Averager\nq = queue.Queue()\n"
                   "worker_def = [{'class': Averager, 'args': {'record_que': q, 'aggregate_que': q}}]\n",
     "worker_def[0] (Averager) takes from and puts into the same queue ('record_que' and 'aggregate_que')"),
    ("orphan_queue", "import queue\nfrom fixture_workers import CountingReader\n"
                     "worker_def = [{'class': CountingReader, 'args': {'record_que': queue.Queue()}}]\n",
     "worker_def[0] (CountingReader): argument 'record_que' is a queue that no worker takes from"),
    ("syntax", "worker_def = [\n  {'class': 1,,}\n]\n", "keiconf.py:2: syntax error"),
    ("import", "import queue\nfrom keilib.nothing import X\n", "keiconf.py:2: ModuleNotFoundError"),
    ("runtime", "a = 1\nb = a / 0\n", "keiconf.py:2: ZeroDivisionError"),
]


@pytest.mark.parametrize("case,text,message", CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_config_errors_exit_2_and_name_the_fault(tmp_path, case, text, message):
    write_config(tmp_path, text)
    result = run_kei(tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "kei.log").exists()          # no worker, no log: nothing started
    check = run_kei(tmp_path, "--check")
    assert check.returncode == 2 and message in check.stderr


def test_check_accepts_a_good_config_and_starts_nothing(tmp_path):
    write_config(tmp_path, GOOD_CONFIG % {"count": 5}, name="other.py")
    result = run_kei(tmp_path, "--check", "-c", "other.py")
    assert result.returncode == 0, result.stderr
    assert "valid: 2 worker(s): CountingReader, FileRecorder" in result.stdout
    assert not raw_lines(tmp_path)


def test_missing_config_says_how_to_make_one(tmp_path):
    result = run_kei(tmp_path)
    assert result.returncode == 2
    assert "cp keiconf_broute.py keiconf.py" in result.stderr
    assert "cp keiconf_serial.py keiconf.py" in result.stderr
    assert "--demo" in result.stderr


def test_version():
    result = subprocess.run([PYTHON, KEI, "--version"], capture_output=True, text=True, timeout=10,
                            env=subprocess_env())
    from keilib import __version__
    assert result.returncode == 0 and result.stdout.strip() == "kei %s" % __version__


def test_start_order_consumers_first_stop_order_producers_first():
    import queue as q
    from keilib.daemon import WorkerSpec, start_order
    from keilib.recorder import FileRecorder
    from fixture_workers import CountingReader, SlowSink
    records, uploads = q.Queue(), q.Queue()
    specs = [WorkerSpec(0, CountingReader, {"record_que": records}),
             WorkerSpec(1, FileRecorder, {"record_que": records, "upload_que": uploads}),
             WorkerSpec(2, SlowSink, {"in_que": uploads, "path": "x"})]
    assert [s.cls.__name__ for s in start_order(specs)] == ["SlowSink", "FileRecorder", "CountingReader"]


def test_legacy_keilog_config_runs_unchanged(tmp_path):
    """A config as keilog's README wrote it, with a legacy list-producing reader."""
    write_config(tmp_path, """
        # keiconf.py
        import queue
        from keilib.recorder import FileRecorder
        from fixture_workers import CountingReader

        record_que = queue.Queue(50)
        worker_def = [
            {
                'class': FileRecorder,
                'args': {
                    'fname_base': 'mydatafile',
                    'record_que': record_que
                }
            },
            {
                'class': CountingReader,
                'args': {'record_que': record_que, 'count': 4, 'legacy': True}
            },
        ]
    """)
    proc = start_kei(tmp_path)
    try:
        wait_for(lambda: len(raw_lines(tmp_path, "mydatafile")) == 4, timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()
    assert [line.split(",")[1:] for line in raw_lines(tmp_path, "mydatafile")] == [
        ["T", "S1", str(i), str(i)] for i in range(4)]
