"""keilib.sim.lan: the device models' day, the node on the wire, the CLI, the
demo devices, and the shipped keiconf_lan.py against simulated devices."""

from __future__ import annotations

import datetime
import queue
import random
import re
import signal
import socket
import subprocess

from keilib import echonet as el
from keilib.sim.lan import BatteryModel, EcoCuteModel, LanNode, SolarModel, demo_worker_defs, make_model
from lanaddr import addresses
from support import PYTHON, REPO, read_text, subprocess_env, wait_for

DAY = datetime.datetime(2026, 5, 20, 0, 0, 0)


def at(model, hour, minute=0):
    model.advance(DAY.replace(hour=hour, minute=minute))
    return model.values()


def test_ecocute_reheats_at_night_and_hot_water_is_drawn_in_the_evening():
    model = EcoCuteModel()
    at(model, 0)
    evening_start = at(model, 19)[0xE1]
    after_bath = at(model, 22)
    assert after_bath[0xE1] < evening_start and after_bath[0xB2] is False
    model.advance(DAY + datetime.timedelta(days=1, hours=2))          # the next night
    heating = model.values()
    assert heating[0xB2] is True and heating[0x84] == EcoCuteModel.HEAT_POWER_W
    model.advance(DAY + datetime.timedelta(days=1, hours=5))
    morning = model.values()
    assert morning[0xE1] > after_bath[0xE1] and morning[0xC1] > 55
    assert morning[0x85] > after_bath[0x85]                   # energy only grows
    model.advance(DAY + datetime.timedelta(days=1, hours=7, minutes=30))
    assert model.values()[0xC3] is True                       # supplying hot water in the morning


def test_battery_charges_by_day_and_discharges_in_the_evening():
    model = BatteryModel()
    at(model, 8)
    assert model.values()[0xCF].code == 0x44                  # standby before 09:00
    noon = at(model, 12)
    assert noon[0xCF].code == 0x42 and noon[0xD3] == 1500 and noon[0xE4] > 50
    evening = at(model, 20)
    assert evening[0xCF].code == 0x43 and evening[0xD3] == -1000
    late = at(model, 23, 59)
    assert late[0xE2] < evening[0xE2] and late[0xD6] > noon[0xD6] and late[0xD8] >= noon[0xD8]
    assert model.set(0xDA, el.Code(0x44, "")) and not model.set(0xDA, el.Code(0x45, ""))


def test_solar_follows_the_sun():
    model = SolarModel()
    assert at(model, 3)[0xE0] == 0
    morning = at(model, 9)
    noon = at(model, 12)
    assert 0 < morning[0xE0] < noon[0xE0] == 4500
    evening = at(model, 19)
    assert evening[0xE0] == 0
    assert evening[0xE1] - noon[0xE1] > 10 and evening[0xE3] < evening[0xE1]


def exchange(sock, frame, to):
    sock.sendto(frame.encode(), to)
    return el.Frame.decode(sock.recvfrom(2048)[0])


def test_node_answers_get_setc_seti_and_inf_req(fake_clock):
    node_addr, me = addresses(2)
    node = LanNode(make_model("battery"), node_addr, clock=fake_clock, multicast=False).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((me, 3610))
            sock.settimeout(5)
            to = (node_addr, 3610)
            got = exchange(sock, el.get_request(1, [0xE4, 0xB0], deoj=el.STORAGE_BATTERY), to)
            assert got.esv == el.ESV.GET_SNA and got.tid == 1 and got.seoj == el.STORAGE_BATTERY
            assert got.value(0xE4) == 50 and got.find(0xB0).edt == b""
            got = exchange(sock, el.set_request(2, [(0xDA, b"\x45")], deoj=el.STORAGE_BATTERY), to)
            assert got.esv == el.ESV.SETC_SNA and got.find(0xDA).edt == b"\x45"    # test mode: refused
            got = exchange(sock, el.set_request(3, [(0xDA, b"\x44")], deoj=el.STORAGE_BATTERY), to)
            assert got.esv == el.ESV.SET_RES and got.find(0xDA).edt == b""
            seti = el.Frame(4, el.CONTROLLER, el.STORAGE_BATTERY, el.ESV.SETI, (el.Property(0xDA, b"\x46"),))
            sock.sendto(seti.encode(), to)                                        # no answer when accepted
            got = exchange(sock, el.inf_request(5, [0xDA], deoj=el.STORAGE_BATTERY), to)
            assert got.esv == el.ESV.INF and got.value(0xDA).code == 0x46
            got = exchange(sock, el.get_request(6, [0xD6, 0x8C, 0x83], deoj=el.NODE_PROFILE), to)
            assert got.value(0xD6) == (el.STORAGE_BATTERY,) and got.value(0x8C) == "KEI-SIM"
            sock.sendto(b"\x10\x81garbage", to)                                   # ignored
            got = exchange(sock, el.get_request(7, [0x80], deoj=el.STORAGE_BATTERY), to)
            assert got.tid == 7 and got.value(0x80) is True
    finally:
        node.stop()


