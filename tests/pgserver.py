"""A real PostgreSQL server for tests: initdb in a temporary directory (as a
non-root user: PostgreSQL refuses to run as root), pg_ctl on a Unix socket in
that directory (no TCP at all), stopped in ``stop()``."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from typing import List, Optional

PG_USER = "nobody"


def find_tool(name: str) -> Optional[str]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/%s" % name))
    return found[-1] if found else shutil.which(name)


class PgServer:
    PORT = 5432      # only names the socket file, in this server's own directory

    def __init__(self) -> None:
        self.initdb = find_tool("initdb")
        self.pg_ctl = find_tool("pg_ctl")
        self.dir = tempfile.mkdtemp(prefix="kei-pg-")
        self.data = os.path.join(self.dir, "data")
        self.running = False

    @property
    def available(self) -> bool:
        return bool(self.initdb and self.pg_ctl)

    def _as_user(self, argv: List[str]) -> List[str]:
        return ["runuser", "-u", PG_USER, "--"] + argv if os.geteuid() == 0 else argv

    def init(self) -> None:
        if os.geteuid() == 0:
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, PG_USER)
        subprocess.run(self._as_user([self.initdb, "-D", self.data, "-U", "kei", "--auth=trust", "-E", "UTF8",
                                      "--no-sync"]), check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = "-c listen_addresses='' -k %s -p %d -c fsync=off" % (self.dir, self.PORT)
        subprocess.run(self._as_user([self.pg_ctl, "-D", self.data, "-o", options, "-l",
                                      os.path.join(self.dir, "log"), "-w", "-t", "30", "start"]),
                       check=True, capture_output=True, timeout=40)
        self.running = True

    def stop(self) -> None:
        if self.running:
            subprocess.run(self._as_user([self.pg_ctl, "-D", self.data, "-m", "fast", "-w", "stop"]),
                           capture_output=True, timeout=30)
            self.running = False

    def conninfo(self, password: str = "") -> str:
        text = "host=%s port=%d user=kei dbname=postgres" % (self.dir, self.PORT)
        return text + (" password=%s" % password if password else "")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
