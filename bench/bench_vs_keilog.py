"""kei against the original keilog, side by side: CPU per line, idle cost, memory, start-up.

    python3 bench/bench_vs_keilog.py [--paced-seconds 20] [--bursts 4] [--burst-lines 2500]
                                     [--idle-seconds 60] [--starts 51] [--keilog PATH]

Both daemons run as real processes (``kei.py`` of this repository and keilog's
own ``kei.py``, loaded from ``../shared/reference/keilog``; never copied), each
in its own temporary work directory holding the same ``keiconf.py``: the two
configurations of keilog's examples (serial: FileRecorder + SerialReader on a
``Queue(50)``; B-route: HttpPostUploader + FileRecorder + BrouteReader with an
RL7023 IPS and keilog's request list), written out here with only the port
filled in.  Without keilog the kei column is printed alone.

1. **Start to port open**: process start -> the serial port among the
   process's open files (``/proc/<pid>/fd``), median of ``--starts`` starts
   each, the daemons taking turns (a drift of the load weighs on both alike).
2. **Serial, paced**: one writer per daemon sends the same lines on the same
   schedule to its own pty: every 5 ms the bytes a saturated 115200-baud 8N1
   line carries in that time (11,520 bytes/s; an FTDI at full rate hands over a
   62-byte USB packet every 5.4 ms).  Lines are ``unit<n>,temp,<v>,<seq>``;
   the raw file tells which arrived, once and in order.
3. **Serial, bursts**: ``--bursts`` bursts of ``--burst-lines`` lines written
   as fast as the pty takes them, each after the daemon went quiet.
4. **B-route idle**: a simulated RL7023 IPS (``python3 -m keilib.sim wisun``,
   realistic delays) per daemon, started first: keilog needs about a minute to
   scan and join, so both join while phases 1-3 run.  Once both recorded an E7
   and the serial phases are over, ``--idle-seconds`` of polling (E7 every
   10 s, E0 every 300 s): CPU share of one core, and each thread's voluntary
   context switches (``/proc/<pid>/task/<tid>/status``), i.e. the times it
   went to sleep and was woken, per minute.  A window that would hold a
   10-minute boundary (averages written, an upload) opens 90 s after it.
5. **RSS** (``VmRSS``) of the serial and the B-route process at the end of
   their runs; for B-route also 90 s after a 10-minute boundary, once both
   uploaders have tried an upload (what a box holds from then on;
   ``--no-upload-wait`` skips this wait of up to 11.5 minutes).

Both run as a deployed box runs them: from cached bytecode (a first start
of each config, not measured, compiles it into a temporary
``PYTHONPYCACHEPREFIX``), and with ``python3 -S`` plus the site-packages
directories on ``PYTHONPATH``, so that start-up hooks of this machine's
``.pth`` files (one imports certifi, and with it pathlib, typing, zipfile...)
weigh on neither.

CPU is the time the process's threads ran (``/proc/<pid>/task/*/schedstat``,
in nanoseconds) over the phase, per 1,000 lines the raw file received.  Threads are named by start
order (``/proc`` has no Python thread names): keilog starts its workers in
``worker_def`` order, kei consumers first; both give uploader, recorder,
reader here.  Ratios are kei / keilog: below 1 means kei is lighter.
"""

from __future__ import annotations

import argparse
import os
import platform
import site
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
DEFAULT_KEILOG = REPO.parent / "shared" / "reference" / "keilog"
BAUD = 115200
BYTES_PER_SECOND = BAUD / 10          # 8N1
CHUNK_SECONDS = 0.005
TICK = os.sysconf("SC_CLK_TCK")
ROUTE_B_ID = "00112233445566778899AABBCCDDEEFF"    # the simulator's defaults
ROUTE_B_PWD = "0123456789AB"

SERIAL_CONFIG = """\
import queue
from keilib.recorder import FileRecorder
from keilib.serial import SerialReader

record_que = queue.Queue(50)
worker_def = [
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'bench'}},
    {'class': SerialReader, 'args': {'port': %(port)r, 'baudrate': 115200, 'record_que': record_que}},
]
"""

