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

Supervision (states per worker, ``WorkerState``)::

    STARTING -> RUNNING --(thread ends unasked)--> BACKOFF --(delay)--> STARTING
    RUNNING --(stop signal)--> STOPPING -> STOPPED

Wiring (``wire``, before any thread starts): a queue that several workers
consume is fanned out, each consumer getting every item through its own
buffer (``keilib.fanout``); a queue whose consumer wants a durable hand-off
(the HTTP uploader) becomes a ``keilib.spool.SpoolQueue``.  Mis-wiring that
is surely a mistake is refused: one queue used for readings by one entry and
for upload blocks by another (``record_que`` passed as ``upload_que``), a
worker taking from the queue it puts into, and two entries claiming the same
files or spool directory (two FileRecorders with one ``fname_base``).

Health: one ``keilib.health.Health`` per configured worker, kept across
restarts (the ``restarts`` counter and the ``worker`` state are the
launcher's), all in one ``Registry``.

A worker that dies is logged with its class and traceback and replaced by a
fresh instance built from the same definition after 1 s, doubling to 60 s;
the delay resets once an instance has run for 10 minutes.

Start order: consumers before producers (the recorder is listening before the
readers start); stop order: producers first, so each consumer can drain what
was queued for it.
"""

from __future__ import annotations

import enum
import importlib
import importlib.machinery
import logging
import os
import queue
import select
import signal
import sys
import threading
import time
import types

from keilib import __version__
from keilib.errors import ConfigError
from keilib.health import Health, Registry
from keilib.lock import LockHeld, WorkdirLock       # issue 17.7
from keilib.logutil import DailyLogFile, install_redaction
from keilib.worker import Backoff, Worker

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Callable, Dict, List, Optional

    from keilib import sdnotify, status

logger = logging.getLogger("kei")

EXIT_OK = 0
EXIT_CONFIG = 2

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 600.0
STOP_BUDGET = 10.0

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

class WorkerState(enum.Enum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


class WorkerSpec:
    """One validated ``worker_def`` entry.

    ``args`` are the config's own; ``wired_args`` are what instances are built
    with (shared queues replaced by fan-out queues, inboxes or spool queues).
    """

    def __init__(self, index: int, cls: type, args: Dict[str, Any]):
        self.index = index
        self.cls = cls
        self.args = args
        self.wired_args = dict(args)
        self.health = Health(self.label, cls.__name__)

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
        instance = self.cls(**self.wired_args)
        instance.health = self.health
        return instance


def load_config(path: str) -> Any:
    """Import the config file as module ``keiconf``; ConfigError names file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)   # let a config import its neighbours
    # The loader by hand: importlib.util would import typing on Python 3.9
    # (Bullseye), half a megabyte for the life of the daemon.
    loader = importlib.machinery.SourceFileLoader("keiconf", path)
    module = types.ModuleType("keiconf")
    module.__file__ = path
    module.__loader__ = loader
    module.__spec__ = importlib.machinery.ModuleSpec("keiconf", loader, origin=path)
    sys.modules["keiconf"] = module
    try:
        loader.exec_module(module)
    except SyntaxError as exc:
        raise ConfigError("%s:%s: syntax error: %s\n    %s" % (
            exc.filename, exc.lineno, exc.msg, (exc.text or "").rstrip())) from exc
    except Exception as exc:  # noqa: BLE001 - anything the config raises is a config error
        import traceback     # only for a config that fails
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
        if not (isinstance(cls, type) and issubclass(cls, Worker)):
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
        accepted, required, accepts_any = constructor_parameters(cls)
        if not accepts_any:
            for name in args:
                if name not in accepted:
                    raise ConfigError("%s: unknown argument '%s' (accepted: %s)" % (
                        where, name, ", ".join(accepted)))
        for name in accepted:
            if name in required and name not in args:
                raise ConfigError("%s: missing argument '%s'" % (where, name))
        for name in tuple(getattr(cls, "CONSUMES", ())) + tuple(getattr(cls, "PRODUCES", ())):
            value = args.get(name)
            if value is not None and not isinstance(value, queue.Queue):
                raise ConfigError("%s: argument '%s' must be a queue.Queue, got %s"
                                  % (where, name, type(value).__name__))
        specs.append(WorkerSpec(index, cls, args))
    check_queues(specs, source)
    check_wiring(specs, source)
    return specs


