"""kei example: sensors on a serial port -> daily files.

シリアルポートに接続したセンサー(Arduino、TWELite、XBee など)のデータをファイルに記録する設定例。

Use: copy this file to ``keiconf.py`` in the work directory and edit the
``serial_port`` line (and the checker rules, if you want them), then run
``python3 kei.py``.  (keiconf.py にコピーして serial_port の行を書き換えて使う)

Try it without hardware: in another terminal run

    python3 -m keilib.sim sensor --units 2 --sensors 2 --rate 1 --link /tmp/kei-sensor

and set ``serial_port = '/tmp/kei-sensor'`` (or ``serial_port = 'sim://sensor?units=2&sensors=2'``,
the simulator inside kei itself).

What the device must send, one reading per line (LF or CRLF)::

    UNITID,SENSORID,VALUE[,DATAID]        e.g.  ar1,temp,23.25,117

UNITID   which unit (Arduino, radio node) sent it          (ユニットのID)
SENSORID which sensor on that unit                         (ユニット上のセンサーのID)
VALUE    the reading, a number                             (センサーの値、数値)
DATAID   optional; a radio link may deliver a line twice, and a line with the
         same unit, sensor, value and DATAID seen again among the last 16
         lines (within 60 s) is dropped as a resend.       (無線の再送による重複を除くためのID)
IDs are letters, digits, '-' and '_'.  Other lines are logged in kei.log and skipped.

Files written in the work directory (see keilib/recorder.py):
    YYYYMMDD-<fname_base>.txt      every reading:  2026/05/20 14:00:00,ar1,temp,23.25,117
    sumYYYYMMDD-<fname_base>.txt   10-minute averages per unit and sensor
"""

import queue

from keilib.recorder import FileRecorder
from keilib.serial import OutlierChecker, SerialReader

# The queue that carries readings from the reader(s) to the recorder.
# Bounded, so that a stalled recorder slows the readers instead of filling memory.
# スレッド間でデータを受け渡す Queue
record_que = queue.Queue(50)

# Data files are named YYYYMMDD-<fname_base>.txt.  (記録ファイル名のベース)
fname_base = 'mylogfile'

# The serial port: a stable /dev/serial/by-id/... name survives re-plugging and
# reboots better than /dev/ttyUSB0.  pyserial URLs work too: 'socket://host:port'
# (ser2net), 'rfc2217://host:port', 'sim://sensor' (the built-in simulator).
# シリアルポート (ls /dev/serial/by-id/ で確認できる)
serial_port = '/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_XXXXXXXX-if00-port0'

# Line speed; must match Serial.begin(...) on the Arduino / the radio module.  (ボーレート)
baud_rate = 115200

# Optional value checks (外れ値チェック).  add(unit, sensor, min, max, variation):
# a value outside [min, max] is dropped; a value that moves by more than
# `variation` from the last accepted one is dropped unless the new level holds
# for 3 readings in a row (then it is believed).  Sensors without a rule pass.
# To use no checks, set  checker = None.
checker = OutlierChecker()
checker.add('ar1', 'temp', -20, 60, 5)     # unit ar1, sensor temp: -20..60 (deg C), jumps > 5 suspect
checker.add('ar1', 'hum', 0, 100, 20)      # humidity in %

# The workers kei runs, each in its own thread.  Several SerialReader entries
# (one per port) may share the same record_que.
# ここで定義したクラスのインスタンスが作られ、それぞれ別スレッドで動く
worker_def = [
    {
        'class': FileRecorder,
        'args': {
            'record_que': record_que,      # readings to write come from here
            'fname_base': fname_base,      # YYYYMMDD-mylogfile.txt
        }
    },
    {
        'class': SerialReader,
        'args': {
            'port': serial_port,           # device path or pyserial URL
            'baudrate': baud_rate,         # e.g. 9600, 115200
            'record_que': record_que,      # readings go to the FileRecorder
            'checker': checker,            # or None: no value checks
        }
    },
]
