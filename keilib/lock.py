"""One kei per work directory: an exclusive lock on ``<workdir>/kei.lock``.

Two daemons in one directory would both append every reading and every
10-minute window to the same files.  The launcher takes the lock before any
worker starts and holds it until it exits; a second one finds it held and
exits with status 2, naming the PID written in the lock file.

``fcntl.flock`` is tied to the open file, so the kernel releases it when the
holder dies in any way (kill -9, power loss): a lock file left behind by a
crash never blocks a start -- only a living holder does.  The file's content
(the holder's PID) is for the message only.  ``kei.py --check`` does not lock:
validating a config while the daemon runs is normal.
"""

from __future__ import annotations

import fcntl
import os

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Optional

LOCK_NAME = "kei.lock"


class LockHeld(Exception):
    """Another living process holds the lock."""

    def __init__(self, path: str, pid: Optional[int]):
        self.path = path
        self.pid = pid
        holder = "PID %d" % pid if pid is not None else "a process whose PID is not recorded yet"
        super().__init__("another kei (%s) is already running in %s (lock %s); stop it first, "
                         "or run this one in another directory" % (holder, os.path.dirname(path), path))


class WorkdirLock:
    """``acquire()`` or raise LockHeld; ``release()`` at exit (idempotent)."""

    def __init__(self, directory: str):
        self.path = os.path.join(os.path.abspath(directory), LOCK_NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> "WorkdirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)   # not inherited by children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise LockHeld(self.path, pid) from None
        except BaseException:
            os.close(fd)
            raise
        # Ours: replace whatever a dead holder left with our PID.
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)     # still locked: nobody reads a stale PID from it
        except OSError:
            pass
        os.close(fd)                # closing releases the lock


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
