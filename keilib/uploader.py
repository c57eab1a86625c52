"""HttpPostUploader: POST text blocks to a web endpoint, through a durable spool.

Queue items are ``[filename, text]`` (the FileRecorder puts each block of
10-minute summary lines, for a file such as ``sum20261123-mylogfile.txt``).

Wire format (compatible with keilog's endpoint; php/upload.php is ours)::

    POST <target_url>   application/x-www-form-urlencoded
    type=text  key=<upload key>  fname=<filename>  data=<text>  id=<batch id>

Success is a 2xx answer whose body starts with ``OK``.  ``id`` is unique per
batch and stable across retries; our endpoint answers OK without appending
again for an id it already stored, so a re-sent batch is never duplicated.
Old endpoints ignore it.

Built on ``keilib.output.SpooledOutput`` (spool, batching, backoff and the
verdicts are the base's); this class only encodes an item and POSTs a batch.
Behind a FileRecorder the launcher hands blocks over through the spool itself
(``keilib.spool.SpoolQueue``): a block is on disk before it is in the summary
file, so a kill -9 at any instant loses none.

Delivery is a transaction (spool first, delete only on confirmation):

* Every item taken off the queue is written to ``<spool>/<seq>.item``
  (temp file, fsync, ``os.replace``, fsync of the directory) before any send.
* Before its first send, the oldest unit is *sealed* into ``<seq>.batch``:
  it may absorb later items of the same file (in order, up to
  ``max_batch_bytes`` of data), and an item larger than that is split at line
  ends into several parts.  The batch file lists its parts with their ids and
  is never regrouped, so every retry sends the same bytes with the same id.
  A crash after the batch file was written but before its member items were
  deleted is repaired at start (members listed in a batch are removed).
* A part is removed from the batch file only after the server confirmed it.
  (The deletion of a finished batch is not fsync'd: should it come back
  after a power cut, its re-send carries the same id and is a no-op.)
  With an old endpoint that ignores ``id``, a crash between the server's
  append and that deletion can duplicate one batch: at-least-once there.
* Connection errors, timeouts, 3xx, 5xx, 408, 429 and 2xx bodies that are not
  ``OK`` (keilog's endpoint answers ``Error: ...`` with 200) keep the batch; it
  is retried with capped exponential backoff and jitter (429: Retry-After).
  Units go out oldest first, so the order per file is kept.
* HTTP 413 (too large) for a part of several lines means the endpoint's limit
  is below ours (the endpoint stored nothing): the uploader lowers its merge
  limit for the rest of the run (to the limit the answer states, as
  php/upload.php's ``data larger than N bytes`` does, else half the part;
  one WARNING per lowering) and cuts the part at line ends into pieces within
  it, and every later part of the batch that is larger too.  The pieces get
  ids derived from the part's id, and the batch file is rewritten atomically
  (the same single ``os.replace`` as a confirmation), so a crash leaves either
  the old part, which nobody stored and which is cut the same way again, or
  the pieces.  A part of a single line that is refused with 413 is set aside
  alone in ``<spool>/rejected/`` (the rest of the batch goes on).
* Any other 4xx (bad key, bad name, wrong method, 409: the endpoint holds
  this id with different data) is permanent: the batch moves to
  ``<spool>/rejected/`` with one error line naming the cause.
* On stop, items still in the queue go to the spool; a request in flight is
  abandoned (its batch stays spooled), so stop returns within about a second
  even if the server hangs.  The next start sends the spool first.

The upload key never appears in logs; the URL is logged without credentials
or query.

HTTP is the standard library's (``urllib.request``): it honours the proxy
variables (``https_proxy``, ``no_proxy``), verifies TLS certificates against
the system's store, and a ``user:password@`` in the URL is sent as basic
authentication; redirects are not followed (a POST must not turn into a GET
elsewhere: a 3xx is retried and logged).  requests would cost a box about
8 MB more memory for one POST every 10 minutes.
"""

from __future__ import annotations

import base64
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from keilib.errors import ConfigError
from keilib.output import Outcome, SpooledOutput, positive
# Re-exported: the spool was part of this module before the output base.
from keilib.spool import (BATCH, DEFAULT_MAX_BATCH_BYTES, ITEM, TEMP_PREFIX, Batch,  # noqa: F401
                          Spool, batch_id, split_id, split_lines, write_atomic)
from keilib.worker import backoff_delay  # noqa: F401 - the one backoff rule, re-exported

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Dict, Optional, Tuple

logger = logging.getLogger(__name__)


def stated_limit(body: str) -> Optional[int]:
    """The byte limit a 413 answer names (php/upload.php: ``data larger than N bytes``)."""
    match = re.search(r"larger than (\d+) bytes", body)
    return int(match.group(1)) if match else None


def _host_and_port(parts: urllib.parse.SplitResult) -> str:
    """The netloc of ``parts`` without user and password."""
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    if parts.port:
        host += ":%d" % parts.port
    return host


