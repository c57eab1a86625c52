"""ECHONET Lite devices on the home LAN, simulated: an EcoCute, a battery, a solar inverter.

Each simulated node is a real UDP endpoint on its own address (loopback
127.0.0.N in tests and in ``--demo``), port 3610, with a node profile
(0EF001) and one device object::

    node = LanNode(SolarModel(), "127.0.0.31", clock=clock, inf_to=["127.0.0.30"])
    node.start()          # binds (address, 3610) and serves in a thread
    ...
    node.stop()

    python3 -m keilib.sim lan --device ecocute|battery|solar --address 127.0.0.N [--scale N]

``--demo`` adds ``demo_worker_defs(record_que, clock)``: a ``LanDemoDevices``
worker running the three nodes on a random loopback /24, and the
EchonetLanReader that reads them.

The models (no I/O) follow a plausible day, driven only by the wall time the
node passes them (``clock.now()``, so a FakeClock or ScaledClock drives them):

* ``EcoCuteModel`` (electric water heater 026B01, 370 L tank): reheats at
  night (01:00-05:00, about 1.2 kW, B2 "heating"), hot water is drawn in the
  morning and in the evening (C3 "supplying"), the tank cools slowly;
* ``BatteryModel`` (storage battery 027D01, 9.8 kWh): in automatic mode it
  charges from the solar surplus by day (09:00-15:00) and discharges in the
  evening (18:00-24:00); a SetC of DA (operation mode) forces charging,
  discharging or standby;
* ``SolarModel`` (home solar power generation 027901, 4.5 kW peak): a sine
  from 06:00 to 18:00; cumulative generated and sold energy integrate it.

On the wire: Get -> Get_Res (Get_SNA with PDC 0 for what the object lacks);
SetC -> Set_Res / SetC_SNA; SetI answers only on failure; INF_REQ -> INF to
the asker; at start (unless ``announce=False``) the node profile announces
its instances (INF D5), and each change of an announced property (80, and
the heating state B2 or the battery's working status CF) is sent as an INF:
to the multicast group 224.0.23.0 (when ``multicast``; ff02::1 on the
node's interface for an IPv6 node) and to each address of ``inf_to``.  Replies
go to the sender's address and port.  Malformed frames are ignored.
"""

from __future__ import annotations

import datetime
import logging
import math
import random
import select
import socket
import struct
import threading
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from keilib import echonet as el
from keilib import inet
from keilib.clock import SYSTEM_CLOCK, Clock
from keilib.errors import FrameError
from keilib.worker import Worker

logger = logging.getLogger(__name__)

PORT = 3610
MULTICAST_GROUP = "224.0.23.0"
MULTICAST_GROUP6 = "ff02::1"
MAKER_CODE = 0xFFFFFF          # "no maker": this is a simulator
STEP_SECONDS = 60.0            # the models integrate in steps of at most this
POLL_REAL_SECONDS = 0.05       # how often a node looks at its clock for changes


def _hour(now: datetime.datetime) -> float:
    return now.hour + now.minute / 60.0 + now.second / 3600.0


class DeviceModel:
    """Base of the three models: integrate the day, answer property values.

    ``advance(now)`` moves the state to ``now`` (steps of at most one minute;
    a clock that went back restarts the integration there).  ``value(epc)``
    gives the typed value ``echonet.encode_device_property`` takes.
    """

    EOJ = 0
    RELEASE = "J"
    ANNOUNCE: Tuple[int, ...] = (0x80,)
    SETTABLE: Tuple[int, ...] = (0x80,)

    def __init__(self, instance: int = 1) -> None:
        if not 1 <= instance <= 0x7F:
            raise ValueError("instance must be 1..127, got %r" % (instance,))
        self.eoj = (self.EOJ & 0xFFFF00) | instance
        self.on = True
        self.last: Optional[datetime.datetime] = None

    # -- time
    def advance(self, now: datetime.datetime) -> None:
        if self.last is None or now < self.last:
            self.last = now
            self._step(now, 0.0)          # the state of that moment, nothing integrated
            return
        while self.last < now:
            step = min(STEP_SECONDS, (now - self.last).total_seconds())
            self._step(self.last, step)
            self.last += datetime.timedelta(seconds=step)

    def _step(self, start: datetime.datetime, seconds: float) -> None:
        raise NotImplementedError

    # -- properties
    def class_values(self) -> Dict[int, object]:
        raise NotImplementedError

    def values(self) -> Dict[int, object]:
        """Every readable property (typed), super class included."""
        out: Dict[int, object] = {0x80: self.on, 0x88: False, 0x8A: MAKER_CODE}
        out.update(self.class_values())
        return out

    def value(self, epc: int):
        return self.values()[epc]

    def set(self, epc: int, value) -> bool:
        """Apply a Set; False if the value is refused."""
        if epc == 0x80:
            self.on = bool(value)
            return True
        return False


