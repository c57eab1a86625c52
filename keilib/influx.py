"""InfluxWriter: readings or aggregates to InfluxDB / VictoriaMetrics over HTTP.

A ``SpooledOutput`` (keilib.output): every item is on disk before it is sent
and forgotten only when the server answered 204.  The line layout is
``keilib.lineprotocol`` (README "InfluxDB / VictoriaMetrics").  No client
library: one ``requests`` POST per batch.

Two write APIs, chosen by the arguments:

* ``database='kei'``: v1 ``POST /write?db=kei&precision=s`` (InfluxDB 1.x,
  InfluxDB 3, VictoriaMetrics); ``username``/``password`` go as HTTP basic
  auth, a ``token`` as ``Authorization: Token ...`` (InfluxDB 1.8+ takes
  ``user:password`` there);
* ``bucket='kei', org='home'``: v2 ``POST /api/v2/write?org=&bucket=&precision=s``
  with ``Authorization: Token ...`` (InfluxDB 1.8+, 2.x, 3.x, VictoriaMetrics).

What the answer means:

* 204 (any 2xx): stored;
* 400 / 422: the server refuses the data (e.g. "field type conflict"): the
  batch goes to ``<spool>/rejected/`` with the server's message, never retried;
* 413: too large: the base cuts the batch at line ends and sends the halves;
* 401 / 403 (bad token or password) and 404 (no such database or bucket):
  a configuration problem, not the data's: an ERROR at every attempt, the
  batch stays spooled and goes once the configuration is fixed;
* 429, 5xx, timeouts, refused connections: retried with backoff, or after the
  server's ``Retry-After`` (a 429 that states it is a pause, logged at INFO,
  not a failed attempt).

A re-sent batch (a timeout after the server stored it) adds nothing: InfluxDB
keeps one point per series and timestamp; VictoriaMetrics needs
``-dedup.minScrapeInterval=1ms`` for the same (README "Many homes").

Readings and 10-minute aggregates: give ``record_que`` the readers' queue
for raw readings, or an ``Averager``'s ``aggregate_que`` for aggregates
(measurement ``kei_10min``); for both, configure two InfluxWriters (each
with its own ``spool_dir``).  Neither the token nor the password appears in
any log line.

``worker_def`` entry::

    {'class': InfluxWriter,
     'args': {'record_que': record_que,            # readings (or an Averager's aggregate_que)
              'url': 'http://127.0.0.1:8428',      # VictoriaMetrics / InfluxDB base URL
              'database': 'kei',                   # v1 API; or bucket= and org= for v2
              # 'token': '...',                    # Authorization: Token (v2; InfluxDB 1.8+ v1)
              # 'username': 'kei', 'password': '...',   # v1 basic auth
              # 'site': 'home',                    # tag; default: the host name
              # 'spool_dir': 'spool-influx',       # default: ./spool-InfluxWriter
              # 'batch_seconds': 5,                # gather readings this long per batch
             }}
"""

from __future__ import annotations

import email.utils
import logging
import socket
import time
import urllib.parse

from keilib import lineprotocol
from keilib.errors import ConfigError
from keilib.output import Outcome, SpooledOutput
from keilib.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Dict, Optional, Tuple

logger = logging.getLogger(__name__)

DEFAULT_BATCH_BYTES = 256 * 1024   # InfluxDB suggests ~5,000 lines per request