def constructor_parameters(cls: type) -> tuple:
    """(argument names in order, the required ones, whether any keyword is
    taken) of ``cls(...)``, read from its ``__init__``'s code object: the
    ``inspect`` module would cost every start about 3 MB and 10 ms."""
    init = cls.__init__
    code = getattr(init, "__code__", None)
    if code is None or hasattr(init, "__wrapped__"):
        import inspect           # a decorated or built-in constructor: ask inspect
        parameters = inspect.signature(cls).parameters
        return (list(parameters),
                {name for name, p in parameters.items() if p.default is p.empty
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)},
                any(p.kind == p.VAR_KEYWORD for p in parameters.values()))
    positional = code.co_varnames[1:code.co_argcount]            # without self
    keyword_only = code.co_varnames[code.co_argcount:code.co_argcount + code.co_kwonlyargcount]
    defaults = init.__defaults__ or ()
    required = set(positional[:len(positional) - len(defaults)])
    required |= {name for name in keyword_only if name not in (init.__kwdefaults__ or {})}
    return list(positional + keyword_only), required, bool(code.co_flags & 0x08)   # CO_VARKEYWORDS


def queue_uses(specs: List[WorkerSpec]) -> Dict[int, List[tuple]]:
    """id(queue) -> [(spec, argument, consumes?)] for every queue argument."""
    uses: Dict[int, List[tuple]] = {}
    for spec in specs:
        consumes = set(getattr(spec.cls, "CONSUMES", ()))
        for name, value in spec.args.items():
            if isinstance(value, queue.Queue):
                uses.setdefault(id(value), []).append((spec, name, name in consumes))
    return uses


def queue_kind(cls: type, argument: str) -> str:
    """What a queue argument carries: upload blocks or readings."""
    return getattr(cls, "QUEUE_KINDS", {}).get(argument, "upload blocks" if argument == "upload_que"
                                               else "readings")


def check_wiring(specs: List[WorkerSpec], source: str) -> None:
    """Refuse wiring that is surely a mistake, naming both entries."""
    for uses in queue_uses(specs).values():
        first_spec, first_arg, _ = uses[0]
        first_kind = queue_kind(first_spec.cls, first_arg)
        for spec, arg, _ in uses[1:]:
            kind = queue_kind(spec.cls, arg)
            if kind != first_kind:
                raise ConfigError("%s: one queue is %s's '%s' (%s) and %s's '%s' (%s); give each its "
                                  "own queue.Queue()" % (source, first_spec.label, first_arg, first_kind,
                                                         spec.label, arg, kind))
        for spec in {id(s): s for s, _, _ in uses}.values():
            own = [(arg, consumes) for s, arg, consumes in uses if s is spec]
            if any(c for _, c in own) and any(not c for _, c in own):
                raise ConfigError("%s: %s takes from and puts into the same queue ('%s' and '%s'); "
                                  "give each its own queue.Queue()" % (
                                      source, spec.label, next(a for a, c in own if c),
                                      next(a for a, c in own if not c)))
    claimed: Dict[str, WorkerSpec] = {}
    for spec in specs:
        claims = getattr(spec.cls, "claims", None)
        for claim in (claims(spec.args) if claims is not None else ()):
            other = claimed.get(claim)
            if other is not None:
                raise ConfigError("%s: %s and %s both use %s; give each its own" % (
                    source, other.label, spec.label, claim))
            claimed[claim] = spec