BROUTE_CONFIG = """\
import queue
from keilib.uploader import HttpPostUploader
from keilib.recorder import FileRecorder
from keilib.broute import BrouteReader, WiSunRL7023

record_que = queue.Queue(50)
upload_que = queue.Queue(50)
wisundev = WiSunRL7023(port=%(port)r, baud=115200, type=WiSunRL7023.IPS)
requests = [
    {'epc': ['D3', 'D7', 'E1'], 'cycle': 3600},
    {'epc': ['E7'], 'cycle': 10},
    {'epc': ['E0'], 'cycle': 300},
]
worker_def = [
    {'class': HttpPostUploader, 'args': {'upload_que': upload_que, 'target_url': 'http://127.0.0.1:9/upload.php',
                                         'upload_key': 'benchkey'}},
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'bench',
                                     'upload_que': upload_que}},
    {'class': BrouteReader, 'args': {'wisundev': wisundev, 'broute_id': %(id)r, 'broute_pwd': %(pwd)r,
                                     'requests': requests, 'record_que': record_que}},
]
"""


# -- /proc ---------------------------------------------------------------------

def _stat_cpu(path: str) -> float:
    with open(path) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK     # utime + stime


def _task_cpu(pid: int, tid: int) -> float:
    """A thread's CPU seconds: schedstat counts nanoseconds (stat: 10 ms ticks,
    too coarse for a minute of idling)."""
    try:
        with open("/proc/%d/task/%d/schedstat" % (pid, tid)) as handle:
            return int(handle.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return _stat_cpu("/proc/%d/task/%d/stat" % (pid, tid))


def process_cpu(pid: int) -> float:
    """CPU seconds of the process's live threads (they all live as long as it)."""
    return sum(cpu for cpu, _ in thread_stats(pid).values())


def thread_stats(pid: int) -> Dict[int, Tuple[float, int]]:
    """tid -> (CPU seconds, voluntary context switches)."""
    result = {}
    for name in os.listdir("/proc/%d/task" % pid):
        tid = int(name)
        try:
            cpu = _task_cpu(pid, tid)
            with open("/proc/%d/task/%d/status" % (pid, tid)) as handle:
                status = handle.read()
        except OSError:
            continue
        switches = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        result[tid] = (cpu, switches)
    return result


def rss_mb(pid: int) -> float:
    with open("/proc/%d/status" % pid) as handle:
        return int(re.search(r"^VmRSS:\s+(\d+)", handle.read(), re.M).group(1)) / 1024.0


def has_open(pid: int, path: str) -> bool:
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, name)) == path:
                return True
        except OSError:
            pass
    return False


# -- the daemons -----------------------------------------------------------------

class Daemon:
    """One of the two programs: how to start it in a work dir."""

    def __init__(self, name: str, home: Path, cache: Path):
        self.name = name
        self.home = home
        self.cache = cache          # PYTHONPYCACHEPREFIX: bytecode kept out of both trees

    def start(self, workdir: Path, config: str) -> subprocess.Popen:
        (workdir / "keiconf.py").write_text(config)
        env = dict(os.environ)
        env.pop("DEBUG", None)
        # keilog's kei.py does 'import keiconf': the work dir must be on the path.
        # Its own keilib comes first anyway (the script's directory is sys.path[0]).
        # -S: no site hooks; the installed packages (pyserial, requests) by path.
        env["PYTHONPATH"] = os.pathsep.join([str(workdir)] + site.getsitepackages())
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.cache)
        with open(workdir / "stderr.txt", "wb") as errors:
            return subprocess.Popen([sys.executable, "-S", str(self.home / "kei.py")], cwd=str(workdir),
                                    env=env, stdout=subprocess.DEVNULL, stderr=errors)

    def warm(self, config: str) -> None:
        """Start once with ``config`` on a silent pty, until its port is open:
        every module the config imports at start is compiled into the cache."""
        master, slave, path = make_pty()
        with tempfile.TemporaryDirectory() as tmp:
            proc = self.start(Path(tmp), config % {"port": path, "id": ROUTE_B_ID, "pwd": ROUTE_B_PWD})
            started = time.monotonic()
            try:
                while not has_open(proc.pid, path) and proc.poll() is None and time.monotonic() - started < 30:
                    time.sleep(0.01)
                time.sleep(0.5)
            finally:
                stop(proc, signal.SIGKILL)
                os.close(master)
                os.close(slave)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> float:
    """Send ``sig``; seconds until the process ended."""
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return time.monotonic() - started


