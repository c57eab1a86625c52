"""Opening serial ports: every driver goes through ``open_port``.

A port is a pyserial URL: ``/dev/ttyUSB0``, ``/dev/serial/by-id/...``,
``socket://host:port`` (ser2net), ``rfc2217://...``, ``spy://...`` (tracing),
and the built-in simulator's ``sim://...``.

pyserial finds a URL handler by module name, ``<package>.protocol_<scheme>``,
for each package listed in ``serial.protocol_handler_packages``.  Listing
``keilib.sim`` there (a string; nothing is imported) is how kei registers
``sim://``: pyserial imports the simulator only when such a URL is opened, so
no production module imports it.

One port, one user: a Wi-SUN driver opens a local device (a path, not a
URL) with pyserial's ``exclusive=True``, an advisory ``flock`` on the
device, which every path to it shares (``/dev/ttyUSB0`` and its
``/dev/serial/by-id/...`` link).  ``port_in_use(path)`` asks for that lock
without keeping it: ``kei read`` and ``kei probe`` refuse to talk to a module
the daemon is polling.
"""

from __future__ import annotations

import fcntl
import os

import serial

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Optional

SIM_HANDLER_PACKAGE = "keilib.sim"
# Baud rates a config may ask for: what a UART or USB serial adapter can be set to.
MIN_BAUD, MAX_BAUD = 50, 4_000_000
PORT_PATTERN = r"(?s)(?=.*\S)[^\x00]+"     # a path or URL: not blank, no NUL byte


def register_sim_urls() -> None:
    """Let ``serial.serial_for_url('sim://...')`` work; safe to call repeatedly."""
    if SIM_HANDLER_PACKAGE not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(SIM_HANDLER_PACKAGE)


def open_port(url: str, **settings: Any) -> Any:
    """``serial.serial_for_url(url, **settings)``, with ``sim://`` known."""
    register_sim_urls()
    return serial.serial_for_url(url, **settings)


def cancel_read(port: Any) -> None:
    """End a read blocked on ``port`` now, where pyserial can (``cancel_read``:
    local devices, ptys, ``sim://``); elsewhere a read ends at its timeout."""
    if port is not None and hasattr(port, "cancel_read"):
        try:
            port.cancel_read()
        except (serial.SerialException, OSError, ValueError):
            pass            # closed meanwhile: the read has ended anyway


def is_local_device(port: str) -> bool:
    """A path to a device node (not a ``scheme://`` URL)."""
    return "://" not in port


def port_in_use(port: str) -> bool:
    """True if another open file holds the exclusive lock on local device
    ``port`` (kei's daemon does while it uses the port).  False for URLs and
    for ports that cannot be opened (opening them will say why)."""
    if not is_local_device(port):
        return False
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)          # also releases the lock taken here
    return False


def port_problem(url: Any) -> Optional[str]:
    """Why ``url`` will surely not open now (for ``--check``), or None.

    Only device paths are looked at: a URL's host may well be up later, and a
    USB device may be plugged in after the check.
    """
    if not isinstance(url, str) or "://" in url:
        return None
    if "xxxx" in url.lower():
        return "port %s still holds the example's placeholder (ls -l /dev/serial/by-id/ shows the real name)" % url
    if not os.path.exists(url):
        return "port %s does not exist (yet?): is the device plugged in? (ls -l /dev/serial/by-id/)" % url
    return None