def wire(specs: List[WorkerSpec]) -> List[str]:
    """Fan out shared queues and give durable hand-offs (module docstring);
    returns one description line per rewired queue, for the start-up log."""
    lines = []
    for uses in queue_uses(specs).values():
        original = uses[0][0].args[uses[0][1]]
        consumers = [(spec, arg) for spec, arg, consumes in uses if consumes]
        producers = [(spec, arg) for spec, arg, consumes in uses if not consumes]
        if not consumers:
            continue

        def durable(spec: WorkerSpec, arg: str) -> Optional[queue.Queue]:
            if not getattr(spec.cls, "DURABLE_INTAKE", False):
                return None
            from keilib.spool import Spool, SpoolQueue       # only configs that upload load it
            spool = Spool(spec.cls.spool_path(spec.args.get("spool_dir")),
                          int(spec.args.get("max_batch_bytes", 65536)))
            return SpoolQueue(spool, spec.cls.encode_item)

        if len(consumers) == 1:
            spec, arg = consumers[0]
            spool_queue = durable(spec, arg)
            if spool_queue is None:
                continue              # keilog's shape: one queue, one consumer, unchanged
            spec.wired_args[arg] = spool_queue
            for producer, producer_arg in producers:
                producer.wired_args[producer_arg] = spool_queue
            lines.append("%s -> %s: handed over through its spool %s" % (
                ", ".join(p.label for p, _ in producers) or "nobody", spec.label,
                spool_queue.spool.directory))
            continue
        from keilib.fanout import DEFAULT_BUFFER, HOLD, FanOutQueue, Inbox   # only shared queues need it
        size = original.maxsize or DEFAULT_BUFFER
        inboxes = []
        for spec, arg in consumers:
            inbox = durable(spec, arg) or Inbox(
                "%s's '%s'" % (spec.label, arg), size, getattr(spec.cls, "BUFFER_POLICY", HOLD),
                on_drop=lambda n, health=spec.health: health.count("dropped", n))
            spec.wired_args[arg] = inbox
            inboxes.append(inbox)
        kind = queue_kind(consumers[0][0].cls, consumers[0][1])
        clock = consumers[0][0].args.get("clock")
        fan = FanOutQueue(inboxes, stamp_legacy=kind == "readings", **({"clock": clock} if clock else {}))
        for producer, producer_arg in producers:
            producer.wired_args[producer_arg] = fan
        lines.append("%s -> fan-out -> %s (each its own buffer of %d)" % (
            ", ".join(p.label for p, _ in producers) or "nobody",
            ", ".join("%s [%s]" % (s.label, getattr(s.cls, "BUFFER_POLICY", HOLD)) for s, _ in consumers),
            size))
    return lines


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
    """Construct every worker (constructors validate their arguments, no I/O)
    from its wired arguments."""
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