def make_pty() -> Tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    return master, slave, os.ttyname(slave)


def raw_ids(workdir: Path) -> List[int]:
    """The sequence numbers of the lines in the raw file(s), in file order."""
    ids: List[int] = []
    for path in sorted(workdir.glob("2*-bench.txt")):
        with open(path, "rb") as handle:
            for text in handle:
                try:
                    ids.append(int(text.rsplit(b",", 1)[1]))
                except (IndexError, ValueError):
                    pass
    return ids


def line_count(workdir: Path) -> int:
    total = 0
    for path in workdir.glob("2*-bench.txt"):
        with open(path, "rb") as handle:
            total += handle.read().count(b"\n")
    return total


def line(seq: int) -> bytes:
    return b"unit%d,temp,%d.%02d,%d\r\n" % (seq % 4 + 1, 20 + seq % 7, seq % 100, seq)


def wait_quiet(workdir: Path, expected: int, proc: subprocess.Popen, quiet: float = 1.0,
               limit: float = 120.0) -> int:
    """Wait until the raw files hold ``expected`` lines, or grew no more for ``quiet`` s."""
    started = last_change = time.monotonic()
    count = -1
    while True:
        now_count = line_count(workdir)
        now = time.monotonic()
        if now_count != count:
            count, last_change = now_count, now
        if count >= expected or now - last_change >= quiet or now - started > limit or proc.poll() is not None:
            return count
        time.sleep(0.05)


# -- phases ------------------------------------------------------------------------

def start_to_port_open(daemons: List[Daemon], starts: int) -> Dict[str, float]:
    """Median seconds from process start to the port among its open files;
    the daemons take turns, so that a drift of the machine's load weighs on
    each alike."""
    times: Dict[str, List[float]] = {daemon.name: [] for daemon in daemons}
    for round_ in range(starts):
        for daemon in (daemons if round_ % 2 == 0 else daemons[::-1]):
            times[daemon.name].append(time_one_start(daemon))
    return {name: statistics.median(values) for name, values in times.items()}


def time_one_start(daemon: Daemon) -> float:
    master, slave, path = make_pty()
    with tempfile.TemporaryDirectory() as tmp:
        proc = daemon.start(Path(tmp), SERIAL_CONFIG % {"port": path})
        started = time.monotonic()
        try:
            while not has_open(proc.pid, path):
                if proc.poll() is not None or time.monotonic() - started > 30:
                    raise SystemExit("%s did not open its port: %s" % (
                        daemon.name, (Path(tmp) / "stderr.txt").read_text(errors="replace")[-2000:]))
                time.sleep(0.0005)
            return time.monotonic() - started
        finally:
            stop(proc, signal.SIGKILL)      # keilog's stop takes up to 3 s; not timed here
            os.close(master)
            os.close(slave)


