"""ECHONET Lite devices on the home LAN: heat-pump water heaters, batteries, solar inverters.

``EchonetLanReader`` speaks ECHONET Lite over UDP port 3610 (the same codec
as Route B, ``keilib.echonet``) and records what the devices measure:

* **Finding devices.**  Each configured address (``devices``) is asked for
  its node profile's instance list (Get D6).  With ``discover`` the same
  question goes to the multicast group 224.0.23.0, at start, every
  ``rediscover`` seconds and soon after a device falls silent; a node's own
  INF D5 announcement (sent when it starts) is heard too.  A silent device
  found at a new address (a DHCP change) keeps its unit id and is read
  there; a second object with the unit id of one that still answers is
  logged once and not read (give it its own name in ``units``).
* **IPv6.**  ``devices`` may be IPv6 addresses; a link-local one names its
  interface ("fe80::1%eth0").  ``address`` is one IPv4 and/or one IPv6
  address to listen on (["0.0.0.0", "::"]); each family in it is spoken.
  Discovery over IPv6 asks ff02::1, which exists once per link: on each
  interface of ``interface6`` (default: the zone of a link-local
  ``address``, else every interface).  An INF heard on two links to one LAN
  is recorded once.
* **Reading.**  Every ``cycle`` seconds each device gets one Get carrying all
  its EPCs (``epcs``, default: every property ``echonet.DEVICE_PROPERTIES``
  knows for its class; EPCs a device refuses in a Get_SNA are dropped).  An
  answer counts only if its TID, source address and object match the
  request.  INF/INFC notifications from a known device are recorded with the
  time they arrive (INFC is acknowledged).
* **Records.**  ``Record(now, unit, EPC hex, value)``: unit id per device,
  from ``units`` (keys "026B01" or "192.168.1.20/026B01") or by default the
  object's class and instance ("026B01"); values in the units of the
  Appendix (W, kWh, Wh, %, L, degC); on/off states as 1/0, modes as their
  code (0x42 charging = 66).  Overflow/underflow ("no data") codes are not
  recorded; a malformed property or frame is skipped with one log line.
* **Silence.**  A device that does not answer within ``response_timeout`` is
  logged once ("stopped answering"), retried with ``keilib.worker.Backoff``
  (``cycle`` doubling to 10 x ``cycle``), and logged again when it answers.
  Health: state ``<unit>`` = ``ok`` / ``silent``, counters ``requests``,
  ``answers``, ``timeouts``, ``bad_frames``, ``records``, ``notifications``,
  ``inf_copies`` (an INF heard again on a second link, not recorded twice).
* **The port.**  Binds ``address`` (default all addresses) port 3610 with
  SO_REUSEADDR and SO_REUSEPORT, so other ECHONET Lite software on the same
  box can bind it too; if the port is taken by a program that does not
  share it, start-up fails with a DeviceError that says so (the launcher
  retries with backoff).

``worker_def`` entry::

    {'class': EchonetLanReader,
     'args': {'record_que': record_que,
              'devices': ['192.168.1.20', '192.168.1.21'],   # and/or 'discover': True
              'address': ['0.0.0.0', '::'],                  # IPv4 and IPv6 (default IPv4 only)
              'cycle': 60,
              'units': {'026B01': 'ecocute', '027D01': 'battery', '027901': 'solar'}}}
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import queue
import re
import select
import socket
import struct
from collections.abc import Mapping, Sequence

from keilib import echonet as el
from keilib import inet, validate
from keilib.clock import Clock
from keilib.errors import ConfigError, DeviceError, FrameError
from keilib.record import Record
from keilib.worker import POLL_SECONDS, Backoff, Worker

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Dict, List, Optional, Tuple, Union

logger = logging.getLogger(__name__)

PORT = 3610
MULTICAST_GROUP = "224.0.23.0"
MULTICAST_GROUP6 = "ff02::1"   # all nodes on the link: ECHONET Lite's IPv6 group
MAX_EPCS_PER_GET = 32          # keeps a Get and its answer well inside one datagram
# seconds between a device falling silent and the next discovery
DISCOVERY_AFTER_SILENCE = 5.0
_UNIT_RE = re.compile(r"^[A-Za-z0-9_.-]+$")   # what a Record accepts as unit id


class Device:
    """One device object being read: where it is, what to ask, when."""

    def __init__(self, unit: str, address: str, eoj: int, epcs: Sequence[int], backoff: Backoff) -> None:
        self.unit = unit
        self.address = address
        self.eoj = eoj
        self.epcs = tuple(epcs)
        self.backoff = backoff
        self.due = 0.0                 # monotonic time of the next Get
        self.pending: Optional[Tuple[int, float]] = None    # (tid, sent at)
        self.silent = False
        self.last_inf: Optional[Tuple[bytes, float]] = None    # (frame, heard at) of the last INF

    def __repr__(self) -> str:
        return "%s (%06X at %s)" % (self.unit, self.eoj, self.address)


def _check_address(name: str, value: Any) -> str:
    try:
        ip = ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise ConfigError("argument '%s' must be an IPv4 address such as '192.168.1.20', got %r"
                          % (name, value)) from None
    return str(ip)


def _check_seconds(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
        raise ConfigError("argument '%s' must be seconds, more than %g and at most %g, got %r"
                          % (name, low, high, value))
    return float(value)


def _parse_units(units: Any) -> Dict[str, str]:
    if units is None:
        return {}
    if not isinstance(units, Mapping):
        raise ConfigError("argument 'units' must be a dict such as {'026B01': 'ecocute'}, got %r" % (units,))
    out = {}
    for key, unit in units.items():
        where, _, eoj = str(key).rpartition("/")
        try:
            code = int(eoj, 16)
            if len(eoj) != 6:
                raise ValueError
            if where:
                where = str(inet.parse("units", where))
        except (ValueError, ConfigError):
            raise ConfigError("argument 'units': key %r must be an object such as '026B01', "
                              "'192.168.1.20/026B01' or 'fe80::20%%eth0/026B01'" % (key,)) from None
        if not isinstance(unit, str) or not _UNIT_RE.match(unit):
            raise ConfigError("argument 'units': unit id %r for %s must be letters, digits, '_', '-' or '.'"
                              % (unit, key))
        out[("%s/%06X" % (where, code)) if where else "%06X" % code] = unit
    return out


def _parse_epcs(epcs: Any) -> Dict[int, Tuple[int, ...]]:
    chosen = dict(el.DEFAULT_EPCS)
    if epcs is None:
        return chosen
    if not isinstance(epcs, Mapping):
        raise ConfigError("argument 'epcs' must be a dict such as {'027D': ['E4', 'D3']}, got %r" % (epcs,))
    for key, codes in epcs.items():
        try:
            cls = int(str(key), 16)
            if len(str(key)) != 4:
                raise ValueError
        except ValueError:
            raise ConfigError("argument 'epcs': key %r must be a class such as '027D'" % (key,)) from None
        if isinstance(codes, str) or not isinstance(codes, Sequence) or not codes:
            raise ConfigError("argument 'epcs': %s needs a non-empty list such as ['E4'], got %r" % (key, codes))
        parsed = []
        for code in codes:
            try:
                value = int(str(code), 16)
                if not 0x80 <= value <= 0xFF:
                    raise ValueError
            except ValueError:
                raise ConfigError("argument 'epcs': %s: %r is not an EPC such as 'E4'" % (key, code)) from None
            parsed.append(value)
        if len(parsed) > MAX_EPCS_PER_GET or len(set(parsed)) != len(parsed):
            raise ConfigError("argument 'epcs': %s: at most %d distinct EPCs, got %r"
                              % (key, MAX_EPCS_PER_GET, codes))
        chosen[cls] = tuple(parsed)
    return chosen


class EchonetLanReader(Worker):
    """Reads ECHONET Lite devices on the LAN (see the module docstring).

    ``worker_def`` entry::

        {'class': EchonetLanReader,
         'args': {'record_que': record_que,
                  'devices': ['192.168.1.20'],     # node addresses; or 'discover': True
                  'cycle': 60,
                  'units': {'026B01': 'ecocute'}}}
    """

    PRODUCES = ("record_que",)

    def __init__(self, record_que: "Optional[queue.Queue[Any]]" = None, devices: Sequence[str] = (),
                 discover: Optional[bool] = None, address: Union[str, Sequence[str]] = "0.0.0.0",
                 interface: Optional[str] = None, interface6: Union[str, Sequence[str], None] = None,
                 cycle: float = 60.0, units: Optional[Mapping[str, str]] = None,
                 epcs: Optional[Mapping[str, Sequence[str]]] = None, response_timeout: float = 5.0,
                 rediscover: float = 600.0, port: int = PORT, clock: Optional[Clock] = None) -> None:
        super().__init__(clock=clock)
        if record_que is not None and not hasattr(record_que, "put"):
            raise ConfigError("argument 'record_que' must be a queue.Queue, got %r" % (record_que,))
        if isinstance(devices, str) or not isinstance(devices, Sequence):
            raise ConfigError("argument 'devices' must be a list of addresses such as ['192.168.1.20'], got %r"
                              % (devices,))
        self.nodes = [str(inet.parse("devices", item)) for item in devices]
        if discover is None:
            discover = not self.nodes
        if not isinstance(discover, bool):
            raise ConfigError("argument 'discover' must be True or False, got %r" % (discover,))
        if not discover and not self.nodes:
            raise ConfigError("argument 'devices' is empty and 'discover' is False: nothing to read")
        # Where to listen: one address per family; a family without one is not spoken.
        listen = [address] if isinstance(address, str) else address
        if not isinstance(listen, Sequence) or not listen:
            raise ConfigError("argument 'address' must be an address such as '0.0.0.0' or '::', or a list "
                              "of one IPv4 and one IPv6 address, got %r" % (address,))
        self.listen: Dict[int, str] = {}
        for item in listen:
            text = str(inet.parse("address", item))
            if inet.family(text) in self.listen:
                raise ConfigError("argument 'address' takes at most one IPv4 and one IPv6 address, got %r"
                                  % (address,))
            self.listen[inet.family(text)] = text
        for node in self.nodes:
            if inet.family(node) not in self.listen:
                version, any_address = ("6", "::") if inet.family(node) == socket.AF_INET6 else ("4", "0.0.0.0")
                raise ConfigError("argument 'devices': %s is IPv%s but 'address' has no IPv%s address to "
                                  "listen on; add %r to 'address'" % (node, version, version, any_address))
        self.address = self.listen.get(socket.AF_INET)        # None: no IPv4
        if interface is None:
            interface = self.address or "0.0.0.0"
        self.interface = _check_address("interface", interface)
        # IPv6 multicast is per link: the interfaces to ask and listen on
        # (None: every interface; by default the zone of a link-local address).
        address6 = self.listen.get(socket.AF_INET6)
        if interface6 is None and address6 and "%" in address6:
            interface6 = address6.split("%")[1]
        if interface6 is not None and address6 is None:
            raise ConfigError("argument 'interface6' is for IPv6 multicast, but 'address' has no IPv6 address "
                              "such as '::'")
        if isinstance(interface6, str):
            interface6 = [interface6]
        if interface6 is not None and (not isinstance(interface6, Sequence) or not interface6):
            raise ConfigError("argument 'interface6' must be an interface name such as 'eth0' or a list of "
                              "them, got %r" % (interface6,))
        self.interface6: Optional[List[str]] = None if interface6 is None else [
            validate.text("interface6", name, inet.INTERFACE_NAME, "an interface name such as 'eth0'")
            for name in interface6]
        self.cycle = _check_seconds("cycle", cycle, 0, 86400)
        self.response_timeout = _check_seconds("response_timeout", response_timeout, 0, 60)
        self.rediscover = _check_seconds("rediscover", rediscover, 0, 86400)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError("argument 'port' must be a UDP port number, got %r" % (port,))
        self.port = port
        self.units = _parse_units(units)
        self.epcs = _parse_epcs(epcs)
        self.discover = discover
        self.record_que = record_que
        self.devices: Dict[str, Device] = {}          # unit id -> Device
        self.sockets: List[socket.socket] = []
        self.senders: Dict[int, socket.socket] = {}    # family -> the socket that sends
        self.links6: List[str] = []                   # interfaces asked over IPv6 multicast
        self.tid = 0
        self.node_due = 0.0                           # next instance-list question
        self.node_backoff = Backoff(self.cycle, max(self.cycle, self.rediscover))
        self.discovery_due = 0.0
        self.conflicts: set = set()                   # (unit, address) already warned about

    # -- sockets -----------------------------------------------------------
    def _bind(self, address: str) -> socket.socket:
        sock = socket.socket(inet.family(address), socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):      # not on every OS; Linux has it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if inet.family(address) == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)    # IPv4 has its own socket
        try:
            sock.bind(inet.sockaddr(address, self.port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise DeviceError("ECHONET Lite: UDP port %d on %s is taken by another program that does not "
                                  "share it (SO_REUSEADDR); stop that program or give kei another 'address'"
                                  % (self.port, address)) from exc
            raise DeviceError("ECHONET Lite: cannot bind UDP %s port %d: %s" % (address, self.port, exc)) from exc
        return sock

    def setup(self) -> None:
        try:
            if socket.AF_INET in self.listen:
                self._setup4(self.listen[socket.AF_INET])
            if socket.AF_INET6 in self.listen:
                self._setup6(self.listen[socket.AF_INET6])
        except BaseException:
            self.cleanup()
            raise
        logger.info("ECHONET Lite: listening on %s port %d%s", " and ".join(self.listen.values()), self.port,
                    " (multicast discovery on)" if self.discover else "")

    def _setup4(self, address: str) -> None:
        unicast = self._bind(address)
        self.sockets.append(unicast)
        self.senders[socket.AF_INET] = unicast
        if self.discover:
            membership = struct.pack("=4s4s", socket.inet_aton(MULTICAST_GROUP), socket.inet_aton(self.interface))
            if self.interface != "0.0.0.0":
                unicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.interface))
            unicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            # A socket bound to all addresses hears the group itself; one bound
            # to a single address does not, so the group gets its own socket.
            group = unicast if address == "0.0.0.0" else self._bind(MULTICAST_GROUP)
            try:
                group.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            except OSError as exc:
                logger.warning("ECHONET Lite: cannot join %s on %s (%s); devices announcing themselves "
                               "will not be heard", MULTICAST_GROUP, self.interface, exc)
            if group is not unicast:
                self.sockets.append(group)

    def _setup6(self, address: str) -> None:
        unicast = self._bind(address)
        self.sockets.append(unicast)
        self.senders[socket.AF_INET6] = unicast
        if not self.discover:
            return
        unicast.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        if self.interface6 is not None:
            links = self.interface6
            for name in links:
                try:
                    socket.if_nametoindex(name)
                except OSError:
                    raise DeviceError("ECHONET Lite: no network interface %r (argument 'interface6')"
                                      % name) from None
        else:
            links = [name for _, name in socket.if_nameindex()]
        # ff02::1 is one group per link: joined, and later asked, on each.
        for name in links:
            group = unicast if address == "::" else self._bind("%s%%%s" % (MULTICAST_GROUP6, name))
            try:
                index = socket.if_nametoindex(name)
                group.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                                 socket.inet_pton(socket.AF_INET6, MULTICAST_GROUP6) + struct.pack("@I", index))
            except OSError as exc:
                (logger.warning if self.interface6 else logger.debug)(
                    "ECHONET Lite: cannot join %s on %s (%s); not asked there", MULTICAST_GROUP6, name, exc)
                if group is not unicast:
                    group.close()
                continue
            self.links6.append(name)
            if group is not unicast:
                self.sockets.append(group)

    def groups(self) -> List[str]:
        """Where a multicast question goes: 224.0.23.0, and ff02::1 on each IPv6 link."""
        return ([MULTICAST_GROUP] if socket.AF_INET in self.senders else []) + [
            "%s%%%s" % (MULTICAST_GROUP6, name) for name in self.links6]

    def cleanup(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []
        self.senders = {}
        self.links6 = []

    def send(self, frame: el.Frame, address: str) -> None:
        sock = self.senders.get(inet.family(address))
        if sock is None:
            logger.debug("ECHONET Lite: no socket to send to %s", address)
            return
        try:
            sock.sendto(frame.encode(), inet.sockaddr(address, self.port))
        except OSError as exc:
            logger.debug("ECHONET Lite: sending to %s failed: %s", address, exc)

    def next_tid(self) -> int:
        self.tid = self.tid % 0xFFFF + 1
        return self.tid

    # -- the loop ------------------------------------------------------------
    def step(self) -> None:
        now = self.clock.monotonic()
        if now >= self.node_due:
            for node in self.nodes:
                if not any(device.address == node for device in self.devices.values()):
                    self.ask_instances(node)
            self.node_due = now + self.node_backoff.next()
        if self.discover and now >= self.discovery_due:
            for group in self.groups():
                self.ask_instances(group)
            self.discovery_due = now + self.rediscover
        for device in list(self.devices.values()):
            self.poll(device, now)
        self.receive(self.sleep_seconds(now))

    def sleep_seconds(self, now: float) -> float:
        moments = [self.node_due] + ([self.discovery_due] if self.discover else [])
        for device in self.devices.values():
            moments.append(device.pending[1] + self.response_timeout if device.pending else device.due)
        return max(0.0, min(moments) - now)

    def receive(self, seconds: float) -> None:
        real = min(POLL_SECONDS, self.clock.to_real(seconds))
        try:
            ready, _, _ = select.select(self.sockets, [], [], real)
        except (OSError, ValueError):
            return
        for sock in ready:
            try:
                data, sender = sock.recvfrom(2048)
            except OSError:
                continue
            self.handle(data, inet.from_sockaddr(sender))

    def ask_instances(self, address: str) -> None:
        frame = el.get_request(self.next_tid(), [0xD6], deoj=el.NODE_PROFILE)
        logger.debug("ECHONET Lite: asking %s for its instance list", address)
        self.send(frame, address)

    def poll(self, device: Device, now: float) -> None:
        if device.pending is not None:
            if now - device.pending[1] < self.response_timeout:
                return
            device.pending = None
            self.health.count("timeouts")
            delay = device.backoff.next()
            device.due = now + delay
            if not device.silent:
                device.silent = True
                self.health.state(device.unit, "silent")
                logger.warning("ECHONET Lite: %r stopped answering; retrying with backoff (next in %g s)",
                               device, delay)
                if self.discover:
                    self.discovery_due = min(self.discovery_due, now + DISCOVERY_AFTER_SILENCE)
            return
        if now < device.due:
            return
        tid = self.next_tid()
        device.pending = (tid, now)
        self.health.count("requests")
        self.send(el.get_request(tid, device.epcs, deoj=device.eoj), device.address)

    # -- answers -------------------------------------------------------------
    def handle(self, data: bytes, sender: str) -> None:
        try:
            frame = el.Frame.decode(data)
        except FrameError as exc:
            self.health.count("bad_frames")
            logger.warning("ECHONET Lite: skipped a bad frame from %s: %s", sender, exc)
            return
        if el.eoj_class(frame.seoj) == el.NODE_PROFILE_CLASS:
            self.handle_node(frame, sender)
            return
        if frame.esv in (el.ESV.INF, el.ESV.INFC):
            device = self.find(sender, frame.seoj)
            if frame.esv == el.ESV.INFC:
                self.send(el.infc_response(frame), sender)
            if device is not None and self.heard_twice(device, data):
                return
            if device is not None:
                # only what the configuration reads for this class
                wanted = self.epcs.get(el.eoj_class(device.eoj), ())
                self.record(device, frame.replace(
                    properties=tuple(p for p in frame.properties if p.epc in wanted)))
                self.health.count("notifications")
            return
        if frame.esv not in (el.ESV.GET_RES, el.ESV.GET_SNA):
            return                              # requests to us, Set answers: not ours to act on
        device = self.find(sender, frame.seoj)
        if device is None or device.pending is None or device.pending[0] != frame.tid:
            logger.debug("ECHONET Lite: ignored an answer from %s (TID %d) that matches no request",
                         sender, frame.tid)
            return
        device.pending = None
        device.due = self.clock.monotonic() + self.cycle
        device.backoff.reset()
        self.health.count("answers")
        if device.silent:
            device.silent = False
            logger.info("ECHONET Lite: %r answers again", device)
        self.health.state(device.unit, "ok")
        refused = [prop.epc for prop in frame.properties if not prop.edt]
        if frame.esv == el.ESV.GET_SNA and refused and len(refused) < len(device.epcs):
            # The object lacks these (not in its Get map): stop asking for them.
            device.epcs = tuple(epc for epc in device.epcs if epc not in refused)
            logger.info("ECHONET Lite: %r does not have EPC %s; no longer asked",
                        device, " ".join("%02X" % epc for epc in refused))
        self.record(device, frame)

    def heard_twice(self, device: Device, data: bytes) -> bool:
        """Whether this INF is a copy of the last one: a box with two links to
        one LAN (eth0 and wlan0, both joined to ff02::1) hears each multicast
        twice.  Whole frames are compared, TID included: some devices send
        every INF with one TID, and a new value is never a copy."""
        now = self.clock.monotonic()
        last = device.last_inf
        if last is not None and last[0] == data and now - last[1] < self.response_timeout:
            self.health.count("inf_copies")
            return True
        device.last_inf = (data, now)
        return False

    def find(self, address: str, eoj: int) -> Optional[Device]:
        for device in self.devices.values():
            if device.address == address and device.eoj == eoj:
                return device
        return None

    def handle_node(self, frame: el.Frame, sender: str) -> None:
        if frame.esv not in (el.ESV.GET_RES, el.ESV.GET_SNA, el.ESV.INF, el.ESV.INFC):
            return                              # e.g. our own multicast question, looped back
        if frame.esv == el.ESV.INFC:
            self.send(el.infc_response(frame), sender)
        for prop in frame.properties:
            if prop.epc not in (0xD5, 0xD6) or not prop.edt:
                continue
            try:
                instances = el.decode_instance_list(prop.edt, prop.epc)
            except FrameError as exc:
                self.health.count("bad_frames")
                logger.warning("ECHONET Lite: skipped a bad instance list from %s: %s", sender, exc)
                continue
            for eoj in instances:
                self.learn(sender, eoj)

    def unit_for(self, address: str, eoj: int) -> str:
        return self.units.get("%s/%06X" % (address, eoj)) or self.units.get("%06X" % eoj) or "%06X" % eoj

    def learn(self, address: str, eoj: int) -> None:
        epcs = self.epcs.get(el.eoj_class(eoj))
        if epcs is None:
            return                              # a class kei does not read (an air conditioner, ...)
        unit = self.unit_for(address, eoj)
        device = self.devices.get(unit)
        if device is not None and device.address == address and device.eoj == eoj:
            return
        if device is not None and not device.silent:
            # Still answering where it is: this is a second device with the
            # same unit id (two inverters both 027901), not a move.
            if (unit, address) not in self.conflicts:
                self.conflicts.add((unit, address))
                logger.warning("ECHONET Lite: %06X at %s has the unit id %r of %r, which still answers; "
                               "not read (name it in 'units', e.g. {'%s/%06X': '...'})",
                               eoj, address, unit, device, address, eoj)
            return
        if device is not None:
            logger.info("ECHONET Lite: %r is now at %s", device, address)
            device.address = address
            device.eoj = eoj
            device.pending = None
            device.due = self.clock.monotonic()
            return
        device = Device(unit, address, eoj, epcs, Backoff(self.cycle, 10 * self.cycle))
        device.due = self.clock.monotonic()
        self.devices[unit] = device
        self.health.state(unit, "ok")
        logger.info("ECHONET Lite: found %r", device)

    def record(self, device: Device, frame: el.Frame) -> None:
        stamp = self.clock.now()
        for prop in frame.properties:
            if not prop.edt:
                continue                        # refused (Get_SNA) or not sent
            sensor = "%02X" % prop.epc
            try:
                value = el.decode_device_property(device.eoj, prop.epc, prop.edt)
            except FrameError as exc:
                self.health.count("bad_properties")
                logger.warning("ECHONET Lite: %s %s skipped: %s", device.unit, sensor, exc)
                continue
            number = el.record_value(value)
            if number is None:
                if not el.is_value(value):
                    logger.info("ECHONET Lite: %s reports %s for %s; not recorded", device.unit, value, sensor)
                continue
            self.put(Record(stamp, device.unit, sensor, number))

    def put(self, record: Record) -> None:
        self.health.reading(record)
        self.health.count("records")
        if self.record_que is None:
            return
        for _ in range(10):
            try:
                self.record_que.put(record, timeout=0.5)
                return
            except queue.Full:
                if self.stopping:
                    break
        logger.error("ECHONET Lite: record queue full for 5 s; reading lost: %s", record.to_raw_line())
