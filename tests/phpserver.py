"""A real PHP built-in web server for tests: ``php -S 127.0.0.1:<port> -t <dir>``.

    server = PhpServer(docroot, env={"KEI_DATA_DIR": "/tmp/x"}, workers=4)
    server.start()              # picks a free port, returns once it accepts
    requests.post(server.url("upload.php"), data=...)
    server.stop()               # the port stays reserved for this object
    server.start()              # same port again: clients keep their URL

``ini`` adds ``-d name=value`` settings (e.g. ``{"memory_limit": "128M"}``).
``workers`` > 1 sets PHP_CLI_SERVER_WORKERS so that requests really run in
parallel processes (needed to exercise the endpoint's locking).  PHP runs with
every error reported and logged (``-d error_reporting=-1 -d log_errors=1``);
the server's request and error log goes to ``server.log_path``, and
``php_errors()`` lists its warnings, notices and errors.

The ``php_server_factory`` fixture builds servers, stops them after the test
and fails the test if PHP logged any warning, notice or error.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from support import wait_for

PHP = shutil.which("php")
PHP_ERROR = re.compile(r"PHP (Fatal error|Parse error|Warning|Notice|Deprecated|Strict)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class PhpServer:
    def __init__(self, docroot, env: Optional[Dict[str, str]] = None,
                 port: Optional[int] = None, workers: int = 1,
                 ini: Optional[Dict[str, str]] = None):
        if PHP is None:
            raise RuntimeError("php not found: install php-cli (apt-get install php-cli)")
        self.docroot = Path(docroot)
        self.env = dict(env or {})
        self.port = port or free_port()
        self.workers = workers
        self.ini = dict(ini or {})
        self.log_path = Path(tempfile.mkstemp(prefix="php-server-", suffix=".log")[1])
        self.process: Optional[subprocess.Popen] = None

    def url(self, path: str = "") -> str:
        return "http://127.0.0.1:%d/%s" % (self.port, path.lstrip("/"))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> "PhpServer":
        if self.running:
            return self
        env = dict(os.environ)
        env.update(self.env)
        env.pop("PHP_CLI_SERVER_WORKERS", None)
        if self.workers > 1:
            env["PHP_CLI_SERVER_WORKERS"] = str(self.workers)
        with open(self.log_path, "ab") as log:
            # Own process group: the worker processes are children of the
            # first one and must be stopped with it.
            settings = [arg for name, value in self.ini.items() for arg in ("-d", "%s=%s" % (name, value))]
            self.process = subprocess.Popen(
                [PHP, "-d", "error_reporting=-1", "-d", "log_errors=1", "-d", "display_errors=0"]
                + settings + ["-S", "127.0.0.1:%d" % self.port, "-t", str(self.docroot)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError("php -S exited with %s: %s" % (
                    self.process.returncode, self.log_path.read_text()[-2000:]))
            return accepts(self.port)

        wait_for(up, timeout=timeout, message="php -S on port %d" % self.port)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        # The workers (same group) may outlive the parent for a moment.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process = None
        wait_for(lambda: not accepts(self.port), timeout=5, message="port %d closed" % self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def php_errors(self) -> List[str]:
        return [line for line in self.log().splitlines() if PHP_ERROR.search(line)]

    def close(self) -> None:
        self.stop()
        try:
            self.log_path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "PhpServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def php_server_factory():
    """``make(docroot, env=..., workers=...)`` -> a started PhpServer, stopped after the test."""
    servers: List[PhpServer] = []

    def make(docroot, env=None, workers=1, port=None, ini=None) -> PhpServer:
        server = PhpServer(docroot, env=env, workers=workers, port=port, ini=ini)
        servers.append(server)
        return server.start()

    yield make
    errors = []
    for server in servers:
        errors.extend(server.php_errors())
        server.close()
    assert not errors, "PHP logged problems:\n" + "\n".join(errors)
