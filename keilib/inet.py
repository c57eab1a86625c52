"""IPv4 and IPv6 addresses for the ECHONET Lite UDP code (reader and simulator).

Addresses are kept as canonical text, the form the configuration uses and
the logs show: "192.168.1.20", "fd00::20", "fe80::1%eth0" (a link-local
IPv6 address names its interface: without it the kernel cannot tell which
link is meant).  These helpers turn that text into the socket address tuples
``sendto``/``bind`` take and back, so a device's address compares equal
however the kernel reports it.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from keilib.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Tuple, Union

if TYPE_CHECKING:
    IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}\Z")     # what Linux allows, less '/' and spaces


def _needs_zone(ip: ipaddress.IPv6Address) -> bool:
    return ip.is_link_local or (ip.is_multicast and (int(ip) >> 112) & 0xF == 2)


def parse(name: str, value: Any) -> IPAddress:
    """An IPv4 or IPv6 address from configuration; ConfigError naming ``name``.

    A link-local IPv6 address must name its interface ("fe80::1%eth0")."""
    example = "such as '192.168.1.20', 'fd00::20' or 'fe80::20%eth0'"
    if not isinstance(value, str):
        raise ConfigError("argument '%s' must be an IPv4 or IPv6 address %s, got %r" % (name, example, value))
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError("argument '%s' must be an IPv4 or IPv6 address %s, got %r"
                          % (name, example, value)) from None
    if ip.version == 6:
        zone = ip.scope_id
        # By name only: the kernel reports a sender's interface by index, and
        # from_sockaddr turns that into the name, so the two compare equal.
        if zone is not None and (not INTERFACE_NAME.match(zone) or zone.isdigit()):
            raise ConfigError("argument '%s': %r: '%s' is not an interface name such as 'eth0'"
                              % (name, value, zone))
        if zone is None and _needs_zone(ip):
            raise ConfigError("argument '%s': the link-local address %r needs its interface, e.g. '%s%%eth0'"
                              % (name, value, value))
    return ip


def interface_index(zone: str) -> int:
    """The index of the interface named ``zone``; OSError if there is none."""
    return socket.if_nametoindex(zone)


def family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def sockaddr(address: str, port: int) -> tuple:
    """``(host, port)`` or ``(host, port, 0, interface index)``; OSError if the interface is gone."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return (str(ip), port)
    zone = ip.scope_id
    host = str(ip).split("%")[0]
    return (host, port, 0, interface_index(zone) if zone else 0)


def from_sockaddr(address: Tuple[Any, ...]) -> str:
    """The canonical text of the host of a ``recvfrom`` address."""
    if len(address) == 2:
        return address[0]
    host = address[0].split("%")[0]
    ip = ipaddress.IPv6Address(host)
    if address[3] and _needs_zone(ip):
        try:
            zone = socket.if_indextoname(address[3])
        except OSError:
            zone = str(address[3])
        return "%s%%%s" % (ip, zone)
    return str(ip)