def test_cli_serves_a_node_until_sigterm():
    node_addr, me = addresses(2)
    sim = subprocess.Popen([PYTHON, "-m", "keilib.sim", "lan", "--device", "ecocute", "--address", node_addr,
                            "--no-multicast"], cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout.readline().strip() == "%s:3610" % node_addr
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((me, 3610))
            sock.settimeout(5)
            got = exchange(sock, el.get_request(1, [0xE2, 0xE1], deoj=el.WATER_HEATER), (node_addr, 3610))
        assert got.esv == el.ESV.GET_RES and got.value(0xE2) == 370 and 0 <= got.value(0xE1) <= 370
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(timeout=10) == 0
    finally:
        sim.kill()
        sim.wait()


def test_cli_refuses_an_unknown_device():
    done = subprocess.run([PYTHON, "-m", "keilib.sim", "lan", "--device", "fridge", "--address", "127.0.0.1"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=20)
    assert done.returncode == 2 and "fridge" in done.stderr


def test_demo_worker_defs_run_the_devices_and_the_reader(fake_clock):
    record_que = queue.Queue()
    entries = demo_worker_defs(record_que, fake_clock, random.Random(7))
    assert [entry["class"].__name__ for entry in entries] == ["LanDemoDevices", "EchonetLanReader"]
    assert entries[1]["args"]["address"] == entries[0]["args"]["reader_address"]
    workers = [entry["class"](**entry["args"]) for entry in entries]
    for worker in workers:
        worker.start()
    try:
        records = []

        def units():
            while not record_que.empty():
                records.append(record_que.get())
            return {r.unit for r in records}
        wait_for(lambda: units() == {"ecocute", "battery", "solar"}, timeout=10)
    finally:
        for worker in workers:
            worker.stop()
    assert workers[0].demo is not None and all(not node.sockets for node in workers[0].demo.nodes)


def test_demo_check_binds_nothing(fake_clock):
    """Building the entries (what --check does) starts no node."""
    entries = demo_worker_defs(queue.Queue(), fake_clock, random.Random(8))
    device_addr = entries[0]["args"]["devices"][0][1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((device_addr, 3610))               # exclusive: fails if anything holds it


def test_example_config_reads_simulated_devices(tmp_path):
    reader_addr, *node_addrs = addresses(4)
    sims = [subprocess.Popen([PYTHON, "-m", "keilib.sim", "lan", "--device", device, "--address", address,
                              "--no-multicast"], cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
            for device, address in zip(("ecocute", "battery", "solar"), node_addrs)]
    try:
        for sim in sims:
            assert sim.stdout.readline().strip().endswith(":3610")
        text = (REPO / "keiconf_lan.py").read_text()
        text, n1 = re.subn(r"^DEVICES = .*$", "DEVICES = %r" % node_addrs, text, flags=re.M)
        text, n2 = re.subn(r"^ADDRESS = .*$", "ADDRESS = %r" % reader_addr, text, flags=re.M)
        text, n3 = re.subn(r"'discover': True", "'discover': False", text)
        assert (n1, n2, n3) == (1, 1, 1)
        (tmp_path / "keiconf.py").write_text(text)
        check = subprocess.run([PYTHON, str(REPO / "kei.py"), "--check"], cwd=tmp_path, env=subprocess_env(),
                               capture_output=True, text=True, timeout=20)
        assert check.returncode == 0, check.stderr
        kei = subprocess.Popen([PYTHON, str(REPO / "kei.py")], cwd=tmp_path, env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            raw = lambda: "".join(read_text(p) for p in tmp_path.glob("2*-home.txt"))  # noqa: E731
            # every device's switch state and one measured property each (their
            # Get answers come in any order, so wait for all of them)
            wait_for(lambda: all(text in raw() for text in (
                ",ecocute,80,1,", ",battery,80,1,", ",solar,80,1,", ",battery,E4,", ",solar,E1,", ",ecocute,E1,")),
                     timeout=30)
            kei.send_signal(signal.SIGTERM)
            assert kei.wait(timeout=10) == 0
        finally:
            kei.kill()
            kei.communicate()
    finally:
        for sim in sims:
            sim.terminate()
            sim.wait(timeout=10)
