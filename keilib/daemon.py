"""The launcher: load keiconf.py, validate it, run and supervise the workers.

``python3 kei.py`` (or ``kei``) in a work directory imports ``keiconf.py`` from
it.  Options: ``-c/--config PATH``, ``--check`` (validate and exit),
``--demo`` (run the built-in simulated pipeline), ``--version``.

Validation happens before any thread starts, and a bad config exits with
status 2 and a message that names the entry and the argument::

    keiconf.py: worker_def[2] (BrouteReader): unknown argument 'prot'

Logging: INFO to ``kei.log`` in the work directory, rotated at midnight with 3
backups; with the environment variable ``DEBUG`` set (any value, as in keilog:
``DEBUG=0 python3 kei.py``) DEBUG to standard output instead.  SIGUSR1 toggles
INFO <-> DEBUG.  SIGHUP, SIGINT and SIGTERM stop every worker and exit 0.

Signal handlers only record what happened; the main thread acts on it.

Supervision (states per worker)::

    STARTING -> RUNNING --(thread ends unasked)--> BACKOFF --(delay)--> STARTING
    RUNNING --(stop signal)--> STOPPING -> STOPPED

A worker that dies is logged with its class and traceback and replaced by a
fresh instance built from the same definition after 1 s, doubling to 60 s;
the delay resets once an instance has run for 10 minutes.

Start order: consumers before producers (the recorder is listening before the
readers start); stop order: producers first, so each consumer can drain what
was queued for it.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import logging
import logging.handlers
import os
import queue
import select
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

from keilib import __version__
from keilib.errors import ConfigError
from keilib.worker import Worker

logger = logging.getLogger("kei")

EXIT_OK = 0
EXIT_CONFIG = 2

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 600.0
STOP_BUDGET = 10.0
LIVENESS_CHECK = 5.0   # legacy workers that override run() do not signal their end

LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"

NO_CONFIG_HELP = """\
kei: no configuration found at {path}

Make one by copying an example into this directory and editing it:
    cp keiconf_broute.py keiconf.py     # smart meter over Route B
    cp keiconf_serial.py keiconf.py     # sensors on serial ports
or name another file with -c PATH.  To see kei run with no hardware at all:
    python3 kei.py --demo
"""


# -- configuration --------------------------------------------------------

class WorkerSpec:
    """One validated ``worker_def`` entry."""

    def __init__(self, index: int, cls: type, args: Dict[str, Any]):
        self.index = index
        self.cls = cls
        self.args = args

    @property
    def label(self) -> str:
        return "worker_def[%d] (%s)" % (self.index, self.cls.__name__)

    def queues(self, names: tuple) -> List["queue.Queue[Any]"]:
        return [self.args[name] for name in names if self.args.get(name) is not None]

    @property
    def consumes(self) -> List["queue.Queue[Any]"]:
        return self.queues(getattr(self.cls, "CONSUMES", ()))

    @property
    def produces(self) -> List["queue.Queue[Any]"]:
        return self.queues(getattr(self.cls, "PRODUCES", ()))

    def build(self) -> Worker:
        return self.cls(**self.args)


def load_config(path: str) -> Any:
    """Import the config file as module ``keiconf``; ConfigError names file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)   # let a config import its neighbours
    spec = importlib.util.spec_from_file_location("keiconf", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["keiconf"] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except SyntaxError as exc:
        raise ConfigError("%s:%s: syntax error: %s\n    %s" % (
            exc.filename, exc.lineno, exc.msg, (exc.text or "").rstrip())) from exc
    except Exception as exc:  # noqa: BLE001 - anything the config raises is a config error
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if os.path.abspath(f.filename) == os.path.abspath(path)]
        where = "%s:%d" % (path, frames[-1].lineno) if frames else path
        raise ConfigError("%s: %s: %s" % (where, type(exc).__name__, exc)) from exc
    return module