class EcoCuteModel(DeviceModel):
    """A heat-pump water heater with a 370 L tank."""

    EOJ = el.WATER_HEATER
    ANNOUNCE = (0x80, 0xB2)
    SETTABLE = (0x80, 0xB0, 0xD1)
    CAPACITY_L = 370
    HEAT_POWER_W = 1200
    STANDBY_W = 15

    def __init__(self, instance: int = 1, remaining_l: float = 250.0, temperature: float = 55.0,
                 energy_kwh: float = 1234.567) -> None:
        super().__init__(instance)
        self.remaining = float(remaining_l)
        self.temperature = float(temperature)
        self.energy_wh = energy_kwh * 1000.0
        self.auto_setting = 0x41        # B0: automatic
        self.supply_setting = 42        # D1: hot water temperature setting, degC
        self.heating = False
        self.supplying = False

    @staticmethod
    def draw_l_per_hour(hour: float) -> float:
        if 7 <= hour < 8:
            return 30.0                 # morning: washing up, showers
        if 19 <= hour < 22:
            return 60.0                 # evening: the bath
        return 0.0

    def _wants_heat(self, hour: float) -> bool:
        if not self.on or self.auto_setting == 0x43:
            return False
        if self.auto_setting == 0x42:
            return self.remaining < self.CAPACITY_L
        night = 1 <= hour < 5
        return (night and (self.remaining < self.CAPACITY_L or self.temperature < 65)) or self.remaining < 40

    def _step(self, start: datetime.datetime, seconds: float) -> None:
        hours = seconds / 3600.0
        hour = _hour(start)
        draw = self.draw_l_per_hour(hour)
        self.supplying = draw > 0
        self.remaining = max(0.0, self.remaining - draw * hours)
        self.heating = self._wants_heat(hour)
        if self.heating:
            self.remaining = min(float(self.CAPACITY_L), self.remaining + 100.0 * hours)
            self.temperature = min(70.0, self.temperature + 5.0 * hours)
            self.energy_wh += self.HEAT_POWER_W * hours
        else:
            self.temperature = max(40.0, self.temperature - 0.3 * hours)
            self.energy_wh += self.STANDBY_W * hours

    def class_values(self) -> Dict[int, object]:
        return {
            0x84: self.HEAT_POWER_W if self.heating else self.STANDBY_W,
            0x85: round(self.energy_wh / 1000.0, 3),
            0xB0: el.Code(self.auto_setting, ""),
            0xB2: self.heating,
            0xC1: int(round(self.temperature)),
            0xC3: self.supplying,
            0xD1: self.supply_setting,
            0xE1: int(self.remaining),
            0xE2: self.CAPACITY_L,
        }

    def set(self, epc: int, value) -> bool:
        if epc == 0xB0 and isinstance(value, el.Code):
            self.auto_setting = value.code
            return True
        if epc == 0xD1 and 30 <= value <= 60:
            self.supply_setting = int(value)
            return True
        return super().set(epc, value)


class SolarModel(DeviceModel):
    """Home solar power generation: a sine from 06:00 to 18:00."""

    EOJ = el.SOLAR

    def __init__(self, instance: int = 1, peak_w: float = 4500.0, generated_kwh: float = 8765.432,
                 sold_kwh: float = 5432.1) -> None:
        super().__init__(instance)
        self.peak_w = float(peak_w)
        self.generated_wh = generated_kwh * 1000.0
        self.sold_wh = sold_kwh * 1000.0
        self.watts = 0

    def power_at(self, hour: float) -> float:
        if not self.on or not 6 <= hour <= 18:
            return 0.0
        return self.peak_w * math.sin(math.pi * (hour - 6) / 12.0)

    def _step(self, start: datetime.datetime, seconds: float) -> None:
        watts = self.power_at(_hour(start))
        self.generated_wh += watts * seconds / 3600.0
        self.sold_wh += 0.6 * watts * seconds / 3600.0     # the house uses the rest

    def class_values(self) -> Dict[int, object]:
        hour = _hour(self.last) if self.last is not None else 0.0
        return {
            0xE0: int(self.power_at(hour)),
            0xE1: round(self.generated_wh / 1000.0, 3),
            0xE3: round(self.sold_wh / 1000.0, 3),
        }