def setup_logging(workdir: str, debug: bool, stream: bool = False,
                  console: bool = False) -> logging.Handler:
    """The log: kei.log (or stdout); with ``console``, the few lines marked
    for a person go to the terminal (stderr) too."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if console and not (debug or stream):
        terminal = logging.StreamHandler(sys.stderr)
        terminal.addFilter(ConsoleFilter())
        terminal.setFormatter(logging.Formatter("kei: %(message)s"))
        root.addHandler(terminal)
    if debug or stream:
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
        root.setLevel(logging.DEBUG if debug else logging.INFO)
    else:
        handler = DailyLogFile(os.path.join(workdir, "kei.log"), keep=3)
        root.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    # -- issue 17.5: no URL query, user info or secret in any log line --
    install_redaction(handler)
    # -- end issue 17.5 --
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

    def __init__(self, spec: WorkerSpec, instance: Worker, wake: Waker, registry: Registry):
        self.spec = spec
        self.instance: Optional[Worker] = instance
        self.wake = wake
        self.registry = registry
        self.state = WorkerState.STARTING
        self.backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX)
        self.restart_at = 0.0
        self.started_at = 0.0

    def set_state(self, state: WorkerState) -> None:
        self.state = state
        self.spec.health.state("worker", state.value)

    def start(self, now: float) -> None:
        assert self.instance is not None
        self.instance.exit_event = self.wake
        self.instance.health = self.spec.health
        self.instance.registry = self.registry
        self.instance.start()
        self.started_at = now
        self.set_state(WorkerState.RUNNING)

    def check(self, now: float) -> None:
        """Notice a dead instance, and restart after the backoff delay."""
        if self.state == WorkerState.RUNNING and getattr(self.instance, "ending", False):
            # It signalled its end from its own thread, which is finishing now:
            # wait for that, or this pass would find it alive and sleep on.
            self.instance.join(1.0)
        if self.state == WorkerState.RUNNING and self.instance is not None and not self.instance.is_alive():
            ran = now - self.started_at
            if ran >= BACKOFF_RESET_AFTER:
                self.backoff.reset()
            failure = getattr(self.instance, "failure", None)
            delay = self.backoff.next()
            logger.error("%s ended unexpectedly after %.0f s%s; restarting in %g s",
                         self.spec.label, ran, " (%s: %s)" % (type(failure).__name__, failure) if failure else "",
                         delay)
            self.spec.health.count("restarts")
            if failure is not None:
                self.spec.health.state("last_error", ("%s: %s" % (type(failure).__name__, failure))[:200])
            self.set_state(WorkerState.BACKOFF)
            self.restart_at = now + delay
            self.instance = None
        if self.state == WorkerState.BACKOFF and now >= self.restart_at:
            self.set_state(WorkerState.STARTING)
            try:
                self.instance = self.spec.build()
            except Exception:  # noqa: BLE001 - a constructor must not kill the launcher
                delay = self.backoff.next()
                logger.exception("%s: building a new instance failed; retrying in %g s",
                                 self.spec.label, delay)
                self.restart_at = now + delay
                self.set_state(WorkerState.BACKOFF)
                return
            logger.info("%s: restarting", self.spec.label)
            self.start(now)

    def next_deadline(self) -> Optional[float]:
        return self.restart_at if self.state == WorkerState.BACKOFF else None


class Daemon:
    """Runs validated workers until a stop signal."""

    def __init__(self, specs: List[WorkerSpec], instances: List[Worker],
                 monotonic: Callable[[], float] = time.monotonic, wiring: Optional[List[str]] = None):
        self.monotonic = monotonic
        self.wake = Waker()
        self.wiring = wiring or []
        self.registry = Registry()
        for spec in specs:
            self.registry.add(spec.health)
            spec.health.on_state_change = self.wake.set    # the status file shows it at once
        by_index = {spec.index: inst for spec, inst in zip(specs, instances)}
        self.supervised = [Supervised(spec, by_index[spec.index], self.wake, self.registry)
                           for spec in start_order(specs)]
        self.stop_signal: Optional[int] = None
        self.usr1_count = 0
        self.systemd: Optional[sdnotify.Watchdog] = None     # systemd hook, set by run()
        self.status_file: Optional[status.StatusFile] = None  # kei status hook, set by run()

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
        for line in self.wiring:
            logger.info("wiring: %s", line)
        now = self.monotonic()
        for sup in self.supervised:
            sup.start(now)
        logger.info("kei %s started with %d worker(s): %s", __version__, len(self.supervised),
                    ", ".join(sup.spec.cls.__name__ for sup in self.supervised))
        from keilib import status                # only a running daemon needs it
        self.status_file = status.StatusFile(os.path.join(os.getcwd(), status.STATUS_FILE))  # kei status hook
        if os.environ.get("NOTIFY_SOCKET"):      # started by systemd with Type=notify
            from keilib import sdnotify
            self.systemd = sdnotify.Watchdog.from_environ()     # systemd hook (keilib/sdnotify.py)
            self.systemd.ready(self.supervised)                  # systemd hook
        handled_usr1 = 0
        while self.stop_signal is None:
            # Sleep until a restart is due, a file or a ping is due, or a signal
            # or a worker's end (Worker signals it from its thread) wakes us.
            timeout = self.status_file.tick(self.supervised)   # kei status hook
            if self.systemd is not None:
                timeout = min(timeout, self.systemd.tick(self.supervised))  # systemd hook: ping
            deadlines = [d for d in (s.next_deadline() for s in self.supervised) if d is not None]
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
        if self.systemd is not None:                         # systemd hook
            self.systemd.stopping()
        deadline = self.monotonic() + STOP_BUDGET
        # Producers first, then each consumer drains what was queued for it.
        for sup in reversed(self.supervised):
            sup.set_state(WorkerState.STOPPING)
            if sup.instance is None:
                sup.set_state(WorkerState.STOPPED)
                continue
            left = max(0.1, deadline - self.monotonic())
            if not sup.instance.stop(timeout=left):
                logger.error("%s did not stop within the %g s budget", sup.spec.label, STOP_BUDGET)
            sup.set_state(WorkerState.STOPPED)
        if self.status_file is not None:                    # kei status hook
            self.status_file.remove()
        logger.info("kei stopped")
        return EXIT_OK


# -- entry point --------------------------------------------------------------

def parse_args(argv: Optional[List[str]]) -> Any:
    if not (sys.argv[1:] if argv is None else argv):
        # A plain start (the service): argparse is not needed to read no arguments.
        return argparse_defaults()
    import argparse
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


def argparse_defaults() -> Any:
    """What parse_args gives for no arguments."""
    return types.SimpleNamespace(config=None, check=False, demo=False)


def prepare(module: Any, source: str) -> tuple:
    """Validate, wire and build; raise ConfigError.  Returns (specs,
    instances, wiring description lines)."""
    specs = validate(module, source)
    wiring = wire(specs)
    instances = build_all(specs, source)
    return specs, instances, wiring


def config_warnings(specs: List[WorkerSpec]) -> List[str]:
    """What will surely not work as meant in a valid config (a missing port,
    an example's placeholder), one line per finding."""
    return ["%s: %s" % (spec.label, text) for spec in specs for text in spec.cls.config_warnings(spec.args)]


PYSERIAL_HELP = """\
kei: the Python package pyserial is missing%s.  Install it with
    sudo apt install python3-serial        (Debian, Raspberry Pi OS, Ubuntu)
or  python3 -m pip install pyserial        (in a virtual environment)
(The package called 'serial' on PyPI is a different one; pyserial is the right one.)
"""


def pyserial_problem() -> Optional[str]:
    """PYSERIAL_HELP filled in, if pyserial cannot be used; else None."""
    try:
        import serial
    except ImportError as exc:
        return PYSERIAL_HELP % (" (%s)" % exc)
    if not hasattr(serial, "serial_for_url"):
        return PYSERIAL_HELP % (" ('import serial' found another package, at %s)"
                                % getattr(serial, "__file__", "?"))
    return None


class ConsoleFilter(logging.Filter):
    """Lets through what a worker marked for a person at the terminal
    (``logger.warning(..., extra={"console": True})``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(getattr(record, "console", False))


# Subcommands (``kei <name> ...``): "module:function", imported only when
# asked for; the function takes the remaining arguments and returns the exit
# status.  ``kei`` alone (or with options) runs the daemon.
SUBCOMMANDS: Dict[str, str] = {
    "read": "keilib.read:main",          # one-shot meter read (issue 14)
    "probe": "keilib.probe:main",        # transcript for bug reports (issue 14)
    "status": "keilib.status:main",      # the running daemon's health (issue 14)
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
    problem = pyserial_problem()
    if problem:
        sys.stderr.write(problem)
        return EXIT_CONFIG
    workdir = os.getcwd()
    config_path = args.config or os.path.join(workdir, "keiconf.py")
    try:
        if args.demo:
            from keilib import demo
            specs, instances, wiring = prepare(demo.config(workdir, check=args.check), "demo")
        else:
            specs, instances, wiring = prepare(load_config(config_path), os.path.basename(config_path))
    except FileNotFoundError:
        sys.stderr.write(NO_CONFIG_HELP.format(path=config_path))
        return EXIT_CONFIG
    except ConfigError as exc:
        sys.stderr.write("kei: bad configuration: %s\n" % exc)
        return EXIT_CONFIG
    warnings = config_warnings(specs)
    if args.check:
        print("kei: %s is valid: %d worker(s): %s" % (
            "the demo configuration" if args.demo else config_path,
            len(specs), ", ".join(s.cls.__name__ for s in specs)))
        for line in wiring:
            print("kei: wiring: %s" % line)
        for line in warnings:
            print("kei: warning: %s" % line)
        return EXIT_OK
    # -- issue 17.7: one kei per work directory (not for --check or --demo) --
    lock = None if args.demo else WorkdirLock(workdir)
    try:
        if lock is not None:
            lock.acquire()
    except LockHeld as exc:
        sys.stderr.write("kei: %s\n" % exc)
        return EXIT_CONFIG
    # -- end issue 17.7 --
    interactive = sys.stderr.isatty()
    # The demo logs to the terminal, so a newcomer sees what happens.
    debug = "DEBUG" in os.environ
    setup_logging(workdir, debug=debug, stream=args.demo, console=interactive)
    for line in warnings:
        logger.warning("config: %s", line, extra={"console": True})
    if interactive and not (debug or args.demo):
        sys.stderr.write("kei: running %d worker(s); the log is %s (DEBUG=1 shows it here); "
                         "stop with Ctrl-C\n" % (len(specs), os.path.join(workdir, "kei.log")))
    if args.demo:
        logger.warning("DEMO: this is a SIMULATION; no smart meter or sensor is read "
                       "(simulated time runs faster than real time)")
    daemon = Daemon(specs, instances, wiring=wiring)
    daemon.install_signals()
    previous_hook = threading.excepthook
    threading.excepthook = log_thread_death
    try:
        return daemon.run()
    finally:
        threading.excepthook = previous_hook
        if lock is not None:                        # issue 17.7
            lock.release()


def log_thread_death(hook: Any) -> None:
    """``threading.excepthook``: a keilog-style worker that overrides ``run()``
    bypasses Worker.run's handler; its traceback goes to kei.log, not stderr,
    and becomes the worker's failure.  (Its run wrapper has already woken the
    launcher, which joins the thread, so it sees the failure.)"""
    if hook.exc_type is SystemExit:
        return
    thread = hook.thread
    logger.error("%s died: %s: %s", type(thread).__name__ if thread is not None else "a thread",
                 hook.exc_type.__name__, hook.exc_value,
                 exc_info=(hook.exc_type, hook.exc_value, hook.exc_traceback))
    if isinstance(thread, Worker):
        if thread.failure is None and isinstance(hook.exc_value, BaseException):
            thread.failure = hook.exc_value


if __name__ == "__main__":
    sys.exit(main())