def validate(module: Any, source: str) -> List[WorkerSpec]:
    """Check ``worker_def`` and every entry's arguments; raise ConfigError."""
    if not hasattr(module, "worker_def"):
        raise ConfigError("%s: no 'worker_def' defined (a list of {'class': ..., 'args': {...}})" % source)
    worker_def = module.worker_def
    if not isinstance(worker_def, list):
        raise ConfigError("%s: 'worker_def' must be a list, got %s" % (source, type(worker_def).__name__))
    if not worker_def:
        raise ConfigError("%s: 'worker_def' is empty; nothing to run" % source)
    specs = []
    for index, entry in enumerate(worker_def):
        where = "%s: worker_def[%d]" % (source, index)
        if not isinstance(entry, dict):
            raise ConfigError("%s: must be a dict {'class': ..., 'args': {...}}, got %s"
                              % (where, type(entry).__name__))
        unknown_keys = set(entry) - {"class", "args", "instance"}
        if unknown_keys:
            raise ConfigError("%s: unknown key(s) %s; expected 'class' and 'args'"
                              % (where, ", ".join(sorted(map(repr, unknown_keys)))))
        if "class" not in entry:
            raise ConfigError("%s: missing 'class'" % where)
        cls = entry["class"]
        if not (inspect.isclass(cls) and issubclass(cls, Worker)):
            raise ConfigError("%s: 'class' must be a Worker class (e.g. FileRecorder), got %r" % (where, cls))
        where = "%s: worker_def[%d] (%s)" % (source, index, cls.__name__)
        if "args" not in entry:
            raise ConfigError("%s: missing 'args' (a dict of the constructor's arguments; {} for none)" % where)
        args = entry["args"]
        if not isinstance(args, dict):
            raise ConfigError("%s: 'args' must be a dict, got %s" % (where, type(args).__name__))
        for name in args:
            if not isinstance(name, str):
                raise ConfigError("%s: argument names must be strings, got %r" % (where, name))
        check_requirements(cls, where)
        signature = inspect.signature(cls)
        accepts_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
        if not accepts_any:
            for name in args:
                if name not in signature.parameters:
                    raise ConfigError("%s: unknown argument '%s' (accepted: %s)" % (
                        where, name, ", ".join(signature.parameters)))
        for name, param in signature.parameters.items():
            if (param.default is param.empty and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
                    and name not in args):
                raise ConfigError("%s: missing argument '%s'" % (where, name))
        for name in tuple(getattr(cls, "CONSUMES", ())) + tuple(getattr(cls, "PRODUCES", ())):
            value = args.get(name)
            if value is not None and not isinstance(value, queue.Queue):
                raise ConfigError("%s: argument '%s' must be a queue.Queue, got %s"
                                  % (where, name, type(value).__name__))
        specs.append(WorkerSpec(index, cls, args))
    check_queues(specs, source)
    return specs


def check_requirements(cls: type, where: str) -> None:
    """A worker needing an optional package says so in ``REQUIRES``: a list
    of ``(module, pip command, apt command)``; a missing one is a config
    error naming both commands (imported here only when configured)."""
    for module_name, pip_command, apt_command in getattr(cls, "REQUIRES", ()):
        try:
            importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError("%s: needs the Python package for '%s', which is missing (%s). "
                              "Install it with:  %s   or, on Debian / Raspberry Pi OS:  %s"
                              % (where, module_name, exc, pip_command, apt_command)) from exc


def check_queues(specs: List[WorkerSpec], source: str) -> None:
    """Every queue a worker puts into must have a worker taking from it."""
    consumed = {id(q) for spec in specs for q in spec.consumes}
    for spec in specs:
        for name in getattr(spec.cls, "PRODUCES", ()):
            q = spec.args.get(name)
            if q is not None and id(q) not in consumed:
                raise ConfigError("%s: %s: argument '%s' is a queue that no worker takes from "
                                  "(add a worker that consumes it, or remove it)" % (source, spec.label, name))


def build_all(specs: List[WorkerSpec], source: str) -> List[Worker]:
    """Construct every worker (constructors validate their arguments, no I/O)."""
    workers = []
    for spec in specs:
        try:
            workers.append(spec.build())
        except (ConfigError, ValueError, TypeError) as exc:
            raise ConfigError("%s: %s: %s" % (source, spec.label, exc)) from exc
    return workers


def start_order(specs: List[WorkerSpec]) -> List[WorkerSpec]:
    """Consumers before producers: sort by how far a worker is from the sinks."""
    depth: Dict[int, int] = {}

    def distance(spec: WorkerSpec, seen: frozenset) -> int:
        if spec.index in depth:
            return depth[spec.index]
        targets = {id(q) for q in spec.produces}
        downstream = [other for other in specs
                      if other is not spec and other.index not in seen
                      and targets & {id(q) for q in other.consumes}]
        result = 1 + max((distance(o, seen | {spec.index}) for o in downstream), default=-1)
        depth[spec.index] = result
        return result

    return sorted(specs, key=lambda s: (distance(s, frozenset()), s.index))


# -- logging ---------------------------------------------------------------

def setup_logging(workdir: str, debug: bool, stream: bool = False) -> logging.Handler:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if debug or stream:
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
        root.setLevel(logging.DEBUG if debug else logging.INFO)
    else:
        handler = logging.handlers.TimedRotatingFileHandler(
            os.path.join(workdir, "kei.log"), when="midnight", backupCount=3, encoding="utf-8")
        root.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    return handler


