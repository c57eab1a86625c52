"""Headless Chromium for tests, driven through chromedriver's W3C WebDriver HTTP API.

Only the standard library and requests: chromedriver is started on a free
127.0.0.1 port and spoken to with JSON over HTTP; nothing from PyPI.

    with Browser() as browser:
        browser.get("http://127.0.0.1:8000/")
        browser.execute("return document.title")      # run a script in the page
        browser.console_errors()     # SEVERE entries of the console/browser log
        browser.requested_urls()     # every URL the page asked for (network log)
        browser.screenshot(path)     # PNG of the whole page
        browser.clear_logs()         # forget what came before (the start page)

What it needs (Debian): ``apt-get install -y chromium chromium-driver``.
``browser_missing()`` returns the reason to skip when they are not installed.

Chromium runs with the flags a test box needs (no sandbox as root, no GPU,
no QUIC, no first-run, no background networking, component update or sync)
and a fresh --user-data-dir that is removed afterwards.  The console log and
the network log come from chromedriver's ``goog:loggingPrefs`` (browser and
performance logs), read with ``POST /session/<id>/se/log``; each read returns
the entries since the previous read, so they are accumulated here.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import requests

from support import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1100,900",
]

HTTP_TIMEOUT = 30.0


def browser_missing() -> Optional[str]:
    """Why the browser tests cannot run here, or None if they can."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One chromedriver process and one Chromium session."""

    def __init__(self, width: int = 1100, height: int = 900, mobile: bool = False) -> None:
        reason = browser_missing()
        if reason:
            raise RuntimeError(reason)
        self.width = width
        self.height = height
        self.mobile = mobile
        self.profile = tempfile.mkdtemp(prefix="kei-chromium-")
        self.log_path = Path(self.profile + ".chromedriver.log")
        self.port = _free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.process: Optional[subprocess.Popen] = None
        self.session: Optional[str] = None
        self.http = requests.Session()
        self._console: List[Dict[str, Any]] = []
        self._performance: List[Dict[str, Any]] = []

    # -- life cycle

    def start(self) -> "Browser":
        with open(self.log_path, "ab") as log:
            # Own process group: Chromium's helpers die with chromedriver.
            self.process = subprocess.Popen(
                [CHROMEDRIVER, "--port=%d" % self.port, "--allowed-ips=127.0.0.1"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        wait_for(self._ready, timeout=20, message="chromedriver on port %d" % self.port)
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": CHROMIUM_FLAGS + ["--user-data-dir=%s" % self.profile],
            },
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
        }
        if self.mobile:
            # A phone: this viewport, a device pixel ratio of 3, touch input.
            capabilities["goog:chromeOptions"]["mobileEmulation"] = {
                "deviceMetrics": {"width": self.width, "height": self.height, "pixelRatio": 3.0,
                                  "touch": True, "mobile": True}}
        answer = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session = answer["sessionId"]
        if not self.mobile:
            self._call("POST", self._path("/window/rect"), {"width": self.width, "height": self.height})
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise WebDriverError("chromedriver exited: %s" % self.log_path.read_text()[-2000:])
        try:
            return bool(self.http.get(self.base + "/status", timeout=1).json()["value"]["ready"])
        except (requests.RequestException, ValueError, KeyError):
            return False

    def close(self) -> None:
        if self.session is not None:
            try:
                self._call("DELETE", self._path(""), None)
            except (requests.RequestException, WebDriverError):
                pass        # chromedriver is stopped below anyway
            self.session = None
        if self.process is not None:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(5)
            try:
                os.killpg(self.process.pid, signal.SIGKILL)   # left-over helpers
            except ProcessLookupError:
                pass
            self.process = None
        self.http.close()
        shutil.rmtree(self.profile, ignore_errors=True)
        try:
            self.log_path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Browser":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- WebDriver commands

    def _path(self, tail: str) -> str:
        return "/session/%s%s" % (self.session, tail)

    def _call(self, method: str, path: str, body: Optional[dict]) -> Any:
        response = self.http.request(method, self.base + path,
                                     data=None if body is None else json.dumps(body),
                                     headers={"Content-Type": "application/json"},
                                     timeout=HTTP_TIMEOUT)
        try:
            answer = response.json()
        except ValueError:
            raise WebDriverError("%s %s: HTTP %d %r" % (method, path, response.status_code,
                                                       response.text[:300])) from None
        value = answer.get("value") if isinstance(answer, dict) else None
        if response.status_code != 200:
            message = value.get("message", "") if isinstance(value, dict) else ""
            raise WebDriverError("%s %s: HTTP %d %s" % (method, path, response.status_code, message[:500]))
        return value

    def get(self, url: str) -> None:
        """Load ``url`` and return once the page's load event has fired."""
        self._call("POST", self._path("/url"), {"url": url})

    def point_at(self, x: float, y: float) -> None:
        """Move the mouse to (x, y) in the viewport, or tap there on a phone (W3C actions)."""
        if self.mobile:
            steps = [{"type": "pointerMove", "duration": 0, "x": int(x), "y": int(y), "origin": "viewport"},
                     {"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0}]
            kind = "touch"
        else:
            steps = [{"type": "pointerMove", "duration": 0, "x": int(x), "y": int(y), "origin": "viewport"}]
            kind = "mouse"
        self._call("POST", self._path("/actions"), {"actions": [
            {"type": "pointer", "id": "kei-" + kind, "parameters": {"pointerType": kind}, "actions": steps}]})
        self._call("DELETE", self._path("/actions"), None)

    def execute(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``) in the page."""
        return self._call("POST", self._path("/execute/sync"), {"script": script, "args": list(args)})

    def _read_log(self, kind: str) -> List[Dict[str, Any]]:
        return self._call("POST", self._path("/se/log"), {"type": kind}) or []

    def console(self) -> List[Dict[str, Any]]:
        """All browser-log entries so far: console calls, script errors, failed loads."""
        self._console.extend(self._read_log("browser"))
        return list(self._console)

    def console_errors(self) -> List[str]:
        return [entry.get("message", "") for entry in self.console()
                if entry.get("level") in ("SEVERE", "ERROR")]

    def clear_logs(self) -> None:
        """Forget the log entries so far (e.g. those of Chromium's start page)."""
        self.console()
        self.network_events()
        self._console.clear()
        self._performance.clear()

    def network_events(self) -> List[Dict[str, Any]]:
        """DevTools Network.* events so far (the performance log)."""
        for entry in self._read_log("performance"):
            try:
                message = json.loads(entry["message"])["message"]
            except (KeyError, ValueError, TypeError):
                continue
            if message.get("method", "").startswith("Network."):
                self._performance.append(message)
        return list(self._performance)

    def requested_urls(self) -> List[str]:
        """Every URL a page of this session asked for, in order."""
        return [event["params"]["request"]["url"] for event in self.network_events()
                if event.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """Save a PNG of the page (grown to the page's height when ``full_page``)."""
        if full_page and not self.mobile:
            height = int(self.execute(
                "return Math.ceil(document.documentElement.scrollHeight);"))
            self._call("POST", self._path("/window/rect"),
                       {"width": self.width, "height": max(self.height, min(height + 140, 16000))})
        data = self._call("GET", self._path("/screenshot"), None)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
