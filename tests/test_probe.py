"""``kei probe`` writes a masked transcript; ``sim://replay`` plays it back to the B-route reader."""

from __future__ import annotations

import os
import queue
import re
import uuid

import pytest

from keilib import probe, transcript
from keilib.broute import BrouteReader
from keilib.skstack import BP35C2, WiSunRL7023
from keilib.sim import protocol_sim
from keilib.sim.wisun import WisunModule
from support import wait_for

ROUTE_B_ID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "PASSWORD1234"
DRIVERS = {"bp35c2": lambda port: BP35C2(port),
           "ips": lambda port: WiSunRL7023(port, type=WiSunRL7023.IPS)}


@pytest.fixture
def registered():
    names = []

    def register(name, device):
        protocol_sim.register(name, device)
        names.append(name)

    yield register
    for name in names:
        device = protocol_sim.get_device(name)
        protocol_sim.forget(name)
        device.close()


def probe_values(text: str) -> dict:
    line = re.search(r"^# probe: values (.*)$", text, re.M).group(1)
    return dict(item.split("=") for item in line.split())


@pytest.mark.parametrize("kind", ["bp35c2", "ips"])      # raw payloads and hex payloads
def test_probe_transcript_is_masked_and_replays_to_the_same_readings(kind, tmp_path, monkeypatch, capsys,
                                                                     registered):
    monkeypatch.chdir(tmp_path)
    name = "probe-%s" % uuid.uuid4().hex[:8]
    module = WisunModule(kind=kind, route_b_id=ROUTE_B_ID, password=PASSWORD, latency="zero")
    registered(name, module)
    path = tmp_path / "transcript.txt"
    status = probe.main(["--port", "sim://wisun?name=" + name, "--device", kind, "--id", ROUTE_B_ID,
                         "--password", PASSWORD, "-o", str(path)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert str(path) in out and "bug report" in out
    assert not (tmp_path / "scancache.json").exists()    # the probe always scans, in a scratch dir

    text = path.read_text(encoding="utf-8")
    # Secrets and the meter's addresses are nowhere, in any form.
    for secret in (ROUTE_B_ID, PASSWORD, ROUTE_B_ID[-8:], ROUTE_B_ID.encode().hex().upper(),
                   module.meter_mac, module.meter_address):
        assert secret not in text, secret
    assert "> SKSETRBID <ROUTE-B-ID>\\r\\n" in text
    assert "  Addr:%s" % transcript.METER_MAC in text
    entries = transcript.parse(text.splitlines())
    times = [when for when, _, _ in entries]
    assert times == sorted(times)
    sent = [data for _, direction, data in entries if direction == ">"]
    for command in (b"SKVER", b"SKAPPVER", b"SKINFO", b"SKSREG", b"SKSCAN", b"SKJOIN", b"SKSENDTO", b"SKTERM"):
        assert any(data.startswith(command) for data in sent), command
    # one Get per property (after D3/D7/E1), as the reader frames them
    gets = [data for data in sent if data.startswith(b"SKSENDTO")]
    for epc in ["D3D7E1"] + [request["epc"][0] for request in probe.PROBE_REQUESTS]:
        opc = bytes([len(epc) // 2]) + b"".join(bytes.fromhex(epc[i:i + 2]) + b"\x00"
                                                for i in range(0, len(epc), 2))
        assert sum(1 for data in gets if data.endswith(b"\x62" + opc)) == 1, epc
    recorded = probe_values(text)
    assert recorded["E7"] != "U" and recorded["E0"] != "U"

    # Replay: the daemon's reader, other credentials, the probe's requests.
    replay = "replay-%s" % uuid.uuid4().hex[:8]
    records: "queue.Queue" = queue.Queue()
    reader = BrouteReader(wisundev=DRIVERS[kind]("sim://replay?name=%s&file=%s" % (replay, path)),
                          broute_id="F" * 32, broute_pwd="ANOTHERPWD12", requests=probe.PROBE_REQUESTS,
                          record_que=records, scan_cache=str(tmp_path / "replay-cache.json"))
    got = {}

    def drained() -> dict:
        while not records.empty():
            record = records.get_nowait()
            got[record.sensor] = record.value
        return got

    reader.start()
    try:
        wait_for(lambda: reader.health.states.get("link") == "POLL", timeout=20, message="POLL")
        expected = {sensor for sensor, value in recorded.items() if value != "U"}
        wait_for(lambda: expected <= set(drained()), timeout=20, message="the probe's readings")
    finally:
        reader.stop(timeout=10)
    device = protocol_sim.get_device(replay)
    try:
        assert {sensor: probe.oneshot.format_value(value) for sensor, value in got.items()} == \
            {sensor: value for sensor, value in recorded.items() if value != "U"}
        assert device.unmatched == []          # every command the reader sent was in the transcript
        assert device.position == len(device.entries)       # down to SKTERM's EVENT 27
    finally:
        protocol_sim.forget(replay)


def test_a_silent_module_still_gives_a_transcript_and_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    master, slave = os.openpty()
    try:
        status = probe.main(["--port", os.ttyname(slave), "--device", "dss", "--id", ROUTE_B_ID,
                             "--password", PASSWORD, "-o", "t.txt"])
    finally:
        os.close(master)
        os.close(slave)
    assert status == 1
    text = (tmp_path / "t.txt").read_text()
    assert "> SKVER\\r\\n" in text
    assert "the module does not answer" in text
    assert "bug report" in capsys.readouterr().out


def test_escaping_round_trips_every_byte():
    data = bytes(range(256)) + b"\\x41\r\n"
    assert transcript.unescape(transcript.escape(data)) == data
    assert "\n" not in transcript.escape(data) and "\r" not in transcript.escape(data)


def test_replay_refuses_a_missing_file_with_the_grammar(tmp_path):
    import serial
    with pytest.raises(serial.SerialException, match="cannot read transcript"):
        protocol_sim.Serial("sim://replay?file=%s" % (tmp_path / "none.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("not a transcript line\n")
    with pytest.raises(serial.SerialException, match="line 1"):
        protocol_sim.Serial("sim://replay?file=%s" % bad)
