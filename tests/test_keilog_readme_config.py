"""The config from keilog's README (seeds/000) runs unchanged on kei.

Only two things differ from the text the users copied: the port names the
simulator's pty instead of ``/dev/serial/by-id/xxxxx``, and the comma missing
after ``'wisundev': wisundev`` in that README is added (Python cannot read the
file without it; kei reports it with file and line, which is checked too).
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from support import PYTHON, REPO, read_text, subprocess_env, wait_for

ROUTE_B_ID = "x" * 32
ROUTE_B_PASSWORD = "x" * 12

KEILOG_README_CONFIG = """\
# keiconf.py

import queue
from keilib.recorder import FileRecorder
from keilib.broute   import BrouteReader, WiSunRL7023

# オブジェクト(スレッド)間で通信を行うための Queue
record_que = queue.Queue(50)

# WiSunデバイスの定義
# type 引数でドングルの種類(DSS/IPS)を指定する
wisundev = WiSunRL7023(port='/dev/serial/by-id/xxxxx',
                            baud=115200,
                            type=WiSunRL7023.IPS
                            #type=WiSunRL7023.DSS
                        )

# 動作させるオブジェクトの構成
worker_def = [
    {
        'class': FileRecorder,                  # FileRecorderオブジェクトを作成
        'args': {                               # 引数
            'fname_base': 'mydatafile',         # 記録ファイルの名前に使われる文字列
            'record_que': record_que            # 記録するデータをやり取りする Queue
        }
    },
    {
        'class': BrouteReader,                  # BrouteReaderオブジェクトを作成
        'args': {                               # 引数
            'wisundev': wisundev                # デバイスドライバの指定
            'broute_id': 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx',
                                                # BルートID(電力会社に申請)
            'broute_pwd': 'xxxxxxxxxxxx',       # Bルートパスワード(電力会社に申請)
            'requests':[                        # 取得するプロパティ値の定義
                { 'epc':['D3','D7','E1'], 'cycle': 3600 },
                                                #   積算電力量用 係数(D3),有効桁数(D7),単位(E1),3600秒ごと
                { 'epc':['E7'], 'cycle': 10 },  #   瞬時電力(E7),10秒ごと
                { 'epc':['E0','E3'], 'cycle': 300 },
                                                #   積算電力量(E0,E3),300秒ごと
            ],
            'record_que': record_que            # 記録するデータをやり取りする Queue
        }
    },
]
"""
MISSING_COMMA = "'wisundev': wisundev                # デバイスドライバの指定"


def test_the_readme_text_as_published_is_reported_with_file_and_line(tmp_path):
    (tmp_path / "keiconf.py").write_text(KEILOG_README_CONFIG, encoding="utf-8")
    result = subprocess.run([PYTHON, str(REPO / "kei.py"), "--check"], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    line = KEILOG_README_CONFIG.splitlines().index(
        "            'broute_id': 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx',") + 1
    # Python blames the line after the missing comma (3.10+ may name the one before).
    assert ("keiconf.py:%d:" % line in result.stderr
            or "keiconf.py:%d:" % (line - 1) in result.stderr), result.stderr
    assert "syntax" in result.stderr


@pytest.mark.parametrize("module_type", ["IPS", "DSS"])
def test_keilog_readme_config_records_on_the_simulator(tmp_path, module_type):
    kind = module_type.lower()
    sim = subprocess.Popen([sys.executable, "-m", "keilib.sim", "wisun", "--kind", kind, "--latency", "zero",
                            "--id", ROUTE_B_ID, "--password", ROUTE_B_PASSWORD,
                            "--option", "reverse=1"],           # so that E3 has a value
                           cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        pty = sim.stdout.readline().strip()
        assert pty.startswith("/dev/pts/"), pty
        config = (KEILOG_README_CONFIG
                  .replace("/dev/serial/by-id/xxxxx", pty)
                  .replace(MISSING_COMMA, MISSING_COMMA.replace("wisundev ", "wisundev,")))
        if module_type == "DSS":   # the README's commented-out alternative
            config = config.replace("type=WiSunRL7023.IPS\n", "#type=WiSunRL7023.IPS\n", 1)
            config = config.replace("#type=WiSunRL7023.DSS", "type=WiSunRL7023.DSS", 1)
        (tmp_path / "keiconf.py").write_text(config, encoding="utf-8")
        kei = subprocess.Popen([PYTHON, str(REPO / "kei.py")], cwd=tmp_path, env=subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            def raw() -> str:
                return "".join(read_text(p) for p in tmp_path.glob("2*-mydatafile.txt"))
            wait_for(lambda: all(",BR,%s," % s in raw() for s in ("E7", "E0", "E3")), timeout=30)
            kei.send_signal(signal.SIGTERM)
            assert kei.wait(timeout=10) == 0
        finally:
            kei.kill()
            out, err = kei.communicate()
        assert err == ""
        lines = raw().splitlines()
        # keilog's line format: date time, BR, EPC, value, x
        assert all(line.split(",")[1] == "BR" and line.split(",")[4] == "x" for line in lines), lines[:5]
        log = read_text(tmp_path / "kei.log")
        assert ("Stick-D/%s" % module_type) in log
        # read at join and by the config's own D3/D7/E1 request: told once
        assert log.count("energy unit 0.1 kWh, coefficient 1, 6 digits") == 1
        assert ROUTE_B_ID not in log and ROUTE_B_PASSWORD not in log
        assert list(tmp_path.glob("sum2*-mydatafile.txt"))
    finally:
        sim.terminate()
        sim.wait(timeout=10)
