"""keilog's own Wi-SUN driver reads E7, E8 and E0 through the simulator, over a real pty.

keilog (shared/reference/keilog, the program kei replaces) is loaded from
there at test time, never copied: its ``WiSunRL7023`` driver walks reset,
setup, the register dump (``SKSREG`` of every register in its table, taking
``split()[1]`` of each ``ESREG``), scan, SKLL64, join, SKSENDTO, ERXUDP and
SKTERM, for both kinds it supports (IPS and DSS).  Its ``BrouteReader._accept``
turns the answer into the records it would log.  Before the simulator's
register answers were made faithful, the DSS run died with IndexError on
``ESREG `` (an empty S0B).

One change to keilog's run: after its ``open()`` the port's read timeout is
cut from 1 s to 0.25 s.  keilog reads a register until ``OK`` or 6 lines, so
each register a single-stack IPS does not have (FAIL ER06: S0B, S1C, S1F,
SA9, SF0) costs it 4 read timeouts: 5 s here instead of 20 s.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import sys
import types

import pytest

from keilib.sim.transport import PtyTransport
from keilib.sim.wisun import WisunModule
from support import REPO

KEILOG = REPO.parent / "shared" / "reference" / "keilog"
ROUTE_B_ID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "PASSWORD1234"

# keilog's register table, by module kind: what each read must give.
DUAL_ONLY = {"S0B", "S1C", "S1F", "SA9", "SF0"}


def load_keilog_broute() -> types.ModuleType:
    """keilog's keilib/broute.py as module ``keilog_broute`` (its ``from
    keilib.worker import Worker`` finds kei's Worker, which it only subclasses)."""
    path = KEILOG / "keilib" / "broute.py"
    spec = importlib.util.spec_from_file_location("keilog_broute", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["keilog_broute"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def keilog():
    if not (KEILOG / "keilib" / "broute.py").is_file():
        pytest.skip("keilog's source is not beside the repository (../shared/reference/keilog)")
    return load_keilog_broute()


@pytest.mark.parametrize("kind", ["ips", "dss"])
def test_keilog_driver_reads_e7_e8_e0(keilog, kind, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)                    # keilog writes scancache.json here
    caplog.set_level(logging.INFO, logger="keilog_broute")
    module = WisunModule(kind=kind, route_b_id=ROUTE_B_ID, password=PASSWORD, latency="zero")
    transport = PtyTransport(module)
    driver_type = keilog.WiSunRL7023.DSS if kind == "dss" else keilog.WiSunRL7023.IPS
    device = keilog.WiSunRL7023(transport.slave_path, 115200, type=driver_type)
    try:
        assert device.open()
        device.ser.timeout = 0.25
        assert device.reset()
        assert device.setup(ROUTE_B_ID, PASSWORD)
        device._get_registers()                    # raised IndexError on DSS before
        expected_keys = set(keilog.reginfo) - (DUAL_ONLY if kind == "ips" else set())
        assert set(device.register) == expected_keys
        assert all(value for value in device.register.values())
        assert device.register["S01"] == module.mac
        assert device.register["S0A"] == ROUTE_B_ID[-8:]       # SKSETRBID sets it
        assert device.register["SFE"] == "1"
        if kind == "dss":
            assert device.register["S0B"] == "0" * 16
            assert device.register["SF0"] == "0"

        assert device.scan()
        assert device.ipv6_addr == module.meter_address
        assert (tmp_path / "scancache.json").is_file()
        assert device.join()

        frame = keilog.DataFrame.cmd_get_property(["E7", "E8", "E0"])
        assert device.sendto(frame)
        answer = None
        for _ in range(40):                        # the meter's INF may come first
            answer = device.receive()
            if answer is not None and answer.esv == "72":
                break
        assert answer is not None and answer.esv == "72", "no Get_Res from the meter"
        records: "queue.Queue[list]" = queue.Queue()
        reader = keilog.BrouteReader(device, ROUTE_B_ID, PASSWORD, record_que=records)
        reader._accept(answer)
        got = {}
        while not records.empty():
            unit, sensor, value, _ = records.get_nowait()
            assert unit == "BR"
            got[sensor] = value

        served = {item.epc: item.value for item in module.meter.served if item.esv == 0x72}
        assert got["E7"] == served[0xE7]
        assert got["E8R"] == pytest.approx(served[0xE8].r)
        assert got["E8T"] == pytest.approx(served[0xE8].t)
        # keilog's default unit (0.1 kWh, coefficient 1) is the simulated meter's
        assert got["E0"] == pytest.approx(served[0xE0] * 0.1)
        assert device.term()
    finally:
        if getattr(device, "ser", None) is not None:
            device.close()
        transport.close()
        module.close()
    log = caplog.text
    assert "EVENT: 25 - JOIN SUCCEED" in log and "EVENT: 27 - TERM SUCCEED" in log
