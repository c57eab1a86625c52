"""Real local servers that receive alerts in tests: a webhook receiver
(stdlib http.server) and an SMTP server with STARTTLS and login (aiosmtpd,
a test-only dependency), each on 127.0.0.1 with a free port, stopped in
``finally`` by its user."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Tuple


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebhookReceiver:
    """Keeps every POST: ``requests`` lists (path, headers, body bytes).
    ``fail_next`` answers that many requests with HTTP 503 first."""

    def __init__(self, port: int = 0) -> None:
        self.lock = threading.Lock()
        self.requests: List[Tuple[str, Dict[str, str], bytes]] = []
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    failing = receiver.fail_next > 0
                    if failing:
                        receiver.fail_next -= 1
                    else:
                        receiver.requests.append((self.path, dict(self.headers), body))
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def bodies(self) -> List[Dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, _, body in self.requests]

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def self_signed_cert(directory: Path) -> Tuple[str, str]:
    """A certificate for 127.0.0.1 made with the openssl command; (cert, key)."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is missing (tests/run.sh installs it)"
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return str(cert), str(key)


class MailServer:
    """aiosmtpd on 127.0.0.1 that insists on STARTTLS and a login;
    ``messages`` holds the accepted mails (email.message.Message)."""

    def __init__(self, directory: Path, username: str, password: str) -> None:
        import ssl
        from email import message_from_bytes

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.cert, key = self_signed_cert(directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.messages: List[Any] = []
        self.logins: List[Tuple[str, bool]] = []
        server = self

        class Handler:
            async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                server.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        def authenticator(smtp: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
            login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
            secret = auth_data.password.decode() if isinstance(auth_data.password, bytes) else auth_data.password
            ok = login == username and secret == password
            server.logins.append((login, ok))
            return AuthResult(success=ok, handled=False)   # aiosmtpd answers 235 or 535

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, tls_context=context,
                                     require_starttls=True, auth_required=True,
                                     authenticator=authenticator)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