def retry_after_seconds(header: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """A ``Retry-After`` header (seconds or an HTTP date) in seconds; None if absent or bad."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def server_message(body: str) -> str:
    """The server's reason from a JSON ``{"error": ...}`` / ``{"message": ...}`` or plain body."""
    try:
        import json
        data = json.loads(body)
        if isinstance(data, dict):
            for key in ("error", "message"):
                if isinstance(data.get(key), str):
                    return data[key][:300]
    except ValueError:
        pass
    return " ".join(body.split())[:300]


def _text(name: str, value: Any, optional: bool = True) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or "\n" in value:
        raise ConfigError("InfluxWriter: argument '%s' must be non-empty text, got %s"
                          % (name, type(value).__name__))
    return value


class InfluxWriter(SpooledOutput):
    """Writes Records (or Aggregates) as InfluxDB line protocol (module doc).

    ``worker_def`` entry::

        {'class': InfluxWriter,
         'args': {'record_que': record_que,
                  'url': 'http://127.0.0.1:8428',
                  'database': 'kei'}}
    """

    CONSUMES = ("record_que",)
    ACTION = "write"

    def __init__(self, record_que: Any, url: str, database: Optional[str] = None,
                 bucket: Optional[str] = None, org: Optional[str] = None,
                 token: Optional[str] = None, username: Optional[str] = None,
                 password: Optional[str] = None, site: Optional[str] = None,
                 timeout: float = 10.0, verify: Any = True, spool_dir: Any = None,
                 batch_bytes: int = DEFAULT_BATCH_BYTES, batch_seconds: float = 5.0,
                 retry_min: float = 5.0, retry_max: float = 600.0, clock: Any = None,
                 name: Optional[str] = None) -> None:
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("InfluxWriter: url must be an http:// or https:// base URL, "
                              "e.g. http://127.0.0.1:8086")
        if parts.username or parts.password or parts.query:
            raise ConfigError("InfluxWriter: put credentials in token= or username=/password=, "
                              "not in the url")
        _text("database", database)
        _text("bucket", bucket)
        _text("org", org)
        _text("token", token)
        _text("username", username)
        _text("password", password)
        if (database is None) == (bucket is None):
            raise ConfigError("InfluxWriter: give either database= (v1 /write) or bucket= "
                              "(v2 /api/v2/write, with org=)")
        if bucket is not None and org is None:
            raise ConfigError("InfluxWriter: bucket= needs org= (the v2 write API asks for both)")
        if (username is None) != (password is None):
            raise ConfigError("InfluxWriter: username= and password= go together")
        if token is not None and username is not None:
            raise ConfigError("InfluxWriter: give token= or username=/password=, not both")
        if bucket is not None and username is not None:
            raise ConfigError("InfluxWriter: the v2 API (bucket=) authenticates with token= only")
        try:
            self.site = lineprotocol.check_site(site if site is not None else socket.gethostname())
        except ValueError as exc:
            raise ConfigError("InfluxWriter: %s" % exc) from None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
            raise ConfigError("InfluxWriter: timeout must be seconds in (0, 600], got %r" % (timeout,))
        if not isinstance(verify, (bool, str)):
            raise ConfigError("InfluxWriter: verify must be True/False or a CA bundle path")
        try:
            super().__init__(record_que, spool_dir=spool_dir, batch_bytes=batch_bytes,
                             batch_seconds=batch_seconds, retry_min=retry_min,
                             retry_max=retry_max, clock=clock, name=name)
        except ConfigError as exc:
            raise ConfigError("InfluxWriter: %s" % exc) from None
        self.record_que = record_que
        self.base_url = url.rstrip("/")
        if database is not None:
            self.path = "/write"
            self.params: Dict[str, str] = {"db": database}
            self.target = "%s/write?db=%s" % (self.base_url, database)
        else:
            self.path = "/api/v2/write"
            self.params = {"org": org or "", "bucket": bucket}
            self.target = "%s/api/v2/write?org=%s&bucket=%s" % (self.base_url, org, bucket)
        self.timeout = float(timeout)
        self.verify = verify
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if token is not None:
            self._headers["Authorization"] = "Token " + token
        self._auth = (username, password) if username is not None else None
        self.secrets = [s for s in (token, password) if s]
        self._session: Any = None

    def describe_target(self) -> str:
        return self.target

    def setup(self) -> None:
        import requests
        self._session = requests.Session()
        super().setup()

    def cleanup(self) -> None:
        try:
            super().cleanup()
        finally:
            if self._session is not None:
                self._session.close()

    def encode(self, item: Any) -> Optional[Tuple[str, str]]:
        """A Record or Aggregate -> (precision, line); the precision is the batch key,
        so that one request carries one precision.  A keilog list
        ``[unit, sensor, value, data_id]`` gets its time now."""
        try:
            if isinstance(item, (list, tuple)):
                item = Record.from_legacy(item, self.clock.now())
            return lineprotocol.encode(item, self.site)
        except (AttributeError, TypeError, ValueError, OverflowError) as exc:
            logger.error("%s: skipped an item that is not a Record (%s): %.80r", self.name, exc, item)
            return None

    def explain(self, exc: Exception) -> str:
        wrapped = exc.args[0] if exc.args else None
        return self.redact(str(getattr(wrapped, "reason", None) or exc))

    def deliver(self, key: str, text: str, batch_id: str) -> Outcome:
        import requests
        if self._session is None:           # deliver() called outside the thread (tests)
            self._session = requests.Session()
        params = dict(self.params, precision=key)
        try:
            response = self._session.post(self.base_url + self.path, params=params,
                                          data=text.encode("utf-8"), headers=self._headers,
                                          auth=self._auth, timeout=self.timeout,
                                          allow_redirects=False, verify=self.verify)
        except requests.RequestException as exc:
            return Outcome.retry(self.redact("%s: %s" % (type(exc).__name__, self.explain(exc))))
        return self.judge(response.status_code, response.text, response.headers.get("Retry-After"))

    def judge(self, status: int, body: str, retry_after: Optional[str] = None) -> Outcome:
        """The verdict for one HTTP answer (module doc)."""
        if 200 <= status < 300:
            return Outcome.ok()
        reason = self.redact("HTTP %d: %s" % (status, server_message(body)))
        if status in (400, 422):
            return Outcome.reject(reason)
        if status == 413:
            return Outcome.too_large(reason)
        if status in (401, 403):
            return Outcome.retry(reason + " (check the token or username/password)", loud=True)
        if status == 404:
            return Outcome.retry(reason + " (check the url and database/bucket)", loud=True)
        after = retry_after_seconds(retry_after)
        if status == 429 and after is not None:
            return Outcome.wait(reason, after)     # a rate limit: a pause, not a failure
        return Outcome.retry(reason, after=after)