class SerialRun:
    """One daemon on its own pty, for the paced and the burst phases."""

    def __init__(self, daemon: Daemon, tmp: Path):
        self.daemon = daemon
        self.workdir = tmp / daemon.name
        self.workdir.mkdir()
        self.master, self.slave, self.path = make_pty()
        self.proc = daemon.start(self.workdir, SERIAL_CONFIG % {"port": self.path})
        self.sent = 0
        self.results: Dict[str, float] = {}

    def wait_open(self) -> None:
        started = time.monotonic()
        while not has_open(self.proc.pid, self.path):
            if self.proc.poll() is not None or time.monotonic() - started > 30:
                raise SystemExit("%s did not open its port" % self.daemon.name)
            time.sleep(0.01)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def close(self) -> None:
        self.results["stop_s"] = stop(self.proc)
        os.close(self.master)
        os.close(self.slave)


def paced(runs: List[SerialRun], seconds: float) -> None:
    """The same bytes on the same schedule to every daemon's pty."""
    chunks: List[bytes] = []
    seq = sent_bytes = 0
    for index in range(1, int(seconds / CHUNK_SECONDS) + 1):
        chunk = bytearray()
        while sent_bytes + len(chunk) + len(line(seq)) <= index * CHUNK_SECONDS * BYTES_PER_SECOND:
            chunk += line(seq)
            seq += 1
        sent_bytes += len(chunk)
        chunks.append(bytes(chunk))
    t0 = time.monotonic() + 0.2

    def writer(run: SerialRun) -> None:
        for index, chunk in enumerate(chunks):
            delay = t0 + (index + 1) * CHUNK_SECONDS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            run.write(chunk)

    cpu0 = {run.daemon.name: (process_cpu(run.proc.pid), thread_stats(run.proc.pid)) for run in runs}
    threads = [threading.Thread(target=writer, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for run in runs:
        run.sent = seq
        got = wait_quiet(run.workdir, seq, run.proc)
        cpu_before, threads_before = cpu0[run.daemon.name]
        run.results["paced_lines"] = seq
        run.results["paced_cpu_k"] = (process_cpu(run.proc.pid) - cpu_before) * 1000.0 / max(1, got)
        run.results["paced_lost"] = seq - got
        run.results["paced_threads"] = thread_cpu_delta(threads_before, thread_stats(run.proc.pid))  # type: ignore
        ids = raw_ids(run.workdir)
        run.results["paced_in_order"] = float(ids == sorted(set(ids)))
        run.results["paced_seconds"] = seconds


def thread_cpu_delta(before: Dict[int, Tuple[float, int]], after: Dict[int, Tuple[float, int]]) -> List[float]:
    return [after[tid][0] - before.get(tid, (0.0, 0))[0] for tid in sorted(after)]


def bursts(runs: List[SerialRun], count: int, size: int) -> None:
    def writer(run: SerialRun) -> None:
        first = run.sent
        cpu0 = process_cpu(run.proc.pid)
        for burst in range(count):
            start = first + burst * size
            run.write(b"".join(line(seq) for seq in range(start, start + size)))
            wait_quiet(run.workdir, start + size, run.proc, quiet=1.0)
        got = line_count(run.workdir) - first
        run.results["burst_lines"] = count * size
        run.results["burst_cpu_k"] = (process_cpu(run.proc.pid) - cpu0) * 1000.0 / max(1, got)
        run.results["burst_lost"] = count * size - got
        ids = raw_ids(run.workdir)
        run.results["burst_in_order"] = float(ids == sorted(set(ids)))
        run.results["serial_rss"] = rss_mb(run.proc.pid)

    threads = [threading.Thread(target=writer, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


UPLOAD_SETTLE = 90.0     # s after a 10-minute boundary: both recorders closed the window, uploads tried


def next_boundary(now: float) -> float:
    return (int(now) // 600 + 1) * 600.0


class BrouteRun:
    """Both daemons on their own simulated meter; started first, as joining
    takes keilog about a minute with realistic delays (kei: 10 s), so that the
    serial phases run meanwhile; the idle window opens once both have joined."""

    def __init__(self, daemons: List[Daemon], latency: str):
        self.daemons = daemons
        self.tmp = tempfile.TemporaryDirectory()
        self.sims: Dict[str, subprocess.Popen] = {}
        self.procs: Dict[str, subprocess.Popen] = {}
        self.workdirs: Dict[str, Path] = {}
        self.started = time.monotonic()
        self.started_wall = time.time()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for daemon in daemons:
            sim = subprocess.Popen([sys.executable, "-m", "keilib.sim", "wisun", "--kind", "ips",
                                    "--latency", latency], cwd=str(REPO), env=env,
                                   stdout=subprocess.PIPE, text=True)
            self.sims[daemon.name] = sim
            port = sim.stdout.readline().strip()       # type: ignore[union-attr]
            workdir = Path(self.tmp.name) / daemon.name
            workdir.mkdir()
            self.workdirs[daemon.name] = workdir
            self.procs[daemon.name] = daemon.start(workdir, BROUTE_CONFIG % {
                "port": port, "id": ROUTE_B_ID, "pwd": ROUTE_B_PWD})

    def measure(self, idle: float) -> Dict[str, Dict[str, object]]:
        results: Dict[str, Dict[str, object]] = {}
        joined: Dict[str, float] = {}
        while len(joined) < len(self.daemons):
            for daemon in self.daemons:
                if daemon.name not in joined and any(
                        b",E7," in p.read_bytes() for p in self.workdirs[daemon.name].glob("2*-bench.txt")):
                    joined[daemon.name] = time.monotonic() - self.started
            if time.monotonic() - self.started > 240:
                raise SystemExit("no E7 within 240 s from: %s" % ", ".join(
                    d.name for d in self.daemons if d.name not in joined))
            time.sleep(0.1)
        time.sleep(2.0)           # the join's last exchanges are over
        # The idle window must not hold a 10-minute window close: the recorders
        # then write averages and the uploaders spool and POST, which is not idle.
        boundary = next_boundary(time.time())
        if time.time() + idle > boundary - 5.0:
            print("waiting %.0f s: the idle window would hold a 10-minute window close (and an upload)"
                  % (boundary + UPLOAD_SETTLE - time.time()), flush=True)
            time.sleep(max(0.0, boundary + UPLOAD_SETTLE - time.time()))
        before = {name: (process_cpu(p.pid), thread_stats(p.pid), time.monotonic())
                  for name, p in self.procs.items()}
        time.sleep(idle)
        for name, proc in self.procs.items():
            cpu0, threads0, t0 = before[name]
            after = thread_stats(proc.pid)
            elapsed = time.monotonic() - t0
            minutes = elapsed / 60.0
            wakeups = [(after[tid][1] - threads0.get(tid, (0.0, 0))[1]) / minutes for tid in sorted(after)]
            results[name] = {
                "first_e7_s": joined[name],
                "idle_cpu_pct": (process_cpu(proc.pid) - cpu0) / elapsed * 100.0,
                "wakeups": wakeups,        # per thread, in start order; [0] is the main thread
                "rss": rss_mb(proc.pid),
            }
        return results

    def after_upload(self, results: Dict[str, Dict[str, object]]) -> None:
        """RSS once both uploaders have tried an upload: the recorders hand a
        block over when a 10-minute window closes (kei after its 30 s of grace
        for late readings); a minute and a half later both have tried.  No wait
        when that happened already (the idle window waited for it)."""
        last = next_boundary(time.time()) - 600
        if last + UPLOAD_SETTLE > time.time() or last < self.started_wall:
            boundary = next_boundary(time.time())
            print("waiting %.0f s for the 10-minute window to close (an upload) ..."
                  % (boundary + UPLOAD_SETTLE - time.time()), flush=True)
            time.sleep(max(0.0, boundary + UPLOAD_SETTLE - time.time()))
        for name, proc in self.procs.items():
            results.setdefault(name, {})["rss_uploaded"] = rss_mb(proc.pid)

    def close(self, results: Dict[str, Dict[str, object]]) -> None:
        for name, proc in self.procs.items():
            results.setdefault(name, {})["stop_s"] = stop(proc)
        for sim in self.sims.values():
            sim.terminate()
            sim.wait(timeout=10)
        self.tmp.cleanup()


# -- report -----------------------------------------------------------------------

def ratio(a: Optional[float], b: Optional[float]) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return "%.2f" % (a / b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paced-seconds", type=float, default=20.0, help="paced serial run (default 20 s)")
    parser.add_argument("--bursts", type=int, default=4, help="number of bursts (default 4)")
    parser.add_argument("--burst-lines", type=int, default=2500, help="lines per burst (default 2500)")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="B-route idle window (default 60 s)")
    parser.add_argument("--starts", type=int, default=51, help="starts timed to port open, taking turns (default 51)")
    parser.add_argument("--latency", default="realistic", choices=("realistic", "zero"),
                        help="the simulated module's delays (default realistic)")
    parser.add_argument("--no-upload-wait", dest="upload_wait", action="store_false",
                        help="skip waiting (up to 11.5 min) for an upload to measure RSS after it")
    parser.add_argument("--keilog", default=str(DEFAULT_KEILOG), help="keilog's source directory")
    parser.add_argument("--only", choices=("start", "serial", "broute"), action="append",
                        help="run only these phases (repeatable)")
    args = parser.parse_args()
    phases = set(args.only or ("start", "serial", "broute"))

    cache = tempfile.TemporaryDirectory(prefix="bench-pycache-")
    daemons = [Daemon("kei", REPO, Path(cache.name) / "kei")]
    keilog_home = Path(args.keilog)
    if (keilog_home / "kei.py").is_file() and (keilog_home / "keilib" / "serial.py").is_file():
        daemons.append(Daemon("keilog", keilog_home, Path(cache.name) / "keilog"))
    else:
        print("keilog not found at %s: SKIPPING the keilog side (pass --keilog PATH); kei's figures alone"
              % keilog_home)
    cpu_model = "?"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu_model = re.search(r"^model name\s*:\s*(.*)$", handle.read(), re.M).group(1)  # type: ignore
    except (OSError, AttributeError):
        pass
    print("%s, %s (%d CPUs), Python %s, load %.2f" % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                      cpu_model, os.cpu_count() or 0, platform.python_version(),
                                                      os.getloadavg()[0]))
    names = [d.name for d in daemons]
    res: Dict[str, Dict[str, object]] = {name: {} for name in names}

    for daemon in daemons:
        for config in (SERIAL_CONFIG, BROUTE_CONFIG):
            daemon.warm(config)
    broute = BrouteRun(daemons, args.latency) if "broute" in phases else None
    broute_results: Dict[str, Dict[str, object]] = {}
    try:
        measure(args, phases, daemons, res)
        if broute is not None:
            broute_results = broute.measure(args.idle_seconds)
            if args.upload_wait:
                broute.after_upload(broute_results)
    finally:
        if broute is not None:
            broute.close(broute_results)
        cache.cleanup()
    for name, values in broute_results.items():
        res[name].update({"br_" + key: value for key, value in values.items()})
    report(args, names, res)
    return 0


def measure(args: argparse.Namespace, phases: set, daemons: List[Daemon], res: Dict[str, Dict[str, object]]) -> None:
    """The start-up and serial phases (while the B-route daemons join)."""
    if "start" in phases:
        for name, seconds in start_to_port_open(daemons, args.starts).items():
            res[name]["start_s"] = seconds
    if "serial" in phases:
        with tempfile.TemporaryDirectory() as tmp:
            runs = [SerialRun(daemon, Path(tmp)) for daemon in daemons]
            try:
                for run in runs:
                    run.wait_open()
                time.sleep(0.5)          # past kei's settle time after the open
                paced(runs, args.paced_seconds)
                bursts(runs, args.bursts, args.burst_lines)
            finally:
                for run in runs:
                    run.close()
            for run in runs:
                res[run.daemon.name].update(run.results)


def report(args: argparse.Namespace, names: List[str], res: Dict[str, Dict[str, object]]) -> None:
    def get(name: str, key: str) -> Optional[float]:
        value = res.get(name, {}).get(key)
        return value if isinstance(value, (int, float)) else None

    rows: List[Tuple[str, str, Optional[float], Optional[float]]] = []
    rows.append(("serial CPU s per 1,000 lines, paced at 115200 baud (%s lines)"
                 % (get("kei", "paced_lines") and "%d" % get("kei", "paced_lines")), "%.3f",
                 get("kei", "paced_cpu_k"), get("keilog", "paced_cpu_k")))
    rows.append(("serial lines lost, paced", "%d", get("kei", "paced_lost"), get("keilog", "paced_lost")))
    rows.append(("serial CPU s per 1,000 lines kept, bursts (%d x %d lines)" % (args.bursts, args.burst_lines),
                 "%.3f", get("kei", "burst_cpu_k"), get("keilog", "burst_cpu_k")))
    rows.append(("serial lines lost, bursts", "%d", get("kei", "burst_lost"), get("keilog", "burst_lost")))
    rows.append(("B-route idle after join, CPU %% of a core (%g s)" % args.idle_seconds, "%.3f",
                 get("kei", "br_idle_cpu_pct"), get("keilog", "br_idle_cpu_pct")))

    def wake(name: str, index: int) -> Optional[float]:
        values = res.get(name, {}).get("br_wakeups")
        if not isinstance(values, list) or len(values) <= index:
            return None
        return values[index]
    # thread order: main, uploader, recorder, reader
    rows.append(("B-route idle: reader thread wake-ups per minute", "%.0f", wake("kei", 3), wake("keilog", 3)))
    rows.append(("B-route idle: recorder thread wake-ups per minute", "%.0f", wake("kei", 2), wake("keilog", 2)))
    rows.append(("B-route idle: uploader thread wake-ups per minute", "%.0f", wake("kei", 1), wake("keilog", 1)))
    rows.append(("B-route idle: main thread wake-ups per minute", "%.0f", wake("kei", 0), wake("keilog", 0)))
    rows.append(("RSS MB, serial config", "%.1f", get("kei", "serial_rss"), get("keilog", "serial_rss")))
    rows.append(("RSS MB, B-route config, at the end of the idle window", "%.1f", get("kei", "br_rss"),
                 get("keilog", "br_rss")))
    rows.append(("RSS MB, B-route config, after an upload", "%.1f",
                 get("kei", "br_rss_uploaded"), get("keilog", "br_rss_uploaded")))
    rows.append(("start to port open s (serial config, median of %d)" % args.starts, "%.3f",
                 get("kei", "start_s"), get("keilog", "start_s")))
    rows.append(("stop s (SIGTERM to exit), serial config", "%.2f", get("kei", "stop_s"), get("keilog", "stop_s")))
    rows.append(("stop s (SIGTERM to exit), B-route config", "%.2f", get("kei", "br_stop_s"),
                 get("keilog", "br_stop_s")))

    print()
    print("| measured here, same run | kei | keilog | kei/keilog |")
    print("|---|---|---|---|")
    for label, form, kei, keilog in rows:
        if kei is None and keilog is None:
            continue
        print("| %s | %s | %s | %s |" % (label, form % kei if kei is not None else "-",
                                         form % keilog if keilog is not None else "-", ratio(kei, keilog)))
    for name in names:
        threads = res[name].get("paced_threads")
        if isinstance(threads, list):
            print("%s paced: CPU s per thread in start order (main first): %s; in order: %s" % (
                name, ", ".join("%.2f" % t for t in threads), bool(res[name].get("paced_in_order"))))
        values = res[name].get("br_wakeups")
        if isinstance(values, list):
            print("%s B-route: wake-ups per minute per thread in start order (main first): %s; first E7 after %.1f s"
                  % (name, ", ".join("%.0f" % v for v in values), res[name].get("br_first_e7_s", 0.0)))


if __name__ == "__main__":
    sys.exit(main())
