"""The shipped keiconf_broute.py runs against the simulator with only its port line changed."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

from support import PYTHON, REPO, read_text, subprocess_env, wait_for


def test_example_config_runs_on_the_simulator_and_stops_on_term(tmp_path):
    sim = subprocess.Popen([sys.executable, "-m", "keilib.sim", "wisun", "--kind", "ips", "--latency", "zero"],
                           cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        slave = sim.stdout.readline().strip()
        assert slave.startswith("/dev/pts/"), slave
        text = (REPO / "keiconf_broute.py").read_text()
        changed, count = re.subn(r"^PORT = .*$", "PORT = %r" % slave, text, flags=re.M)
        assert count == 1
        (tmp_path / "keiconf.py").write_text(changed)
        check = subprocess.run([PYTHON, str(REPO / "kei.py"), "--check"], cwd=tmp_path, env=subprocess_env(),
                               capture_output=True, text=True, timeout=20)
        assert check.returncode == 0, check.stderr
        kei = subprocess.Popen([PYTHON, str(REPO / "kei.py")], cwd=tmp_path, env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            raw = lambda: "".join(read_text(p) for p in tmp_path.glob("2*-mylogfile.txt"))  # noqa: E731
            wait_for(lambda: ",BR,E7," in raw() and ",BR,E0," in raw(), timeout=30)
            assert ",BR,E8R," in raw()
            sent = time.monotonic()
            kei.send_signal(signal.SIGTERM)
            assert kei.wait(timeout=10) == 0
            assert time.monotonic() - sent < 2.0
        finally:
            kei.kill()
            kei.communicate()
        log = read_text(tmp_path / "kei.log")
        assert "session terminated (SKTERM)" in log
        assert "0123456789AB" not in log and "00112233445566778899AABBCCDDEEFF" not in log
        assert list(tmp_path.glob("sum*-mylogfile.txt"))          # the open window, written at stop
    finally:
        sim.terminate()
        sim.wait(timeout=10)
