"""A real Route-B client nobody here wrote -- momonga 0.7.0 from PyPI -- against the
emulator on a real pseudo-terminal.

momonga needs Python >= 3.11; on older Pythons this module is reported as
skipped (with the reason), never as passed.
"""

from __future__ import annotations

import threading
from importlib import metadata

import pytest

momonga = pytest.importorskip("momonga", reason="momonga 0.7.0 needs Python >= 3.11 "
                              "(pip install momonga==0.7.0)")
if metadata.version("momonga") != "0.7.0":   # the package has no __version__
    pytest.skip("momonga %s installed, these tests pin 0.7.0" % metadata.version("momonga"),
                allow_module_level=True)

from keilib.sim.meter import SmartMeter  # noqa: E402
from keilib.sim.transport import PtyTransport  # noqa: E402
from keilib.sim.wisun import WisunModule  # noqa: E402

ROUTE_B_ID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "ABCDEFGHIJKL"


KINDS = ("bp35c2", "bp35a1", "ips", "dss")   # bp35c2: momonga's documented target


def _last_served(meter: SmartMeter, epc: int):
    """The last (time, value) the meter model sent for ``epc``."""
    served = [item for item in meter.served if item.epc == epc]
    assert served, "the meter never served EPC %02X" % epc
    return served[-1].time, served[-1].value


def _session(kind: str) -> dict:
    """Open, read E7/E8/E0 and close with momonga against one emulated module."""
    meter = SmartMeter(seed=7, start_kwh=1314.0)
    module = WisunModule(kind=kind, meter=meter, route_b_id=ROUTE_B_ID, password=PASSWORD,
                         latency="zero", seed=3, scan_min=6)
    with PtyTransport(module) as pty:
        client = momonga.Momonga(ROUTE_B_ID, PASSWORD, pty.slave_path)
        client.internal_xmit_interval = 0       # no 5 s pacing: the emulator needs none
        client.open()
        try:
            joined = module.session_up
            result = {"power": client.get_instantaneous_power(),
                      "current": client.get_instantaneous_current(),
                      "energy": client.get_measured_cumulative_energy()}
        finally:
            client.close()
        result.update(meter=meter, joined=joined, ended=not module.session_up)
    return result


def test_momonga_reads_power_current_and_energy_on_every_kind():
    # momonga's open() waits for 2 s of line silence, so the kinds run side by side.
    results, errors = {}, {}

    def run(kind):
        try:
            results[kind] = _session(kind)
        except Exception as exc:  # noqa: BLE001 - reported per kind below
            errors[kind] = exc

    threads = [threading.Thread(target=run, args=(kind,)) for kind in KINDS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(45)
    assert not errors, "momonga failed on: %r" % errors
    assert sorted(results) == sorted(KINDS)

    for kind, result in results.items():
        meter = result["meter"]
        assert result["joined"] and result["ended"], kind     # SKJOIN -> 25, SKTERM -> 27
        when, watts = _last_served(meter, 0xE7)
        assert result["power"] == watts == meter.power_w(when), kind
        when, currents = _last_served(meter, 0xE8)
        assert currents == meter.currents_a(when)
        assert result["current"]["r phase current"] == pytest.approx(currents.r), kind
        assert result["current"]["t phase current"] == pytest.approx(currents.t), kind
        when, raw = _last_served(meter, 0xE0)
        assert raw == meter.energy_raw(when)
        # raw x D3 (1) x E1 (0.1 kWh), as momonga converts with what it read at open
        assert float(result["energy"]) == pytest.approx(raw * 0.1), kind
        assert 1314.0 <= float(result["energy"]) < 1320.0, kind
