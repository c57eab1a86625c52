"""Simulated devices and the transports that carry their bytes.

The device interface
--------------------
Every simulated device (the Wi-SUN module in ``keilib.sim.wisun``, a serial
sensor in ``keilib.sim.sensor``) is a byte-in/byte-out object with four
methods and no knowledge of how it is connected::

    device.attach(write)    # write: Callable[[bytes], None], or None to detach.
                            # The device calls write() with its output, one
                            # whole line (or one whole binary record) per call,
                            # from any of its threads.  While detached, output
                            # is dropped, as on a UART nobody listens to.
    device.receive(data)    # bytes the host wrote; any split, any size.
                            # Called from the transport's thread.  Must not
                            # block for long: delayed output goes through the
                            # device's Scheduler.
    device.reset()          # power-on reset: volatile state is lost, as when a
                            # USB stick is pulled and plugged back in.
    device.close()          # stop the device's threads; idempotent.

A device that needs delayed or periodic output owns a ``Scheduler`` (below):
one thread that runs callbacks at times measured on the device's clock
(``keilib.clock.Clock``), so a ``ScaledClock`` speeds the device up and a
``FakeClock`` lets a test step through hours at once.

Transports
----------
* ``PtyTransport(device, link_path=None)`` (this module): a real
  pseudo-terminal.  The host opens ``transport.slave_path`` (or the symlink
  ``link_path``, which stands in for /dev/serial/by-id/...) with pyserial and
  goes through the kernel's tty layer.  ``unplug()`` / ``replug()`` simulate
  pulling the USB stick.
* ``sim://<device>?<options>`` (``keilib.sim.protocol_sim``): a pyserial URL
  handler, in process, with a registry of named devices.
* ``python3 -m keilib.sim <device> ...`` (``keilib.sim.__main__``): a pty in a
  separate process, for manual runs and for the launcher's end-to-end tests.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import select
import threading
import tty
from typing import Any, Callable, List, Optional, Tuple

from keilib.clock import SYSTEM_CLOCK, Clock

logger = logging.getLogger(__name__)

Sink = Callable[[bytes], None]


class Scheduler:
    """Run callbacks after delays measured on ``clock``, in one thread.

    ``call_later(delay, fn, *args, tag=...)`` queues ``fn(*args)``; callbacks
    with equal due times run in the order they were queued.  A callback that
    queues the next step of a timeline counts its delay from its own due time,
    not from "now", so a timeline keeps its shape however late the thread
    runs (and a test that advances a FakeClock by 5 s sees every step due by
    then).  ``cancel(tag)``
    drops every pending callback with that tag (e.g. a scan in progress when
    the module is reset).  The thread sleeps on the clock until the earliest
    due time or until a new item is queued; it never polls.
    """

    def __init__(self, clock: Optional[Clock] = None, name: str = "sim-scheduler"):
        self.clock = clock or SYSTEM_CLOCK
        self._lock = threading.Lock()
        self._heap: List[Tuple[float, int, str, Callable[..., Any], tuple]] = []
        self._counter = itertools.count()
        self._wake = threading.Event()
        self._closed = False
        self._running_due: Optional[float] = None   # due time of the callback running now
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any, tag: str = "") -> None:
        base = self._running_due
        if base is None or threading.current_thread() is not self._thread:
            base = self.clock.monotonic()
        due = base + max(0.0, delay)
        with self._lock:
            if self._closed:
                return
            heapq.heappush(self._heap, (due, next(self._counter), tag, fn, args))
        self._wake.set()

    def cancel(self, tag: str) -> None:
        with self._lock:
            self._heap = [item for item in self._heap if item[2] != tag]
            heapq.heapify(self._heap)

    def cancel_all(self, keep: Tuple[str, ...] = ()) -> None:
        with self._lock:
            self._heap = [item for item in self._heap if item[2] in keep]
            heapq.heapify(self._heap)

    def pending(self, tag: str) -> int:
        with self._lock:
            return sum(1 for item in self._heap if item[2] == tag)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._heap = []
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _run(self) -> None:
        while True:
            # Clear before looking, so a call_later() racing with us re-wakes the wait.
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return
                now = self.clock.monotonic()
                due_item = None
                if self._heap and self._heap[0][0] <= now:
                    due_item = heapq.heappop(self._heap)
                    timeout = 0.0
                else:
                    timeout = self._heap[0][0] - now if self._heap else None
            if due_item is None:
                self.clock.wait(self._wake, timeout)
                continue
            fn, args = due_item[3], due_item[4]
            self._running_due = due_item[0]
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - one bad callback must not stop the device
                logger.exception("simulator callback %r failed", getattr(fn, "__name__", fn))
            finally:
                self._running_due = None


class PtyTransport:
    """Connect ``device`` to a pseudo-terminal; the host opens ``slave_path``.

    One thread moves bytes: master -> ``device.receive()`` and the device's
    output -> master.  It blocks in ``select()`` on the master and a wake pipe,
    so it costs nothing while the line is quiet.

    ``link_path``: a symlink created there points at the current slave, like
    /dev/serial/by-id/...; ``replug()`` re-points it at the new pty.
    ``own_device``: ``close()`` also closes the device (default).
    """

    # Output the host has not read yet; beyond this the oldest is dropped, as a
    # UART without flow control drops what nobody reads.
    MAX_PENDING = 256 * 1024

    def __init__(self, device: Any, link_path: Optional[str] = None, own_device: bool = True):
        self.device = device
        self.link_path = link_path
        self.own_device = own_device
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._master: Optional[int] = None
        self._slave: Optional[int] = None
        self.slave_path: Optional[str] = None
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._open_pty()
        self.device.attach(self._device_output)
        self._thread = threading.Thread(target=self._run, name="sim-pty", daemon=True)
        self._thread.start()

    # -- public ---------------------------------------------------------
    @property
    def plugged(self) -> bool:
        return self._master is not None

    def unplug(self) -> None:
        """Pull the stick: the pty disappears (host reads/writes fail), the link goes."""
        self.device.attach(None)
        with self._lock:
            self._close_pty()
            self._pending.clear()
        self._remove_link()
        self._kick()

    def replug(self) -> None:
        """Plug it back: a new pty (new slave path), the link re-pointed, the device powered up."""
        with self._lock:
            if self._master is not None:
                return
        self._open_pty()
        self.device.reset()
        self.device.attach(self._device_output)
        self._kick()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.device.attach(None)
        self._kick()
        self._thread.join(5.0)
        with self._lock:
            self._close_pty()
        self._remove_link()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self.own_device:
            self.device.close()

    def __enter__(self) -> "PtyTransport":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ------------------------------------------------------
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        path = os.ttyname(slave)
        with self._lock:
            # The slave fd stays open here: without it the master reads EIO
            # whenever the host has the port closed (between reopen attempts).
            self._master, self._slave, self.slave_path = master, slave, path
        if self.link_path:
            tmp = "%s.tmp%d" % (self.link_path, os.getpid())
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass
            os.symlink(path, tmp)
            os.replace(tmp, self.link_path)  # atomic re-point

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def _remove_link(self) -> None:
        if self.link_path and os.path.islink(self.link_path):
            try:
                os.remove(self.link_path)
            except FileNotFoundError:
                pass

    def _kick(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already awake, or closing

    def _device_output(self, data: bytes) -> None:
        with self._lock:
            if self._master is None:
                return
            self._pending += data
            overflow = len(self._pending) - self.MAX_PENDING
            if overflow > 0:
                del self._pending[:overflow]
                logger.warning("pty %s: host is not reading, dropped %d bytes",
                               self.slave_path, overflow)
        self._kick()

    def _run(self) -> None:
        while not self._closed:
            with self._lock:
                master = self._master
                want_write = bool(self._pending) and master is not None
            readers = [self._wake_r] + ([master] if master is not None else [])
            writers = [master] if want_write else []
            try:
                readable, writable, _ = select.select(readers, writers, [])
            except (OSError, ValueError):
                continue  # fd closed under us by unplug(); look again
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 4096)
                except (BlockingIOError, OSError):
                    pass
            if master is None:
                continue
            if master in writable:
                self._flush(master)
            if master in readable:
                try:
                    data = os.read(master, 4096)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = None  # EIO while nobody holds the slave, or unplugged
                if data:
                    try:
                        self.device.receive(data)
                    except Exception:  # noqa: BLE001 - a device bug must not kill the line
                        # (length only: the input may hold a Route-B password)
                        logger.exception("simulated device failed on %d bytes of input", len(data))

    def _flush(self, master: int) -> None:
        with self._lock:
            if master != self._master or not self._pending:
                return
            try:
                written = os.write(master, bytes(self._pending))
            except BlockingIOError:
                return
            except OSError:
                return
            del self._pending[:written]
