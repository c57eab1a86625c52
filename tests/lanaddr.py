"""Loopback addresses for LAN tests: ECHONET Lite's port 3610 is fixed, so
each test takes its own 127.x.y.z addresses instead of a free port.

Each test process claims a whole 127.B.0.0/16 block with an flock on a file
in the temp dir (held until the process ends), so parallel xdist workers and
concurrent test runs on the same machine never share an address; within the
process every call hands out a fresh 127.B.C.0/24.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import tempfile
from typing import List, Optional

_block: Optional[int] = None
_lock_fd: Optional[int] = None
_subnets = itertools.count(1)


def _claim_block() -> int:
    global _block, _lock_fd
    if _block is None:
        for second in range(100, 255):
            path = os.path.join(tempfile.gettempdir(), "kei-test-lan-127.%d.lock" % second)
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            _block, _lock_fd = second, fd
            break
        else:
            raise RuntimeError("no free 127.x.0.0/16 block for LAN tests")
    return _block


def addresses(count: int) -> List[str]:
    """``count`` loopback addresses no other test uses: 127.B.C.1 .. 127.B.C.count."""
    block = _claim_block()
    subnet = next(_subnets)
    if subnet > 255 or count > 254:
        raise RuntimeError("out of LAN test addresses")
    return ["127.%d.%d.%d" % (block, subnet, host) for host in range(1, count + 1)]
