"""Argument checks (issue 17.3): keilib.validate, and ``kei.py --check`` on bad
configs of the readers, the checker and the Wi-SUN devices (real processes)."""

from __future__ import annotations

import math
import queue
import subprocess
import textwrap

import pytest

from keilib import validate
from keilib.errors import ConfigError
from support import PYTHON, REPO, subprocess_env

KEI = str(REPO / "kei.py")
ROUTE_B_ID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "PASSWORD1234"


# -- the helpers -------------------------------------------------------------------

@pytest.mark.parametrize("value, kwargs, message", [
    ("5", dict(minimum=0, maximum=10), "argument 'x' must be a number from 0 to 10, got '5'"),
    (True, dict(minimum=0, maximum=10), "got True"),
    (math.nan, dict(minimum=0, maximum=10), "got nan"),
    (math.inf, dict(), "argument 'x' must be a finite number, got inf"),
    (-5, dict(minimum=0), "argument 'x' must be a number of at least 0, got -5"),
    (10 ** 400, dict(maximum=100), "at most 100, got an integer of 401 digits"),
    (2.5, dict(minimum=1, maximum=9, integer=True), "must be an integer from 1 to 9, got 2.5"),
    (0, dict(minimum=0, maximum=9, exclusive_minimum=True), "must be a number above 0 and at most 9"),
])
def test_number_refuses_with_the_rule(value, kwargs, message):
    with pytest.raises(ConfigError) as info:
        validate.number("x", value, **kwargs)
    assert message in str(info.value)


def test_number_accepts_and_returns():
    assert validate.number("x", 3, 0, 10, integer=True) == 3
    assert validate.number("x", 0.5, 0, 1) == 0.5
    assert validate.number("x", 10 ** 20, 0) == 10 ** 20


@pytest.mark.parametrize("value", ["", "a.b", "a b", "日本", "a\x00", "x" * 81, "../x", 5, None])
def test_file_name_part_refuses_what_the_endpoint_refuses(value):
    with pytest.raises(ConfigError, match="argument 'fname_base' must be 1 to 80 letters, digits"):
        validate.file_name_part("fname_base", value)


def test_file_name_part_accepts_the_endpoints_names():
    for name in ("data", "my-log_2", "x" * 80):
        assert validate.file_name_part("fname_base", name) == name


def test_secret_never_shows_the_value():
    for bad in ("pässwörd1234", "PASS WORD123", "x" * 40):
        with pytest.raises(ConfigError) as info:
            validate.secret("broute_pwd", bad, range(1, 33), "the Route-B password")
        assert bad not in str(info.value) and "argument 'broute_pwd'" in str(info.value)


def test_text_choice_queue_flag():
    assert validate.text("port", "/dev/ttyUSB0", r"[^\x00]+") == "/dev/ttyUSB0"
    with pytest.raises(ConfigError, match="argument 'id' must be an id, got 'a b'"):
        validate.text("id", "a b", r"[a-z]+", "an id")
    with pytest.raises(ConfigError, match=r"at most 3 characters\), got 4 characters"):
        validate.text("id", "abcd", r"[a-z]+", "an id", max_length=3)
    with pytest.raises(ConfigError, match="argument 'type' must be one of 'IPS', 'DSS', got 'X'"):
        validate.choice("type", "X", ("IPS", "DSS"))
    with pytest.raises(ConfigError, match="argument 'upload_que' must be a queue.Queue, got list"):
        validate.a_queue("upload_que", [])
    assert validate.a_queue("upload_que", None, required=False) is None
    q = queue.Queue()
    assert validate.a_queue("upload_que", q) is q
    with pytest.raises(ConfigError, match="argument 'enabled' must be True or False, got 1"):
        validate.flag("enabled", 1)
    from keilib.clock import FakeClock
    fake = FakeClock()
    assert validate.clock("clock", fake) is fake
    with pytest.raises(ConfigError, match="argument 'clock' must be a clock"):
        validate.clock("clock", 60)


# -- kei.py --check ------------------------------------------------------------------

SERIAL = """
import queue
from keilib.recorder import FileRecorder
from keilib.serial import SerialReader, OutlierChecker

record_que = queue.Queue()
checker = OutlierChecker()
{setup}
worker_def = [
    {{'class': SerialReader, 'args': {{'port': {port}, 'baudrate': {baud}, 'record_que': record_que,
                                    'checker': checker}}}},
    {{'class': FileRecorder, 'args': {{'record_que': record_que}}}},
]
"""

