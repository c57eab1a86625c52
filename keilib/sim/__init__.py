"""The simulator: emulated devices behind a pty or a pyserial URL.

* ``keilib.sim.wisun``: an SKSTACK-IP Wi-SUN module (RL7023 IPS/DSS, BP35A1,
  BP35C0/C2) joined to a simulated smart meter (``keilib.sim.meter``).
* ``keilib.sim.transport``: the device interface (attach/receive/reset/close),
  the ``Scheduler`` devices use for delayed output, and ``PtyTransport``.
* ``keilib.sim.protocol_sim``: the ``sim://`` pyserial URL handler, e.g.
  ``serial.serial_for_url('sim://wisun?kind=ips&scale=60&name=x')``.
* ``keilib.sim.lan``: ECHONET Lite devices on the LAN (an EcoCute, a
  battery, a solar inverter), each a real UDP node on its own address, port
  3610; ``python3 -m keilib.sim lan --device solar --address 127.0.0.5``.
* ``python3 -m keilib.sim wisun --kind ips`` serves a module on a pty and
  prints its path.

Call ``register_url_handler()`` once before opening ``sim://`` URLs.
"""

from __future__ import annotations


def register_url_handler() -> None:
    """Make ``serial.serial_for_url('sim://...')`` work; safe to call repeatedly."""
    from keilib.ports import register_sim_urls

    register_sim_urls()