def toggle_log_level() -> None:
    root = logging.getLogger()
    if root.level == logging.DEBUG:
        logger.info("log level changed to INFO (SIGUSR1)")
        root.setLevel(logging.INFO)
    else:
        root.setLevel(logging.DEBUG)
        logger.info("log level changed to DEBUG (SIGUSR1)")


# -- supervision -------------------------------------------------------------

class Waker:
    """Wakes the main loop: from signals (through ``signal.set_wakeup_fd``) and
    from worker threads (``set()``, as the Worker's ``exit_event``).

    A pipe, not a ``threading.Event``: a Python signal handler runs in the
    main thread between any two bytecodes, possibly while that thread holds
    the Event's internal lock, so a handler that set an Event could deadlock.
    Handlers here only assign attributes; the kernel wakes ``wait()``.
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def set(self) -> None:
        try:
            os.write(self.write_fd, b"w")
        except BlockingIOError:
            pass            # the pipe is full: the main loop is awake anyway

    def wait(self, timeout: Optional[float]) -> None:
        """Sleep until woken or ``timeout``; then empty the pipe."""
        select.select([self.read_fd], [], [], timeout)
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass


class Supervised:
    """A worker definition, its current instance and its restart state."""

    def __init__(self, spec: WorkerSpec, instance: Worker, wake: Waker):
        self.spec = spec
        self.instance: Optional[Worker] = instance
        self.wake = wake
        self.state = "STARTING"
        self.backoff = BACKOFF_FIRST
        self.restart_at = 0.0
        self.started_at = 0.0

    def start(self, now: float) -> None:
        assert self.instance is not None
        self.instance.exit_event = self.wake
        self.instance.start()
        self.started_at = now
        self.state = "RUNNING"

    def check(self, now: float) -> None:
        """Notice a dead instance, and restart after the backoff delay."""
        if self.state == "RUNNING" and self.instance is not None and not self.instance.is_alive():
            ran = now - self.started_at
            if ran >= BACKOFF_RESET_AFTER:
                self.backoff = BACKOFF_FIRST
            failure = getattr(self.instance, "failure", None)
            logger.error("%s ended unexpectedly after %.0f s%s; restarting in %g s",
                         self.spec.label, ran, " (%s: %s)" % (type(failure).__name__, failure) if failure else "",
                         self.backoff)
            self.state = "BACKOFF"
            self.restart_at = now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)
            self.instance = None
        if self.state == "BACKOFF" and now >= self.restart_at:
            try:
                self.instance = self.spec.build()
            except Exception:  # noqa: BLE001 - a constructor must not kill the launcher
                logger.exception("%s: building a new instance failed; retrying in %g s",
                                 self.spec.label, self.backoff)
                self.restart_at = now + self.backoff
                self.backoff = min(self.backoff * 2, BACKOFF_MAX)
                return
            logger.info("%s: restarting", self.spec.label)
            self.start(now)

    def next_deadline(self) -> Optional[float]:
        return self.restart_at if self.state == "BACKOFF" else None


class Daemon:
    """Runs validated workers until a stop signal."""

    def __init__(self, specs: List[WorkerSpec], instances: List[Worker],
                 monotonic: Callable[[], float] = time.monotonic):
        self.monotonic = monotonic
        self.wake = Waker()
        by_index = {spec.index: inst for spec, inst in zip(specs, instances)}
        self.supervised = [Supervised(spec, by_index[spec.index], self.wake) for spec in start_order(specs)]
        self.stop_signal: Optional[int] = None
        self.usr1_count = 0

    # Signal handlers: record only (they run between bytecodes of the main
    # thread); the wakeup fd makes the kernel wake the main loop.
    def on_stop_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum

    def on_usr1(self, signum: int, frame: Any) -> None:
        self.usr1_count += 1

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self.wake.write_fd, warn_on_full_buffer=False)
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.on_stop_signal)
        signal.signal(signal.SIGUSR1, self.on_usr1)

    def run(self) -> int:
        now = self.monotonic()
        for sup in self.supervised:
            sup.start(now)
        logger.info("kei %s started with %d worker(s): %s", __version__, len(self.supervised),
                    ", ".join(sup.spec.cls.__name__ for sup in self.supervised))
        handled_usr1 = 0
        while self.stop_signal is None:
            deadlines = [d for d in (s.next_deadline() for s in self.supervised) if d is not None]
            timeout = LIVENESS_CHECK
            if deadlines:
                timeout = max(0.0, min(timeout, min(deadlines) - self.monotonic()))
            self.wake.wait(timeout)
            while handled_usr1 < self.usr1_count:
                handled_usr1 += 1
                toggle_log_level()
            if self.stop_signal is not None:
                break
            now = self.monotonic()
            for sup in self.supervised:
                sup.check(now)
        return self.shutdown()

    def shutdown(self) -> int:
        name = signal.Signals(self.stop_signal).name if self.stop_signal else "request"
        logger.info("stopping all workers (%s). Please wait ...", name)
        deadline = self.monotonic() + STOP_BUDGET
        # Producers first, then each consumer drains what was queued for it.
        for sup in reversed(self.supervised):
            sup.state = "STOPPING"
            if sup.instance is None:
                continue
            left = max(0.1, deadline - self.monotonic())
            if not sup.instance.stop(timeout=left):
                logger.error("%s did not stop within the %g s budget", sup.spec.label, STOP_BUDGET)
            sup.state = "STOPPED"
        logger.info("kei stopped")
        return EXIT_OK


# -- entry point --------------------------------------------------------------

def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kei", description=(
        "Smart-meter (Route B) and serial-sensor logging daemon. "
        "Run it in a work directory that holds keiconf.py."))
    parser.add_argument("-c", "--config", default=None,
                        help="configuration file (default: ./keiconf.py)")
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration and exit (0 if good)")
    parser.add_argument("--demo", action="store_true",
                        help="run the built-in demo: simulated smart meter and sensor, files in ./demo-data/")
    parser.add_argument("--version", action="version", version="kei %s" % __version__)
    return parser.parse_args(argv)


def prepare(config_path: str) -> tuple:
    """Load, validate and build; raise ConfigError."""
    module = load_config(config_path)
    source = os.path.basename(config_path)
    specs = validate(module, source)
    instances = build_all(specs, source)
    return specs, instances


# Subcommands (``kei <name> ...``): "module:function", imported only when
# asked for; the function takes the remaining arguments and returns the exit
# status.  ``kei`` alone (or with options) runs the daemon.
SUBCOMMANDS: Dict[str, str] = {
    "query": "keilib.query:main",        # issue 13: CSV from the SQLite store
}


def run_subcommand(argv: List[str]) -> Optional[int]:
    """Run ``kei <subcommand> ...`` if ``argv`` names one; None otherwise."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return None
    module_name, function_name = SUBCOMMANDS[argv[0]].split(":")
    module = importlib.import_module(module_name)
    return int(getattr(module, function_name)(argv[1:]) or 0)


