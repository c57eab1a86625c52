"""Opening serial ports: every driver goes through ``open_port``.

A port is a pyserial URL: ``/dev/ttyUSB0``, ``/dev/serial/by-id/...``,
``socket://host:port`` (ser2net), ``rfc2217://...``, ``spy://...`` (tracing),
and the built-in simulator's ``sim://...``.

pyserial finds a URL handler by module name, ``<package>.protocol_<scheme>``,
for each package listed in ``serial.protocol_handler_packages``.  Listing
``keilib.sim`` there (a string; nothing is imported) is how kei registers
``sim://``: pyserial imports the simulator only when such a URL is opened, so
no production module imports it.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import serial

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
