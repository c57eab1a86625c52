"""Non-finite and absurd values (issue 17.4) never reach a file, an average or
an upload: kei.py reads them from a real pty and writes only the sane ones."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import textwrap
import tty

from support import PYTHON, REPO, read_text, subprocess_env, wait_for

KEI = str(REPO / "kei.py")

CONFIG = """
import queue
from keilib.recorder import FileRecorder
from keilib.serial import SerialReader

record_que = queue.Queue()
worker_def = [
    {'class': SerialReader, 'args': {'port': %(port)r, 'baudrate': 9600, 'record_que': record_que}},
    {'class': FileRecorder, 'args': {'record_que': record_que, 'fname_base': 'range'}},
]
"""


def test_huge_values_are_bad_lines_and_the_average_stays_finite(tmp_path):
    master, slave = os.openpty()
    tty.setraw(slave)
    port = str(tmp_path / "usb-sensor-if00-port0")
    os.symlink(os.ttyname(slave), port)
    (tmp_path / "keiconf.py").write_text(textwrap.dedent(CONFIG % {"port": port}))
    proc = subprocess.Popen([PYTHON, KEI], cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "kei.log"

    def raw_values():
        return [line.split(",")[3] for path in tmp_path.glob("2*-range.txt")
                for line in read_text(path).splitlines()]

    try:
        wait_for(lambda: "opened at 9600 baud" in read_text(log), timeout=15)
        # (A first newline: bytes this soon after the open may be a line's tail and are discarded.)
        os.write(master, b"\nu1,big,1.7e308\nu1,big,1.7e308\n"        # the pair: mean inf
                         b"u1,big," + b"9" * 240 + b"\n"              # a 240-digit integer (fits the line limit)
                         b"u1,big,1e15\nu1,big,-1000000000000000\n"    # just out of range
                         b"u1,big,999999999999999\nu1,big,-999999999999999\nu1,big,6\n")
        wait_for(lambda: len(raw_values()) == 3, timeout=10, message="the three sane readings")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()
        os.close(master)
        os.close(slave)
    assert raw_values() == ["999999999999999", "-999999999999999", "6"]
    text = read_text(log)
    assert len(re.findall(r"WARNING - port \S+: skipped invalid line .* is out of range", text)) == 5
    assert "value 99999999999999999999... (240 characters) is out of range" in text   # not all 240 shown
    sums = [line for path in tmp_path.glob("sum*-range.txt") for line in read_text(path).splitlines()]
    assert len(sums) == 1 and sums[0].endswith(",u1,big,2.0"), sums     # (1e15-1 - (1e15-1) + 6) / 3
    assert not re.search(r"inf|nan", sums[0], re.IGNORECASE)
