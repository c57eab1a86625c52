# keiconf_broute.py -- smart meter over Route B -> daily files (+ upload)
#
# Copy to keiconf.py in your work directory and edit:
#     cp keiconf_broute.py keiconf.py
#     python3 kei.py --check        # validates this file, starts nothing
#     python3 kei.py
#
# Bルート（スマートメーター）の値をファイルに記録する設定例です。
# keiconf.py という名前でコピーし、ポート・BルートID・パスワードを書き換えてください。
#
# To try it with no hardware, start the built-in simulator in another terminal
#     python3 -m keilib.sim wisun --kind ips
# and put the path it prints (e.g. /dev/pts/7) on the PORT line below, or use
# PORT = 'sim://wisun?kind=ips' (in-process).  The simulated meter accepts the
# example ID and password below.
# ハードウェアなしで試すには、上のシミュレータが表示するパスを PORT に書きます。

import queue

from keilib.broute import BP35A1, BP35C2, BrouteReader, WiSunRL7023  # noqa: F401 (pick one)
from keilib.recorder import FileRecorder
# from keilib.uploader import HttpPostUploader

# The Wi-SUN module's serial port.  Prefer the stable /dev/serial/by-id/ name
# (ls -l /dev/serial/by-id/) over /dev/ttyUSB0, whose number can change.
# ポート名は /dev/serial/by-id/ 以下の名前がおすすめです。
PORT = '/dev/serial/by-id/usb-FTDI_FT230X_Basic_UART_xxxxxxxx-if00-port0'

# The module: one of
#   WiSunRL7023(PORT, 115200, type=WiSunRL7023.IPS)   Tessera RL7023 Stick-D/IPS (Route B only)
#   WiSunRL7023(PORT, 115200, type=WiSunRL7023.DSS)   Tessera RL7023 Stick-D/DSS (dual stack)
#   BP35A1(PORT, 115200)                              ROHM BP35A1 / Jorjin WSR35A1-00
#   BP35C2(PORT, 115200)                              ROHM BP35C0 / BP35C2, RATOC RS-WSUHA-P
wisundev = WiSunRL7023(PORT, 115200, type=WiSunRL7023.IPS)

# Readings flow from the reader to the recorder through this queue.
record_que = queue.Queue(50)

worker_def = [
    {
        'class': FileRecorder,
        'args': {
            'record_que': record_que,       # readings to write
            'fname_base': 'mylogfile',      # files: YYYYMMDD-mylogfile.txt, sumYYYYMMDD-mylogfile.txt
            # 'upload_que': upload_que,     # uncomment to upload the 10-minute averages (below)
        },
    },
    {
        'class': BrouteReader,
        'args': {
            'wisundev': wisundev,           # the module defined above
            # Route-B ID (32 characters, by post) and password (12 characters,
            # by e-mail) from your power company.  BルートIDとパスワード。
            'broute_id': '00112233445566778899AABBCCDDEEFF',
            'broute_pwd': '0123456789AB',
            # What to read and how often (seconds).  Each line is sent as ONE
            # request frame; the meter answers up to 6 EPCs at once.
            #   D3 coefficient, D7 digits, E1 unit: read at every join anyway
            #   E7 instantaneous power (W)         E8 currents R/T phase (A)
            #   E0/E3 cumulative energy forward/reverse (kWh)
            #   EA/EB fixed-time energy (the meter also sends them every 30 minutes)
            #   D0 one-minute energy import/export (newer meters only; most refuse it)
            'requests': [
                {'epc': ['D3', 'D7', 'E1'], 'cycle': 3600},
                {'epc': ['E7', 'E8'], 'cycle': 10},
                {'epc': ['E0', 'E3'], 'cycle': 300},
            ],
            'record_que': record_que,       # where the readings go
            # Optional, shown with their defaults:
            # 'scan_cache': 'scancache.json',  # the meter's channel/PAN, kept so a restart
            #                                  # skips the scan (deleted when a join with it fails)
            # 'response_timeout': 10,          # seconds to wait for an answer (then ask once more)
            # 'backfill_days': 7,              # after a gap, read missed half hours from the
            #                                  # meter's history, up to this many days back (0: off)
            # 'history_checkpoint': 'broute-history.json',   # what is held and missing (beside scan_cache)
            # 'one_minute': False,             # True: poll D0 every 60 s if the meter has it
            # keilog's older form also works instead of 'wisundev' (a DSS stick):
            # 'port': '/dev/ttyUSB0', 'baudrate': 115200,
        },
    },
    # To keep every reading in SQLite as well ('kei query' answers from it),
    # uncomment this entry and add:  from keilib.sql import SqlRecorder
    # {'class': SqlRecorder, 'args': {'record_que': record_que}},
    # To upload the 10-minute averages to php/upload.php on your server,
    # uncomment this entry, the import above, the 'upload_que' line of the
    # FileRecorder, and:
    #     upload_que = queue.Queue(50)
    # {
    #     'class': HttpPostUploader,
    #     'args': {
    #         'upload_que': upload_que,
    #         'target_url': 'https://example.com/kei/upload.php',
    #         'upload_key': 'the key set in php/config.php',
    #     },
    # },
]
