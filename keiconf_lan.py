# keiconf_lan.py -- ECHONET Lite devices on the home LAN -> daily files
#
# Reads an EcoCute (heat-pump water heater), a storage battery and a solar
# inverter over the LAN (UDP port 3610).  Copy to keiconf.py and edit:
#     cp keiconf_lan.py keiconf.py
#     python3 kei.py --check
#     python3 kei.py
#
# LAN の ECHONET Lite 機器（エコキュート・蓄電池・太陽光）の値を記録する設定例です。
#
# To try it with no hardware, start simulated devices in other terminals
#     python3 -m keilib.sim lan --device ecocute --address 127.0.0.2
#     python3 -m keilib.sim lan --device battery --address 127.0.0.3
#     python3 -m keilib.sim lan --device solar --address 127.0.0.4
# and set DEVICES = ['127.0.0.2', '127.0.0.3', '127.0.0.4'], ADDRESS = '127.0.0.1'.
# ハードウェアなしで試すには、上のシミュレータを起動して DEVICES と ADDRESS を書き換えます。

import queue

from keilib.lan import EchonetLanReader
from keilib.recorder import FileRecorder

# The devices' addresses (give them fixed DHCP leases), or [] to find them
# by multicast discovery alone.  機器の IP アドレス（[] なら自動検出のみ）
DEVICES = ['192.168.1.20', '192.168.1.21', '192.168.1.22']
# kei's own address to listen on ('0.0.0.0' = all).  kei が待ち受けるアドレス
ADDRESS = '0.0.0.0'

record_que = queue.Queue(200)

worker_def = [
    {
        'class': FileRecorder,
        'args': {'record_que': record_que, 'fname_base': 'home'},
    },
    {
        'class': EchonetLanReader,
        'args': {
            'record_que': record_que,
            'devices': DEVICES,
            'discover': True,            # also find devices by multicast (224.0.23.0), and
                                         # find them again after an address change
            'address': ADDRESS,
            'cycle': 60,                 # one Get per device every 60 s
            # unit ids in the files (default: class + instance, e.g. 026B01)
            'units': {'026B01': 'ecocute', '027D01': 'battery', '027901': 'solar'},
            # which EPCs to read per class (default: every one kei knows)
            # 'epcs': {'027D': ['E4', 'D3', 'CF']},
        },
    },
]