BROUTE = """
import queue
from keilib.broute import BrouteReader
from keilib.recorder import FileRecorder
from keilib.skstack import WiSunRL7023, BP35A1

record_que = queue.Queue()
device = {device}
worker_def = [
    {{'class': BrouteReader, 'args': {{'wisundev': device, 'broute_id': {id}, 'broute_pwd': {pwd},
                                    'requests': {requests}, 'record_que': record_que{extra}}}}},
    {{'class': FileRecorder, 'args': {{'record_que': record_que}}}},
]
"""


def serial_config(setup="", port="'/dev/ttyUSB0'", baud="115200"):
    return SERIAL.format(setup=setup, port=port, baud=baud)


def broute_config(device="WiSunRL7023('/dev/ttyUSB0', 115200, type=WiSunRL7023.IPS)", id=repr(ROUTE_B_ID),
                  pwd=repr(PASSWORD), requests="[{'epc': ['E7'], 'cycle': 10}]", extra=""):
    return BROUTE.format(device=device, id=id, pwd=pwd, requests=requests, extra=extra)


BAD_CONFIGS = [
    ("baud_text", serial_config(baud="'fast'"),
     "keiconf.py: worker_def[0] (SerialReader): argument 'baudrate' must be an integer from 50 to 4000000, "
     "got 'fast'"),
    ("baud_huge", serial_config(baud="10 ** 400"),
     "(SerialReader): argument 'baudrate' must be an integer from 50 to 4000000, got an integer of 401 digits"),
    ("clock_text", serial_config().replace("'checker': checker}", "'checker': checker, 'clock': 'fast'}"),
     "(SerialReader): argument 'clock' must be a clock such as keilib.clock.ScaledClock(60), got 'fast'"),
    ("timeout_nan", broute_config(extra=", 'response_timeout': float('nan')"),
     "(BrouteReader): argument 'response_timeout' must be a number above 0 and at most 300, got nan"),
    ("port_nul", serial_config(port="'/dev/tty\\x00USB0'"),
     "(SerialReader): argument 'port' must be a device path or pyserial URL string, got '/dev/tty\\x00USB0'"),
    ("outlier_nan", serial_config(setup="checker.add('u1', 'temp', float('nan'), 50, 5)"),
     "keiconf.py:8: ConfigError: OutlierChecker.add('u1', 'temp'): argument 'min' must be a number from "
     "-1000000000000000 to 1000000000000000, got nan"),
    ("outlier_text", serial_config(setup="checker.add('u1', 'temp', 0, '50', 5)"),
     "OutlierChecker.add('u1', 'temp'): argument 'max' must be a number"),
    ("outlier_unit", serial_config(setup="checker.add('u 1', 'temp', 0, 50, 5)"),
     "OutlierChecker.add('u 1', 'temp'): argument 'unit' must be a unit id: letters, digits, '-' or '_'"),
    ("pwd_non_ascii", broute_config(pwd="'パスワード1234567'"),
     "keiconf.py: worker_def[0] (BrouteReader): argument 'broute_pwd' must be the Route-B password "
     "(12 characters): printable ASCII without spaces; character 1 is not"),
    ("id_short", broute_config(id="'0123'"),
     "(BrouteReader): argument 'broute_id' must be the 32-character Route-B ID, got 4 characters"),
    ("cycle_huge", broute_config(requests="[{'epc': ['E7'], 'cycle': 10 ** 400}]"),
     "(BrouteReader): argument 'requests'[0]: argument 'cycle' must be a number above 0 and at most 86400.0, "
     "got an integer of 401 digits (seconds)"),
    ("cycle_nan", broute_config(requests="[{'epc': ['E7'], 'cycle': float('nan')}]"),
     "argument 'cycle' must be a number above 0 and at most 86400.0, got nan"),
    ("device_baud", broute_config(device="BP35A1('/dev/ttyUSB0', 115200.5)"),
     "keiconf.py:8: ConfigError: argument 'baud' must be an integer from 50 to 4000000, got 115200.5"),
    ("device_type", broute_config(device="WiSunRL7023('/dev/ttyUSB0', 115200, type='B')"),
     "keiconf.py:8: ConfigError: argument 'type' must be one of 'IPS', 'DSS', got 'B'"),
]


@pytest.mark.parametrize("case, text, message", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_check_refuses_bad_arguments_with_exit_2(tmp_path, case, text, message):
    (tmp_path / "keiconf.py").write_text(textwrap.dedent(text))
    result = subprocess.run([PYTHON, KEI, "--check"], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr and ROUTE_B_ID not in result.stderr and "パスワード" not in result.stderr


def test_check_accepts_the_good_versions(tmp_path):
    for text in (serial_config(setup="checker.add('u1', 'temp', -40, 85, 5)"), broute_config()):
        (tmp_path / "keiconf.py").write_text(textwrap.dedent(text))
        result = subprocess.run([PYTHON, KEI, "--check"], cwd=tmp_path, env=subprocess_env(),
                                capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, result.stderr