class BatteryModel(DeviceModel):
    """A 9.8 kWh home battery: charges by day, discharges in the evening."""

    EOJ = el.STORAGE_BATTERY
    ANNOUNCE = (0x80, 0xCF)
    SETTABLE = (0x80, 0xDA)
    RATED_WH = 9800
    CHARGE_W = 1500
    DISCHARGE_W = 1000

    def __init__(self, instance: int = 1, stored_wh: float = 4900.0, charged_kwh: float = 2345.678,
                 discharged_kwh: float = 2100.5) -> None:
        super().__init__(instance)
        self.stored_wh = float(stored_wh)
        self.charged_wh = charged_kwh * 1000.0
        self.discharged_wh = discharged_kwh * 1000.0
        self.mode_setting = 0x46        # DA: automatic
        self.working = 0x44             # CF: standby
        self.watts = 0

    def _working_mode(self, hour: float) -> int:
        if not self.on:
            return 0x44
        wanted = self.mode_setting
        if wanted == 0x46:
            wanted = 0x42 if 9 <= hour < 15 else 0x43 if hour >= 18 else 0x44
        if wanted in (0x41, 0x42) and self.stored_wh >= self.RATED_WH:
            return 0x44
        if wanted == 0x43 and self.stored_wh <= 0.1 * self.RATED_WH:
            return 0x44
        return wanted if wanted in (0x41, 0x42, 0x43) else 0x44

    def _step(self, start: datetime.datetime, seconds: float) -> None:
        self.working = self._working_mode(_hour(start))
        hours = seconds / 3600.0
        if self.working in (0x41, 0x42):
            self.watts = self.CHARGE_W
            energy = min(self.CHARGE_W * hours, self.RATED_WH - self.stored_wh)
            self.stored_wh += energy
            self.charged_wh += energy
        elif self.working == 0x43:
            self.watts = -self.DISCHARGE_W
            energy = min(self.DISCHARGE_W * hours, self.stored_wh)
            self.stored_wh -= energy
            self.discharged_wh += energy
        else:
            self.watts = 0

    def class_values(self) -> Dict[int, object]:
        return {
            0x84: 20,
            0x85: round(self.charged_wh / 1000.0 * 0.02, 3),     # its own electronics
            0xCF: el.Code(self.working, ""),
            0xD0: self.RATED_WH,
            0xD3: self.watts,
            0xD6: round(self.discharged_wh / 1000.0, 3),
            0xD8: round(self.charged_wh / 1000.0, 3),
            0xDA: el.Code(self.mode_setting, ""),
            0xE2: int(self.stored_wh),
            0xE4: int(round(100.0 * self.stored_wh / self.RATED_WH)),
        }

    def set(self, epc: int, value) -> bool:
        if epc == 0xDA and isinstance(value, el.Code) and value.code in (0x42, 0x43, 0x44, 0x46):
            self.mode_setting = value.code
            return True
        return super().set(epc, value)


MODELS = {"ecocute": EcoCuteModel, "battery": BatteryModel, "solar": SolarModel}


def make_model(device: str, instance: int = 1) -> DeviceModel:
    """A model by its CLI name (ecocute, battery, solar); ValueError otherwise."""
    try:
        return MODELS[device](instance)
    except KeyError:
        raise ValueError("unknown LAN device %r; expected one of %s"
                         % (device, ", ".join(sorted(MODELS)))) from None