def safe_url(url: str) -> str:
    """``url`` without user, password, query and fragment, for logs."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, _host_and_port(parts), parts.path, "", ""))


def describe(exc: Exception) -> str:
    """The useful part of a failed request (urllib wraps the cause in ``reason``)."""
    return str(getattr(exc, "reason", None) or exc)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx comes back as an HTTPError with its own status, not followed."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


def http_target(url: str) -> Tuple[str, Dict[str, str]]:
    """``url`` without its ``user:password@``, and the headers that carry them
    (urllib, unlike requests, would take them for part of the host)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    credentials = "%s:%s" % (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    header = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    return (urllib.parse.urlunsplit((parts.scheme, _host_and_port(parts), parts.path, parts.query, "")),
            {"Authorization": header})


def classify(status: int, body: str) -> str:
    """'ok', 'retry' or 'reject' for an HTTP answer."""
    if 200 <= status < 300:
        return "ok" if body.lstrip().startswith("OK") else "retry"
    if 400 <= status < 500 and status not in (408, 429):
        return "reject"
    return "retry"


def encode_block(item: Any) -> Optional[Tuple[str, str]]:
    """A queue item ``[filename, text]`` -> (filename, text); None (logged) otherwise."""
    if not isinstance(item, (list, tuple)) or len(item) != 2 or \
            not isinstance(item[0], str) or not isinstance(item[1], (str, bytes)):
        logger.error("HttpPostUploader: skipped an upload item that is not [filename, text]: %.80r", item)
        return None
    fname, text = item
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not text:
        logger.debug("HttpPostUploader: skipped an empty upload item for %s", fname)
        return None
    return fname, text


class HttpPostUploader(SpooledOutput):
    """Takes ``[filename, text]`` items from ``upload_que`` and POSTs them (see module doc).

    ``worker_def`` entry::

        {'class': HttpPostUploader,
         'args': {'upload_que': upload_que,                    # FileRecorder's 10-minute blocks
                  'target_url': 'https://example.com/kei/upload.php',
                  'upload_key': 'the key set in php/config.php'}}
    """

    CONSUMES = ("upload_que",)
    ACTION = "upload"
    # The launcher hands items over through the spool (keilib.spool.SpoolQueue).
    DURABLE_INTAKE = True
    encode_item = staticmethod(encode_block)

    def __init__(self, upload_que, target_url, upload_key, spool_dir=None, timeout=30,
                 retry_min=5, retry_max=600, max_batch_bytes=DEFAULT_MAX_BATCH_BYTES,
                 clock=None):
        if not isinstance(target_url, str) or \
                urllib.parse.urlsplit(target_url).scheme not in ("http", "https"):
            raise ConfigError("HttpPostUploader: target_url must be an http:// or https:// URL")
        if not isinstance(upload_key, str):
            raise ConfigError("HttpPostUploader: upload_key must be a string")
        try:
            self.timeout = positive("timeout", timeout)
            super().__init__(upload_que, spool_dir=spool_dir, batch_bytes=max_batch_bytes,
                             retry_min=retry_min, retry_max=retry_max, clock=clock)
        except ConfigError as exc:
            raise ConfigError("HttpPostUploader: %s" % exc) from None
        self.upload_que = upload_que
        self.target_url = target_url
        self._key = upload_key
        self.url_for_logs = safe_url(target_url)
        self.secrets = [upload_key]
        self._request_url, self._headers = http_target(target_url)
        self._opener = urllib.request.build_opener(_NoRedirect)

    @classmethod
    def config_warnings(cls, args: dict) -> list:
        url = args.get("target_url")
        if isinstance(url, str) and "example.com" in url:
            return ["target_url %s is the example's; put your server's upload.php there" % safe_url(url)]
        return []

    @classmethod
    def spool_path(cls, spool_dir: Any) -> Path:
        # keilib's first uploader spooled in ./spool; keep finding what it left.
        return Path(spool_dir) if spool_dir is not None else Path.cwd() / "spool"

    def describe_target(self) -> str:
        return self.url_for_logs


    def encode(self, item: Any) -> Optional[Tuple[str, str]]:
        return encode_block(item)

    def redact(self, text: str) -> str:
        return super().redact(text).replace(self.target_url, self.url_for_logs)

    def explain(self, exc: Exception) -> str:
        return describe(exc)

    def deliver(self, key: str, text: str, batch_id: str) -> Outcome:
        fields = {"type": "text", "key": self._key, "fname": key, "data": text, "id": batch_id}
        request = urllib.request.Request(self._request_url, data=urllib.parse.urlencode(fields).encode("ascii"),
                                         headers=self._headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status, headers, payload = response.status, response.headers, response.read()
        except urllib.error.HTTPError as answer:     # 3xx (not followed), 4xx, 5xx: an answer all the same
            with answer:
                status, headers, payload = answer.code, answer.headers, answer.read()
        body = payload.decode("utf-8", "replace")
        reason = "HTTP %d %s" % (status, " ".join(body.split())[:200])
        if status == 413:
            return Outcome.too_large(reason, stated_limit(body))
        verdict = classify(status, body)
        if verdict == "ok":
            return Outcome.ok()
        if verdict == "reject":
            return Outcome.reject(reason)
        retry_after = (headers.get("Retry-After") or "").strip()
        if status == 429 and retry_after.isdigit():
            return Outcome.wait(reason, float(retry_after))
        return Outcome.retry(reason)
