"""An independent client reads kei's simulated LAN devices: pychonet, the
library behind Home Assistant's ECHONET Lite integration (test-only
dependency, requirements-dev.txt).  It discovers each node (Get of the node
profile's 8A/8C/83/D6), reads the property maps, reads every property kei
lists for the class and sets the battery's operation mode, over real UDP on
loopback addresses of this test's own.
"""

from __future__ import annotations

import asyncio

import pytest

from keilib import echonet as el
from keilib.sim.lan import LanNode, make_model
from lanaddr import addresses

pychonet = pytest.importorskip("pychonet", reason="pychonet is not installed (requirements-dev.txt: Python >= 3.10)")

from pychonet.echonetapiclient import ECHONETAPIClient  # noqa: E402
from pychonet.ElectricWaterHeater import ElectricWaterHeater  # noqa: E402
from pychonet.HomeSolarPower import HomeSolarPower  # noqa: E402
from pychonet.lib.udpserver import UDPServer  # noqa: E402
from pychonet.StorageBattery import StorageBattery  # noqa: E402

CLASSES = {"ecocute": ElectricWaterHeater, "battery": StorageBattery, "solar": HomeSolarPower}


def raw_numbers(model):
    """The raw integers on the wire for the model's measured properties
    (pychonet hands these out undecoded)."""
    out = {}
    for epc, value in model.values().items():
        spec = el.device_property_spec(model.eoj, epc)
        if spec is not None and spec.kind in ("uint", "int"):
            wire = el.encode_device_property(model.eoj, epc, value)
            out[epc] = int.from_bytes(wire, "big", signed=spec.kind == "int")
    return out


async def read_with_pychonet(client_addr, nodes):
    server = UDPServer(local_ip=client_addr)
    server.run(client_addr, 3610, loop=asyncio.get_running_loop())
    try:
        client = ECHONETAPIClient(server)
        client._logger = lambda *args: None
        client._message_timeout = 50                      # 5 s per request
        seen = {}
        for name, node in nodes.items():
            assert await client.discover(node.address)
            state = client._state[node.address]
            instance = CLASSES[name](node.address, client)
            assert await instance.getAllPropertyMaps()
            # 0x83 is left out: pychonet decodes it twice when asked through update()
            values = await instance.update(list(el.DEFAULT_EPCS[el.eoj_class(node.model.eoj)]))
            seen[name] = {"state": state, "values": values, "get_map": instance.getGetProperties()}
        battery = StorageBattery(nodes["battery"].address, client)
        seen["set_ok"] = await battery.setMessage(0xDA, 0x43)     # operation mode: discharging
        return seen
    finally:
        server.close()


def test_pychonet_discovers_and_reads_the_simulated_devices(fake_clock):
    client_addr, *node_addrs = addresses(4)
    nodes = {}
    try:
        for name, address in zip(("ecocute", "battery", "solar"), node_addrs):
            nodes[name] = LanNode(make_model(name), address, clock=fake_clock, multicast=False).start()
        seen = asyncio.run(asyncio.wait_for(read_with_pychonet(client_addr, nodes), 40))
    finally:
        for node in nodes.values():
            node.stop()
    for name, node in nodes.items():
        state, values = seen[name]["state"], seen[name]["values"]
        gc, cc, ci = node.model.eoj >> 16, (node.model.eoj >> 8) & 0xFF, node.model.eoj & 0xFF
        assert state["discovered"] and list(state["instances"]) == [gc]
        assert list(state["instances"][gc]) == [cc] and list(state["instances"][gc][cc]) == [ci]
        assert state["product_code"].rstrip("\x00 ") == "KEI-SIM"
        assert set(seen[name]["get_map"]) >= set(node.model.values()) - {0x88, 0x8A} | {0x9F}
        numbers = raw_numbers(node.model)
        assert numbers and {epc: values[epc] for epc in numbers} == numbers
        assert values[0x80] == "on"
    assert seen["ecocute"]["values"][0xB2] == "not heating"           # 14:00: the tank is not reheated
    assert seen["battery"]["values"][0xCF] == "charging"              # 14:00: charging from the sun
    assert seen["battery"]["values"][0xDA] == "auto"
    assert seen["battery"]["values"][0xD3] == 1500
    assert seen["solar"]["values"][0x84] is None                      # not in the solar object's Get map
    assert seen["set_ok"] and nodes["battery"].model.mode_setting == 0x43