def _bind_udp(address: str, port: int) -> socket.socket:
    sock = socket.socket(inet.family(address), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        if inet.family(address) == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(inet.sockaddr(address, port))
    except OSError:
        sock.close()
        raise
    return sock


class LanNode:
    """One simulated ECHONET Lite node: node profile + one device, on (address, port).

    ``address`` is IPv4 or IPv6 ("fd00::2", "fe80::2%eth0"); an IPv6 node
    joins ff02::1 on ``interface`` (default: the address's own interface, as
    in "fe80::2%eth0") and announces there.
    """

    def __init__(self, model: DeviceModel, address: str, port: int = PORT, clock: Optional[Clock] = None,
                 multicast: bool = True, inf_to: Iterable[str] = (), announce: bool = True,
                 interface: Optional[str] = None) -> None:
        self.model = model
        self.address = str(inet.parse("address", address))
        self.family = inet.family(self.address)
        if interface is None and "%" in self.address:
            interface = self.address.split("%")[1]
        self.interface = interface
        self.port = port
        self.clock = clock or SYSTEM_CLOCK
        self.multicast = multicast
        self.inf_to = list(inf_to)
        self.announce = announce          # INF D5 at start, as a node that boots does
        self.lock = threading.Lock()
        self.sockets: List[socket.socket] = []
        self.thread: Optional[threading.Thread] = None
        self.stopping = threading.Event()
        self.tid = 0
        self.requests = 0                 # frames answered, for tests
        self._announced: Dict[int, bytes] = {}

    # -- node profile
    def node_values(self) -> Dict[int, object]:
        return {
            0x80: True,
            0x82: el.NodeVersion(1, 13),
            0x83: self.identification(),
            0x8A: MAKER_CODE,
            0x8C: "KEI-SIM",
            0x9D: (0x80, 0xD5),
            0x9E: (),
            0x9F: (0x80, 0x82, 0x83, 0x8A, 0x8C, 0x9D, 0x9E, 0x9F, 0xD3, 0xD4, 0xD6, 0xD7),
            0xD3: 1,
            0xD4: 2,
            0xD5: (self.model.eoj,),
            0xD6: (self.model.eoj,),
            0xD7: (el.eoj_class(self.model.eoj),),
        }

    def identification(self) -> bytes:
        packed = inet.sockaddr(self.address, 0)[0]
        packed = socket.inet_pton(self.family, packed)[-11:]      # IPv6: the low 11 bytes
        unique = packed + el.eoj_class(self.model.eoj).to_bytes(2, "big")
        return b"\xFE" + MAKER_CODE.to_bytes(3, "big") + unique.ljust(13, b"\x00")

    def _device_edts(self) -> Dict[int, bytes]:
        values = self.model.values()
        out = {epc: el.encode_device_property(self.model.eoj, epc, value) for epc, value in values.items()
               if epc not in (0x88, 0x8A)}
        out[0x88] = b"\x42"
        out[0x8A] = MAKER_CODE.to_bytes(3, "big")
        out[0x82] = bytes([0, 0, ord(self.model.RELEASE), 0])
        out[0x83] = self.identification()
        readable = sorted(set(out) | {0x9D, 0x9E, 0x9F})
        out[0x9D] = el.encode_property_map(self.model.ANNOUNCE)
        out[0x9E] = el.encode_property_map(self.model.SETTABLE)
        out[0x9F] = el.encode_property_map(readable)
        return out

    def _node_edts(self) -> Dict[int, bytes]:
        return {epc: el.encode_node_property(epc, value) for epc, value in self.node_values().items()}

    def _edts_for(self, eoj: int) -> Optional[Dict[int, bytes]]:
        if eoj == el.NODE_PROFILE or eoj == 0x0EF000:
            return self._node_edts()
        if eoj == self.model.eoj or eoj == (self.model.eoj & 0xFFFF00):   # instance 0 = all
            self.model.advance(self.clock.now())
            return self._device_edts()
        return None

    # -- answering
    def handle(self, data: bytes) -> List[Tuple[bytes, bool]]:
        """Answers to one datagram: ``[(frame bytes, to_sender), ...]``."""
        try:
            frame = el.Frame.decode(data)
        except FrameError as exc:
            logger.debug("%s: ignored a bad frame: %s", self.address, exc)
            return []
        with self.lock:
            edts = self._edts_for(frame.deoj)
            if edts is None or frame.esv not in (el.ESV.GET, el.ESV.SETC, el.ESV.SETI, el.ESV.INF_REQ):
                return []
            seoj = frame.deoj if frame.deoj & 0xFF else frame.deoj | 1
            self.requests += 1
            if frame.esv in (el.ESV.GET, el.ESV.INF_REQ):
                props = [el.Property(p.epc, edts.get(p.epc, b"")) for p in frame.properties]
                ok = all(p.edt for p in props)
                if frame.esv == el.ESV.GET:
                    esv = el.ESV.GET_RES if ok else el.ESV.GET_SNA
                else:
                    esv = el.ESV.INF if ok else el.ESV.INF_SNA
                return [(el.Frame(frame.tid, seoj, frame.seoj, esv, tuple(props)).encode(), True)]
            return self._set(frame, seoj)

    def _set(self, frame: el.Frame, seoj: int) -> List[Tuple[bytes, bool]]:
        props = []
        ok = True
        for prop in frame.properties:
            accepted = False
            if seoj == self.model.eoj and prop.epc in self.model.SETTABLE:
                try:
                    accepted = self.model.set(prop.epc, el.decode_device_property(seoj, prop.epc, prop.edt))
                except FrameError:
                    accepted = False
            props.append(el.Property(prop.epc, b"" if accepted else prop.edt))
            ok = ok and accepted
        if frame.esv == el.ESV.SETI and ok:
            return []
        if frame.esv == el.ESV.SETI:
            esv = el.ESV.SETI_SNA
        else:
            esv = el.ESV.SET_RES if ok else el.ESV.SETC_SNA
        return [(el.Frame(frame.tid, seoj, frame.seoj, esv, tuple(props)).encode(), True)]

    def _next_tid(self) -> int:
        self.tid = (self.tid + 1) & 0xFFFF
        return self.tid

    def changes(self) -> List[bytes]:
        """INF frames for announced properties that changed since last asked."""
        with self.lock:
            self.model.advance(self.clock.now())
            edts = self._device_edts()
            changed = [el.Property(epc, edts[epc]) for epc in self.model.ANNOUNCE
                       if epc in self._announced and self._announced[epc] != edts[epc]]
            self._announced = {epc: edts[epc] for epc in self.model.ANNOUNCE}
            if not changed:
                return []
            return [el.Frame(self._next_tid(), self.model.eoj, el.NODE_PROFILE, el.ESV.INF,
                             tuple(changed)).encode()]

    def instance_list_inf(self) -> bytes:
        with self.lock:
            return el.Frame(self._next_tid(), el.NODE_PROFILE, el.NODE_PROFILE, el.ESV.INF,
                            (el.Property(0xD5, el.encode_instance_list([self.model.eoj])),)).encode()

    # -- sockets and thread
    def start(self) -> "LanNode":
        unicast = _bind_udp(self.address, self.port)
        self.sockets = [unicast]
        if self.multicast and self.family == socket.AF_INET6:
            self._join6(unicast)
        elif self.multicast:
            unicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.address))
            unicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            try:
                group = _bind_udp(MULTICAST_GROUP, self.port)
                group.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                                 struct.pack("=4s4s", socket.inet_aton(MULTICAST_GROUP),
                                             socket.inet_aton(self.address)))
                self.sockets.append(group)
            except OSError as exc:
                logger.warning("%s: no multicast (%s); unicast only", self.address, exc)
        self.changes()                            # remember the starting state
        self.stopping.clear()
        self.thread = threading.Thread(target=self._serve, name="lan-sim-%s" % self.address, daemon=True)
        self.thread.start()
        if self.announce:
            self.notify(self.instance_list_inf())
        return self

    def _join6(self, unicast: socket.socket) -> None:
        unicast.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        if self.interface is None:
            logger.warning("%s: no interface for ff02::1 (give 'interface'); unicast only", self.address)
            return
        try:
            index = inet.interface_index(self.interface)
            unicast.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            group = _bind_udp("%s%%%s" % (MULTICAST_GROUP6, self.interface), self.port)
            group.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                             socket.inet_pton(socket.AF_INET6, MULTICAST_GROUP6) + struct.pack("@I", index))
            self.sockets.append(group)
        except OSError as exc:
            logger.warning("%s: no multicast on %s (%s); unicast only", self.address, self.interface, exc)

    def notify(self, frame: bytes) -> None:
        targets = list(self.inf_to)
        if self.multicast and self.family == socket.AF_INET6:
            if self.interface is not None:
                targets.append("%s%%%s" % (MULTICAST_GROUP6, self.interface))
        elif self.multicast:
            targets.append(MULTICAST_GROUP)
        for address in targets:
            if inet.family(address) != self.family:
                continue
            try:
                target = inet.sockaddr(address, PORT)
                self.sockets[0].sendto(frame, target)
            except OSError as exc:
                logger.debug("%s: INF to %s failed: %s", self.address, target, exc)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                ready, _, _ = select.select(self.sockets, [], [], POLL_REAL_SECONDS)
            except (OSError, ValueError):
                return                            # closed under us: stopping
            for sock in ready:
                try:
                    data, sender = sock.recvfrom(2048)
                except OSError:
                    continue
                if sender[1] == self.port and inet.from_sockaddr(sender) == self.address:
                    continue                      # our own multicast, looped back
                for frame, _ in self.handle(data):
                    try:
                        self.sockets[0].sendto(frame, sender)
                    except OSError as exc:
                        logger.debug("%s: reply to %s failed: %s", self.address, sender, exc)
            for frame in self.changes():
                self.notify(frame)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(5)
        for sock in self.sockets:
            sock.close()
        self.sockets = []