def main(argv: Optional[List[str]] = None) -> int:
    status = run_subcommand(sys.argv[1:] if argv is None else list(argv))
    if status is not None:
        return status
    args = parse_args(argv)
    workdir = os.getcwd()
    config_path = args.config or os.path.join(workdir, "keiconf.py")
    try:
        if args.demo:
            from keilib import demo
            specs = validate(demo.config(workdir), "demo")
            instances = build_all(specs, "demo")
        else:
            specs, instances = prepare(config_path)
    except FileNotFoundError:
        sys.stderr.write(NO_CONFIG_HELP.format(path=config_path))
        return EXIT_CONFIG
    except ConfigError as exc:
        sys.stderr.write("kei: bad configuration: %s\n" % exc)
        return EXIT_CONFIG
    if args.check:
        print("kei: %s is valid: %d worker(s): %s" % (
            "the demo configuration" if args.demo else config_path,
            len(specs), ", ".join(s.cls.__name__ for s in specs)))
        return EXIT_OK
    # The demo logs to the terminal, so a newcomer sees what happens.
    setup_logging(workdir, debug="DEBUG" in os.environ, stream=args.demo)
    if args.demo:
        logger.warning("DEMO: this is a SIMULATION; no smart meter or sensor is read "
                       "(simulated time runs faster than real time)")
    daemon = Daemon(specs, instances)
    daemon.install_signals()
    previous_hook = threading.excepthook
    threading.excepthook = log_thread_death
    try:
        return daemon.run()
    finally:
        threading.excepthook = previous_hook


def log_thread_death(hook: Any) -> None:
    """``threading.excepthook``: a keilog-style worker that overrides ``run()``
    bypasses Worker.run's handler; its traceback goes to kei.log, not stderr,
    and the launcher is woken to restart it at once."""
    if hook.exc_type is SystemExit:
        return
    thread = hook.thread
    logger.error("%s died: %s: %s", type(thread).__name__ if thread is not None else "a thread",
                 hook.exc_type.__name__, hook.exc_value,
                 exc_info=(hook.exc_type, hook.exc_value, hook.exc_traceback))
    if isinstance(thread, Worker):
        if thread.failure is None and isinstance(hook.exc_value, BaseException):
            thread.failure = hook.exc_value
        if thread.exit_event is not None:
            thread.exit_event.set()


if __name__ == "__main__":
    sys.exit(main())
