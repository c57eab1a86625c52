"""systemd's notify protocol (sd_notify), in plain socket code, and kei's watchdog rule.

Under a unit with ``Type=notify`` systemd sets ``NOTIFY_SOCKET`` to a Unix
datagram socket: a path (``/run/systemd/notify``) or, with a leading ``@``, a
name in the abstract namespace.  Each message is one datagram of
``KEY=VALUE`` lines.  With ``WatchdogSec=`` it also sets ``WATCHDOG_USEC``
(and ``WATCHDOG_PID``, the process meant to ping): a service that sends no
``WATCHDOG=1`` for that long is killed and, with ``Restart=``, started again.

What kei sends (``Watchdog``, driven by the launcher's main loop):

* ``READY=1`` once, when every worker thread has been started;
* ``WATCHDOG=1`` every half ``WATCHDOG_USEC``, but only while the main loop
  runs (the pings come from it) and no worker is wedged;
* ``STATUS=<one line>`` when the summary changes, e.g.
  ``3/3 workers running; link POLL``;
* ``STOPPING=1`` when a stop begins.

The wedge rule: a worker is wedged when its current ``setup()`` or
``step()`` began more than ``STEP_LIMIT`` seconds ago (``Worker.step_since``,
real monotonic time).  The default, 300 s, is five times the longest wait a
healthy step makes: a backoff of up to 60 s, and a B-route active scan of
duration 8 (about 70 s); a worker class whose steps may legitimately take
longer sets its own ``STEP_LIMIT``.  A worker that died is not wedged: the
launcher restarts it.  A keilog-style worker that overrides ``run()`` has no
steps to time and counts as alive while its thread is.  When a worker is
wedged the pings stop (one ERROR line names it), and systemd restarts kei
``WatchdogSec`` later; if the step returns before that, the pings resume.

No dependency, and no effect at all without ``NOTIFY_SOCKET``.  A send that
fails is logged once and never raised: the watchdog must not kill kei.
"""

from __future__ import annotations

import logging
import os
import socket
import time

# The wedge rule lives with Worker: ``kei status`` applies it without systemd.
from keilib.worker import wedged_workers

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Callable, Iterable, List, Mapping, Optional, Tuple

logger = logging.getLogger(__name__)

IDLE = float("inf")             # tick(): nothing to do until something changes


def socket_address(name: str) -> str:
    """``NOTIFY_SOCKET`` as a sendto() address: ``@x`` is the abstract name ``\\0x``."""
    return "\0" + name[1:] if name.startswith("@") else name


class Notifier:
    """Sends datagrams to systemd's notify socket; ``Notifier.from_environ()``
    is None when kei was not started by systemd (no ``NOTIFY_SOCKET``)."""

    def __init__(self, address: str) -> None:
        self.address = socket_address(address)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)   # systemd reads at once; never stall the main loop
        self.failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Optional["Notifier"]:
        name = environ.get("NOTIFY_SOCKET", "")
        if not name or name[0] not in "/@":
            return None
        return cls(name)

    def send(self, **fields: Any) -> bool:
        """Send ``KEY=VALUE`` lines (``send(READY=1, STATUS="...")``); True if sent."""
        message = "\n".join("%s=%s" % (key, str(value).replace("\n", " "))
                            for key, value in fields.items())
        try:
            self.sock.sendto(message.encode("utf-8", "replace"), self.address)
        except OSError as exc:
            if not self.failed:
                logger.warning("systemd notify socket: cannot send (%s); will keep trying", exc)
            self.failed = True
            return False
        if self.failed:
            logger.info("systemd notify socket: sending again")
        self.failed = False
        return True

    def close(self) -> None:
        self.sock.close()


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> Optional[float]:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or None when no
    watchdog is asked for this process."""
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


def _state_name(state: Any) -> str:
    return str(getattr(state, "value", state))


def summary(supervised: Iterable[Any], wedged: List[Tuple[str, float]]) -> str:
    """One line for ``STATUS=``: workers running, link states, what is wrong."""
    supervised = list(supervised)
    running = sum(1 for sup in supervised if _state_name(sup.state) == "RUNNING")
    parts = ["%d/%d workers running" % (running, len(supervised))]
    links = []
    for sup in supervised:
        health = getattr(sup.instance, "health", None)
        link = getattr(health, "states", {}).get("link") if health is not None else None
        if link:
            links.append(link)
    if links:
        parts.append("link " + ",".join(links))
    restarting = [sup.spec.cls.__name__ for sup in supervised if _state_name(sup.state) == "BACKOFF"]
    if restarting:
        parts.append("restarting: " + ", ".join(restarting))
    if wedged:
        parts.append("WEDGED: " + ", ".join("%s (%.0f s in one step)" % item for item in wedged))
    return "; ".join(parts)


class Watchdog:
    """kei's side of ``Type=notify`` (see the module docstring).

    The launcher calls ``ready()`` once its workers are started, ``tick()``
    on every pass of its main loop (it returns how many seconds may pass
    before the next call is due), and ``stopping()`` when a stop begins.
    Without a notifier every call does nothing.
    """

    def __init__(self, notifier: Optional[Notifier], interval: Optional[float],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.interval = interval if notifier is not None else None
        self.monotonic = monotonic
        self.next_ping = 0.0
        self.last_status = ""
        self.reported_wedged: List[str] = []

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "Watchdog":
        return cls(Notifier.from_environ(environ), watchdog_interval(environ))

    def ready(self, supervised: Iterable[Any]) -> None:
        if self.notifier is None:
            return
        self.last_status = summary(supervised, [])
        self.notifier.send(READY=1, STATUS=self.last_status)
        logger.info("systemd: ready%s", " (watchdog ping every %g s)" % self.interval
                    if self.interval else "")

    def tick(self, supervised: Iterable[Any]) -> float:
        if self.notifier is None:
            return IDLE
        supervised = list(supervised)
        now = self.monotonic()
        wedged = wedged_workers(supervised, now)
        names = [label for label, _ in wedged]
        if names != self.reported_wedged:
            for label, seconds in wedged:
                if label not in self.reported_wedged:
                    logger.error("%s is wedged: one step has run for %.0f s; systemd watchdog "
                                 "pings stop, so systemd restarts kei", label, seconds)
            if not names:
                logger.warning("no worker is wedged any more: systemd watchdog pings resume")
            self.reported_wedged = names
        status = summary(supervised, wedged)
        fields = {}
        if status != self.last_status:
            fields["STATUS"] = status
            self.last_status = status
        if self.interval and not wedged and now >= self.next_ping:
            fields["WATCHDOG"] = 1
            self.next_ping = now + self.interval
        if fields:
            self.notifier.send(**fields)
        if not self.interval:
            return IDLE
        # A wedged worker is looked at again within an interval, so the pings
        # resume promptly when its step returns.
        return max(0.0, self.next_ping - now) if not wedged else self.interval

    def stopping(self) -> None:
        if self.notifier is not None:
            self.notifier.send(STOPPING=1, STATUS="stopping")
