"""pyserial URL handler for ``sim://<device>?<options>``: simulated devices in process.

After ``keilib.sim.register_url_handler()``::

    port = serial.serial_for_url('sim://wisun?kind=ips&id=...&password=...&scale=60&name=x',
                                 timeout=1)

URL grammar::

    sim://<device>[?<option>=<value>[&<option>=<value>...]]
    <device>   a key of DEVICE_MODULES ('wisun', 'sensor', 'replay')
    name=<n>   keep the device in a registry under <n>: closing and reopening the
               URL reaches the same device (and meter), and tests reach it with
               get_device(n), unplug(n), replug(n); register(n, device) puts a
               ready-made device there first
    others     the device module's options (keilib.sim.wisun.URL_GRAMMAR);
               unknown options are refused with the grammar in the message

Without ``name=`` every open builds a fresh device, closed with the port.

A device module listed in ``DEVICE_MODULES`` provides ``from_options(dict of
str) -> device`` (raising ValueError with its grammar on a bad option) and a
``URL_GRAMMAR`` string; devices follow keilib.sim.transport's interface.

Unplugging a named device makes every read and write on ports opened before
raise ``serial.SerialException`` (also after the replug, as a pulled USB
port stays dead) and makes opening the URL fail until ``replug(name)``,
which also power-cycles the device.  A named device that can pull its own
plug (it has ``needs_transport``: the Wi-SUN module's unplug/replug faults)
is bound to the registry (``device.bind_transport(plug)``, the plug calling
unplug(name) / replug(name)); an unnamed one whose options schedule an unplug
(``needs_transport`` true: ``unplug_after=``) is refused.

``read()`` waits on a Condition up to the port timeout; nothing spins.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

# device name in the URL host part -> module providing from_options() and URL_GRAMMAR
DEVICE_MODULES: Dict[str, str] = {
    "wisun": "keilib.sim.wisun",
    "sensor": "keilib.sim.sensor",
    "replay": "keilib.sim.replay",      # plays back a `kei probe` transcript
}

GRAMMAR = ("sim://<device>?<option>=<value>&...; device one of %s; name=<registry name> "
           "keeps the device between opens")


@dataclass
class _Entry:
    """A named device in the registry."""
    device: Any
    plugged: bool = True
    generation: int = 0        # bumped by unplug(): ports from before stay dead


# The registry lives at module level because pyserial builds handler
# instances itself, from nothing but the URL.
_registry: Dict[str, _Entry] = {}
_registry_lock = threading.Lock()


class RegistryPlug:
    """What a named device's own unplug/replug faults pull: the registry entry."""

    def __init__(self, name: str):
        self.name = name

    def unplug(self) -> None:
        unplug(self.name)

    def replug(self) -> None:
        replug(self.name)


def _bind(name: str, device: Any) -> None:
    if hasattr(device, "needs_transport"):
        device.bind_transport(RegistryPlug(name))


def register(name: str, device: Any) -> None:
    """Put a ready-made device under ``name`` (tests: a FakeClock, a pinned meter)."""
    with _registry_lock:
        if name in _registry:
            raise ValueError("a simulated device named %r exists already" % name)
        _registry[name] = _Entry(device)
    _bind(name, device)


def get_device(name: str) -> Any:
    """The device registered as ``name`` (to inject faults in tests)."""
    with _registry_lock:
        return _registry[name].device


def unplug(name: str) -> None:
    """The named device disappears: open ports fail, opening the URL fails."""
    with _registry_lock:
        entry = _registry[name]
        entry.plugged = False
        entry.generation += 1
        device = entry.device
    device.attach(None)
    # Wake readers blocked on ports of this device: they must see the loss now.
    for port in list(_open_ports):
        port._wake()


def replug(name: str) -> None:
    """The named device comes back, freshly powered up; reopen the URL to use it."""
    with _registry_lock:
        entry = _registry[name]
        if entry.plugged:
            return
        entry.plugged = True
        device = entry.device
    device.reset()


def forget(name: str) -> None:
    """Remove ``name`` from the registry and close its device."""
    with _registry_lock:
        entry = _registry.pop(name, None)
    if entry is not None:
        entry.device.close()


def forget_all() -> None:
    """Close and remove every registered device (test teardown)."""
    with _registry_lock:
        names = list(_registry)
    for name in names:
        forget(name)