# ---------------------------------------------------------------- the demo

DEMO_DEVICE_NAMES = ("ecocute", "battery", "solar")


class LanDemo:
    """Started demo nodes; ``reader_args`` configure EchonetLanReader for them."""

    def __init__(self, nodes: Sequence[LanNode], reader_address: str, names: Sequence[str] = ()) -> None:
        self.nodes = list(nodes)
        self.named = dict(zip(names, self.nodes))   # 'ecocute' -> its node: unit ids in the files
        self.reader_address = reader_address
        self.addresses = [node.address for node in self.nodes]

    def reader_args(self, record_que, clock) -> dict:
        return reader_args(record_que, clock, self.reader_address,
                           [(name, node.address) for name, node in self.named.items()])

    def close(self) -> None:
        for node in self.nodes:
            node.stop()


def reader_args(record_que, clock, reader_address: str, devices: Sequence[Tuple[str, str]]) -> dict:
    """EchonetLanReader arguments for demo nodes ``[(name, address), ...]``."""
    return {"record_que": record_que, "devices": [address for _, address in devices],
            "address": reader_address, "cycle": 60,
            "units": {"%06X" % MODELS[name].EOJ: name for name, _ in devices}, "clock": clock}


def start_demo_devices(clock: Clock, reader_address: str, devices: Sequence[Tuple[str, str]]) -> LanDemo:
    """Start demo nodes ``[(name, address), ...]`` (names: ecocute, battery, solar).

    Unicast only: their INF go to ``reader_address`` (where the demo's reader
    listens) and nothing joins or sends to the multicast group, so a real
    ECHONET Lite controller on the same box never sees the demo.  OSError if
    an address's port 3610 is held exclusively.
    """
    nodes: List[LanNode] = []
    try:
        for device, address in devices:
            nodes.append(LanNode(make_model(device), address, clock=clock, multicast=False,
                                 inf_to=[reader_address]).start())
    except OSError:
        for node in nodes:
            node.stop()
        raise
    return LanDemo(nodes, reader_address, [device for device, _ in devices])


