"""systemd/kei.service: the keys the README promises, and systemd's own verdict on it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from support import REPO

UNIT = REPO / "systemd" / "kei.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def parse_unit(text: str) -> Dict[str, Dict[str, List[str]]]:
    """Sections of a unit file: {section: {key: [values in order]}} (keys may repeat)."""
    sections: Dict[str, Dict[str, List[str]]] = {}
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, "line %d: %r" % (number, line)
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit():
    return parse_unit(UNIT.read_text())


def test_runs_kei_as_a_non_root_user_with_serial_access(unit):
    service = unit["Service"]
    assert service["User"] == ["kei"] and service["Group"] == ["kei"]
    assert "dialout" in " ".join(service["SupplementaryGroups"]).split()
    assert service["WorkingDirectory"] == ["/var/lib/kei"]
    assert service["StateDirectory"] == ["kei"]
    assert service["ExecStart"] == ["/usr/bin/python3 /opt/kei/kei.py"]


def test_restart_and_stop_behaviour(unit):
    service = unit["Service"]
    assert service["Restart"] == ["on-failure"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["TimeoutStopSec"] == ["20"]


def test_hardening_that_keeps_the_serial_ports(unit):
    service = unit["Service"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["ProtectSystem"] == ["full"]
    assert service["PrivateTmp"] == ["yes"]
    # Any of these would hide or deny /dev/ttyUSB* and /dev/serial/by-id/*.
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "DynamicUser", "PrivateUsers"):
        assert key not in service, key
    # The work directory must stay writable: ProtectSystem=full leaves /var
    # alone, and ProtectHome only matters for a work directory under /home.
    assert not service["WorkingDirectory"][0].startswith(("/usr", "/etc", "/boot", "/home"))


def test_notify_type_and_watchdog(unit):
    service = unit["Service"]
    assert service["Type"] == ["notify"]            # kei sends READY=1 (keilib/sdnotify.py)
    assert service["NotifyAccess"] == ["main"]
    # longer than kei's ping interval (half of it) and shorter than the wedge
    # rule's 300 s, so a wedged kei is restarted within 7 minutes
    assert 10 <= int(service["WatchdogSec"][0]) <= 300
    # a watchdog kill must lead to a restart
    assert service["Restart"][0] in ("on-failure", "on-watchdog", "on-abnormal", "always")


def test_ordering_and_install(unit):
    assert "network-online.target" in unit["Unit"]["After"][0].split()
    assert "network-online.target" in unit["Unit"]["Wants"][0].split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_the_launcher_the_unit_starts_exists():
    assert (REPO / "kei.py").is_file()


def _verify(unit_text: str, directory: Path) -> subprocess.CompletedProcess:
    if not Path("/usr/bin/python3").exists():     # e.g. a virtualenv-only image
        unit_text = unit_text.replace("/usr/bin/python3", sys.executable)
    path = directory / "kei.service"
    path.write_text(unit_text)
    return subprocess.run([SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_it(tmp_path):
    result = _verify(UNIT.read_text(), tmp_path)
    # verify exits 0 on settings it ignores with a warning: no output at all, then.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_would_notice_a_mistake(tmp_path):
    broken = UNIT.read_text().replace("Restart=on-failure", "Restart=sometimes")
    result = _verify(broken, tmp_path)
    assert "sometimes" in result.stdout + result.stderr


def test_install_script_sets_up_the_service_in_one_command(tmp_path):
    """systemd/install.sh with its places moved into a temporary directory:
    the config lands owned and private, the unit points at this clone, and
    systemd is asked to reload, enable and start it."""
    import os
    if os.geteuid() != 0:
        pytest.skip("the install script runs as root")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("the unit runs the system's /usr/bin/python3, which this system lacks")
    state, units = tmp_path / "state", tmp_path / "units"
    units.mkdir()
    calls = tmp_path / "systemctl-calls"
    fake_systemctl = tmp_path / "systemctl"
    fake_systemctl.write_text('#!/bin/sh\necho "$*" >> %s\n' % calls)
    fake_systemctl.chmod(0o755)
    config = tmp_path / "keiconf.py"
    config.write_text((REPO / "keiconf_serial.py").read_text())
    env = dict(os.environ, KEI_USER="root", KEI_STATE_DIR=str(state), KEI_UNIT_DIR=str(units),
               KEI_SYSTEMCTL=str(fake_systemctl))
    result = subprocess.run(["sh", str(REPO / "systemd" / "install.sh"), str(config)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    installed = state / "keiconf.py"
    assert installed.read_text() == config.read_text()
    assert oct(installed.stat().st_mode & 0o777) == "0o640"           # it holds the password
    unit_text = (units / "kei.service").read_text()
    assert "ExecStart=/usr/bin/python3 %s/kei.py" % REPO in unit_text
    assert "WorkingDirectory=%s" % state in unit_text and "User=root" in unit_text
    assert calls.read_text().splitlines() == ["daemon-reload", "enable --now kei"]
    assert "Its log: tail -f %s/kei.log" % state in result.stdout
    assert "ProtectHome=yes" in unit_text                 # a clone outside /home stays hidden from it
    # The code is byte-compiled for the system's Python: the service user may
    # not write __pycache__ in the clone, and would compile at every start.
    tag = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(sys.implementation.cache_tag)"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    assert (REPO / "keilib" / "__pycache__" / ("daemon.%s.pyc" % tag)).is_file()
    # A second run keeps the config it finds (never overwrites a user's edits).
    installed.write_text(installed.read_text() + "# edited on the box\n")
    again = subprocess.run(["sh", str(REPO / "systemd" / "install.sh"), str(config)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "keeping the config" in again.stdout
    assert installed.read_text().endswith("# edited on the box\n")
    # A config that does not pass --check stops the install before systemd is asked.
    (state / "keiconf.py").write_text("worker_def = []\n")
    (units / "kei.service").unlink()
    bad = subprocess.run(["sh", str(REPO / "systemd" / "install.sh")], env=env, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 1 and "does not pass kei.py --check" in bad.stderr
    assert not (units / "kei.service").exists()


def test_install_script_keeps_a_clone_in_home_readable(tmp_path):
    """ProtectHome=yes would hide /home/pi/kei from the service: a clone there
    gets ProtectHome=read-only."""
    import os
    import shutil
    import tempfile
    if os.geteuid() != 0:
        pytest.skip("the install script runs as root")
    if not Path("/usr/bin/python3").exists() or not Path("/home").is_dir():
        pytest.skip("needs the system's /usr/bin/python3 and a /home")
    home_clone = Path(tempfile.mkdtemp(prefix="kei-install-test-", dir="/home"))
    try:
        clone = home_clone / "kei"
        shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(
            ".git", ".venv", "test-artifacts", "__pycache__", "demo-data", "*.log"))
        state, units = tmp_path / "state", tmp_path / "units"
        units.mkdir()
        fake_systemctl = tmp_path / "systemctl"
        fake_systemctl.write_text("#!/bin/sh\nexit 0\n")
        fake_systemctl.chmod(0o755)
        config = tmp_path / "keiconf.py"
        config.write_text((REPO / "keiconf_serial.py").read_text())
        env = dict(os.environ, KEI_USER="root", KEI_STATE_DIR=str(state), KEI_UNIT_DIR=str(units),
                   KEI_SYSTEMCTL=str(fake_systemctl))
        result = subprocess.run(["sh", str(clone / "systemd" / "install.sh"), str(config)], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        unit_text = (units / "kei.service").read_text()
        assert "ExecStart=/usr/bin/python3 %s/kei.py" % clone in unit_text
        assert "ProtectHome=read-only" in unit_text and "ProtectHome=yes" not in unit_text
    finally:
        shutil.rmtree(home_clone, ignore_errors=True)