def parse_url(url: str) -> Tuple[str, Optional[str], Dict[str, str]]:
    """``sim://dev?a=1&name=x`` -> ('dev', 'x', {'a': '1'}); ValueError with the grammar."""
    parts = urlsplit(url)
    if parts.scheme != "sim":
        raise ValueError("expected a sim:// URL, got %r; %s" % (url, GRAMMAR % ", ".join(DEVICE_MODULES)))
    device = parts.netloc or parts.path.lstrip("/")
    if device not in DEVICE_MODULES:
        raise ValueError("unknown simulated device %r; %s" % (device, GRAMMAR % ", ".join(DEVICE_MODULES)))
    options: Dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in options:
            raise ValueError("option %r given twice in %r" % (key, url))
        options[key] = value
    name = options.pop("name", None)
    return device, name, options


_open_ports: "set[Serial]" = set()   # to wake blocked readers on unplug


def _build(device: str, options: Dict[str, str]) -> Any:
    module = importlib.import_module(DEVICE_MODULES[device])
    return module.from_options(options)


class Serial(SerialBase):
    """A pyserial port whose other end is a simulated device (see module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._cond = threading.Condition()
        self._rx = bytearray()
        self._device: Any = None
        self._name: Optional[str] = None
        self._generation = 0
        super().__init__(*args, **kwargs)

    # -- open / close ----------------------------------------------------
    def open(self) -> None:
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        try:
            device_kind, name, options = parse_url(self.portstr)
        except ValueError as exc:
            raise SerialException(str(exc)) from None
        with _registry_lock:
            entry = _registry.get(name) if name else None
            if entry is not None:
                # A registered device is reused as it is; options count at creation only.
                if not entry.plugged:
                    raise SerialException("could not open port %s: device %r is unplugged"
                                          % (self.portstr, name))
                device, generation = entry.device, entry.generation
            else:
                try:
                    device = _build(device_kind, options)
                except ValueError as exc:
                    raise SerialException("could not open port %s: %s" % (self.portstr, exc)) from None
                generation = 0
                if name:
                    _registry[name] = _Entry(device)
                    _bind(name, device)
                elif getattr(device, "needs_transport", False):
                    device.close()
                    raise SerialException("could not open port %s: unplugging needs a named "
                                          "device (add name=<n>)" % self.portstr)
        self._device, self._name, self._generation = device, name, generation
        with self._cond:
            self._rx.clear()
        self.is_open = True
        _open_ports.add(self)
        device.attach(self._from_device)

    def close(self) -> None:
        if not self.is_open:
            return
        self.is_open = False
        _open_ports.discard(self)
        device, self._device = self._device, None
        if device is not None and self._alive():
            device.attach(None)
        if device is not None and self._name is None:
            device.close()            # unnamed devices live as long as their port
        self._wake()

    def _reconfigure_port(self) -> None:
        """Baud rate and framing mean nothing here."""

    # -- data ------------------------------------------------------------
    def _alive(self) -> bool:
        if self._name is None:
            return True
        with _registry_lock:
            entry = _registry.get(self._name)
            return entry is not None and entry.plugged and entry.generation == self._generation

    def _check(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()
        if not self._alive():
            raise SerialException("device reports readiness to read but returned no data "
                                  "(device disconnected: %s unplugged)" % self._name)

    def _from_device(self, data: bytes) -> None:
        with self._cond:
            self._rx += data
            self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def in_waiting(self) -> int:
        self._check()
        with self._cond:
            return len(self._rx)

    def read(self, size: int = 1) -> bytes:
        self._check()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        with self._cond:
            while len(self._rx) < size:
                if not self.is_open or not self._alive():
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            data = bytes(self._rx[:size])
            del self._rx[:size]
        if not data:
            self._check()             # unplugged while waiting: raise, as a dead port does
        return data

    def write(self, data: bytes) -> int:
        self._check()
        data = bytes(data)
        # Called without our lock: the device answers through _from_device().
        self._device.receive(data)
        return len(data)

    def reset_input_buffer(self) -> None:
        self._check()
        with self._cond:
            self._rx.clear()

    def reset_output_buffer(self) -> None:
        self._check()

    def cancel_read(self) -> None:
        self._wake()

    @property
    def out_waiting(self) -> int:
        return 0

    # Modem lines: nothing is wired.
    def _update_break_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True