class LanDemoDevices(Worker):
    """``--demo``: the simulated EcoCute, battery and solar nodes, run as a worker.

    A worker, so that ``kei --demo --check`` binds nothing and the launcher
    stops the nodes at shutdown.  Build both entries with
    ``demo_worker_defs(record_que, clock)``.

    ``worker_def`` entry::

        {'class': LanDemoDevices,
         'args': {'devices': [('ecocute', '127.0.0.2'), ('battery', '127.0.0.3'), ('solar', '127.0.0.4')],
                  'reader_address': '127.0.0.1', 'clock': clock}}
    """

    def __init__(self, devices: Sequence[Tuple[str, str]], reader_address: str,
                 clock: Optional[Clock] = None) -> None:
        super().__init__(clock=clock)
        self.devices = [(str(name), str(address)) for name, address in devices]
        self.reader_address = reader_address
        self.demo: Optional[LanDemo] = None

    def setup(self) -> None:
        self.demo = start_demo_devices(self.clock, self.reader_address, self.devices)
        logger.info("demo: simulated ECHONET Lite devices %s",
                    ", ".join("%s at %s:%d" % (name, address, PORT) for name, address in self.devices))

    def step(self) -> None:
        self.wait(1.0)

    def cleanup(self) -> None:
        if self.demo is not None:
            self.demo.close()


def demo_worker_defs(record_que, clock, rng: Optional[random.Random] = None) -> List[dict]:
    """The two ``worker_def`` entries ``--demo`` adds: the nodes and their reader.

    Each demo takes a random 127.B.C.0/24 (B 200..254), so two demos (or a
    demo and the tests) on one machine do not share port 3610 on an address.
    """
    rng = rng or random.Random()
    base = "127.%d.%d." % (rng.randint(200, 254), rng.randint(1, 254))
    reader_address = base + "1"
    devices = [(name, base + str(index + 2)) for index, name in enumerate(DEMO_DEVICE_NAMES)]
    from keilib.lan import EchonetLanReader        # production reader; the simulator only configures it
    return [
        {"class": LanDemoDevices, "args": {"devices": devices, "reader_address": reader_address, "clock": clock}},
        {"class": EchonetLanReader, "args": reader_args(record_que, clock, reader_address, devices)},
    ]
