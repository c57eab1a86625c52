"""SKSENDTO Get E7 round trips per second through the emulator; prints figures.

    python3 bench/bench_sim_roundtrip.py [seconds-per-case]

A host opens the pty slave with pyserial (the kernel tty path), as kei's
B-route reader does, and repeats: SKSENDTO Get E7 -> EVENT 21, OK, ERXUDP
Get_Res, with latency 'zero' (no simulated radio delays), so the figure is the
emulator's own cost plus the tty.  The same loop over ``sim://`` (in process)
is shown for comparison.  A real module manages about 1-3 round trips per
second (section 9.3: 0.35-0.8 s each), so the emulator must be far faster.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import serial  # noqa: E402

import keilib.sim  # noqa: E402
from keilib.sim import protocol_sim  # noqa: E402
from keilib.sim.transport import PtyTransport  # noqa: E402
from keilib.sim.wisun import WisunModule  # noqa: E402

RBID = "00112233445566778899AABBCCDDEEFF"
PWD = "0123456789AB"


def read_until(port: serial.SerialBase, buf: bytearray, marker: bytes) -> None:
    while marker not in buf:
        chunk = port.read(port.in_waiting or 1)
        if not chunk:
            raise RuntimeError("emulator went quiet; have %r" % bytes(buf[-200:]))
        buf += chunk


def round_trips(port: serial.SerialBase, module: WisunModule, seconds: float) -> float:
    buf = bytearray()
    side = b" 0" if module.kind.dual else b""
    if module.kind.product_commands:
        port.write(b"WOPT 01\r")                      # hex ERXUDP, as clients set it
        read_until(port, buf, b"OK\r")
    port.write(b"SKSREG SFE 0\r\nSKSETRBID %s\r\nSKSETPWD C %s\r\nSKSREG S2 %02X\r\n"
               b"SKSREG S3 %04X\r\nSKJOIN %s\r\n"
               % (RBID.encode(), PWD.encode(), module.channel, module.pan_id,
                  module.meter_address.encode()))
    read_until(port, buf, b"EVENT 25")
    read_until(port, buf, b"D50401028801\r\n")      # the instance-list INF
    buf.clear()
    count, tid = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        tid = (tid + 1) & 0xFFFF
        frame = b"\x10\x81" + tid.to_bytes(2, "big") + bytes.fromhex("05FF010288016201E700")
        port.write(b"SKSENDTO 1 %s 0E1A 1%s %04X " % (module.meter_address.encode(), side, len(frame))
                   + frame)
        read_until(port, buf, b"\r\nERXUDP ")
        read_until(port, buf, b"E704")
        read_until(port, buf, b"\r\n")
        del buf[:]
        count += 1
    return count / (time.perf_counter() - started)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    print("SKSENDTO Get E7 round trips, latency 'zero', %.0f s per case" % seconds)
    for kind in ("ips", "bp35c2"):
        module = WisunModule(kind=kind, latency="zero", route_b_id=RBID, password=PWD)
        with PtyTransport(module) as pty:
            port = serial.Serial(pty.slave_path, 115200, timeout=2)
            try:
                print("  pty   %-7s %8.0f round trips/s" % (kind, round_trips(port, module, seconds)))
            finally:
                port.close()
    keilib.sim.register_url_handler()
    url = "sim://wisun?kind=ips&latency=zero&id=%s&password=%s&name=bench" % (RBID, PWD)
    port = serial.serial_for_url(url, timeout=2)
    try:
        rate = round_trips(port, protocol_sim.get_device("bench"), seconds)
        print("  sim:// %-7s %7.0f round trips/s" % ("ips", rate))
    finally:
        port.close()
        protocol_sim.forget_all()


if __name__ == "__main__":
    main()
