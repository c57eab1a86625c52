"""Alerts: watch the readings and every worker's health, and tell someone.

A ``Watcher`` sits on the readings queue beside the FileRecorder (the
launcher's fan-out gives it every record) and reads the health of every
worker through ``self.registry``.  Its ``rules`` (a list of dicts, checked
when the config is loaded) say what is wrong:

``{'alert': 'threshold', 'sensor': 'BR/E7', 'above': 5000, 'for': 120, 'hysteresis': 200}``
    a value beyond a limit (``above`` or ``below``) for at least ``for``
    seconds (default 0).  Hysteresis: once over, the value must fall below
    ``above - hysteresis`` (rise above ``below + hysteresis``) before the
    rule counts it as back; values in between change nothing.
``{'alert': 'silent', 'sensor': 'C3/temp', 'for': 600}``
    no reading of that sensor for ``for`` seconds (since the last one, or
    since the watcher started when none came yet).
``{'alert': 'link_down', 'for': 300}``
    a meter reader (any worker with a health state ``link``: BrouteReader)
    not polling: its ``link`` is not ``POLL``, or the worker itself is
    waiting to be restarted (launcher state ``BACKOFF``), for ``for`` seconds.
``{'alert': 'spool_stale', 'for': 6 * 3600}``
    an output (any worker with a ``spool_depth`` gauge) holds undelivered
    data that is older than ``for`` seconds.  "Older" is measured from the
    later of the output's last successful delivery (health stamp
    ``last_success``, wall-clock seconds) and the moment the watcher saw its
    spool go from empty to non-empty: data waiting and nothing delivered
    for that long.
``{'alert': 'restart_loop', 'count': 3, 'within': 1800}``
    a worker restarted by the launcher (its ``restarts`` counter) ``count``
    times within ``within`` seconds.  It clears after ``within`` seconds
    without a restart.

Every rule takes an optional ``name`` (shown in the alert); health rules an
optional ``worker`` (a class name such as ``'HttpPostUploader'`` or a
``worker_def[N] (...)`` label) to watch only that worker.  A rule alerts per
subject: per sensor, or per worker.

No storms: one message when an alert starts, one when it clears, and while
it lasts a reminder at most every ``remind`` seconds (default 6 hours; None:
never).  Time is the injected clock's.

Channels, each given every message: the log (always: WARNING when an alert
starts or reminds, INFO when it clears); a webhook; e-mail; an MQTT topic.
Each channel but the log has a small outbox and its own sender thread, so a
slow or dead server never holds up the rules; a failed send is retried with
back-off (``keilib.worker.Backoff``) until it goes through, so a message is
delivered once, late rather than never (an outbox keeps the newest
``OUTBOX_SIZE`` messages; what is still in an outbox when kei stops is
logged as not sent).  Passwords, the webhook URL's path and query and
its headers are never logged: a channel is named by scheme and host only.

Webhook (``webhook_url``): an HTTP POST.  ``webhook_format='json'`` (default)
sends ``application/json``::

    {"text": "kei ALERT: power high: BR/E7 = 5230 is above 5000 (for 2 min)",
     "content": "<the same text>",            # Slack/Mattermost read "text", Discord "content"
     "event": "start",                         # start | reminder | clear
     "rule": "power high", "alert": "threshold", "subject": "BR/E7",
     "detail": "BR/E7 = 5230 is above 5000 (for 2 min)",
     "value": 5230,                            # threshold rules; null for the others
     "since": "2026-12-01T17:45:00",           # when the condition started (local time)
     "time": "2026-12-01T17:47:00",            # this message (local time)
     "host": "raspberrypi"}

``webhook_format='text'`` posts the text alone as ``text/plain`` (ntfy-style
topic URLs).  ``webhook_headers`` adds headers (e.g. an ``Authorization``).
Any 2xx answer is success; anything else is retried.

Mail (``mail``): a dict ``{'host', 'port' (587), 'username', 'password',
'sender', 'to' (address or list), 'starttls' (True), 'ca_file'}``; one
message per alert event, subject = the text, through SMTP with STARTTLS
(certificate checked against the system CAs or ``ca_file``) and login.

MQTT (``mqtt``): a dict ``{'host', 'port' (1883), 'username', 'password',
'topic' ('kei/alerts'), 'tls', 'ca_file', 'qos' (1)}``; the JSON payload
above, published (not retained) with paho-mqtt, imported only when
configured (``pip install 'kei[mqtt]'`` or ``sudo apt install
python3-paho-mqtt``).
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import os
import queue
import socket
import ssl
import threading
from urllib.parse import urlsplit
from collections.abc import Mapping

from keilib import validate
from keilib.clock import Clock
from keilib.errors import ConfigError
from keilib.logutil import LogLimiter, redact
from keilib.record import HISTORY_DATA_ID, Record, format_value
from keilib.worker import Backoff, Worker

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Dict, List, Optional, Tuple

__all__ = ["Watcher", "RULE_KINDS"]

logger = logging.getLogger(__name__)

LINK_UP = "POLL"
RULE_KINDS = ("threshold", "silent", "link_down", "spool_stale", "restart_loop")
START, REMINDER, CLEAR = "start", "reminder", "clear"
OUTBOX_SIZE = 100              # messages a channel keeps while its server is away
RETRY_FIRST = 5.0              # seconds before the first retry of a failed send
RETRY_MAX = 600.0              # longest wait between two retries
SEND_TIMEOUT = 15.0            # real seconds a single send may take
STOP_GRACE = 2.0               # real seconds a sender gets to finish at stop
DEFAULT_REMIND = 6 * 3600.0
DEFAULT_INTERVAL = 5.0         # seconds between two looks at the health of the workers
_SENSOR = r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+"


def _duration(seconds: float) -> str:
    """'45 s', '2 min', '3.5 h' for messages."""
    if seconds < 120:
        return "%d s" % round(seconds)
    if seconds < 2 * 3600:
        return "%d min" % round(seconds / 60.0)
    return "%.1f h" % (seconds / 3600.0)


# -- rules ----------------------------------------------------------------------

class Rule:
    """One checked rule.  ``observe`` gives {subject: (active, detail, value)}."""

    ARGS: Tuple[str, ...] = ()
    REQUIRED: Tuple[str, ...] = ()

    def __init__(self, where: str, spec: Mapping[str, Any]) -> None:
        self.where = where
        allowed = set(self.ARGS) | {"alert", "name"}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise ConfigError("argument '%s': unknown key %r for alert '%s'; known: %s"
                              % (where, unknown[0], spec["alert"], ", ".join(sorted(allowed))))
        for key in self.REQUIRED:
            if key not in spec:
                raise ConfigError("argument '%s': alert '%s' needs %r" % (where, spec["alert"], key))
        self.kind = spec["alert"]
        self.name = self.default_name(spec) if spec.get("name") is None else \
            validate.text(where + "['name']", spec["name"], r"[^\r\n]+", "one line of text", 80)

    def default_name(self, spec: Mapping[str, Any]) -> str:
        return self.kind.replace("_", " ")

    def seconds(self, spec: Mapping[str, Any], key: str, default: Optional[float] = None,
                minimum: float = 0) -> float:
        value = spec.get(key, default)
        return float(validate.number("%s['%s']" % (self.where, key), value, minimum, 366 * 86400))

    def worker_filter(self, spec: Mapping[str, Any]) -> Optional[str]:
        if spec.get("worker") is None:
            return None
        return validate.text(self.where + "['worker']", spec["worker"], None,
                             "a worker's class name such as 'HttpPostUploader' or its label", 120)

    @staticmethod
    def matches(snap: Mapping[str, Any], wanted: Optional[str]) -> bool:
        """Whether a health snapshot is of the worker a rule's ``worker`` names."""
        return wanted is None or wanted in (snap["name"], snap["kind"])

    # records (threshold, silent) and health (the others)
    def take(self, record: Record, now: float) -> None:
        pass

    def observe(self, now: float, wall: float, snapshots: List[Dict[str, Any]]
                ) -> Dict[str, Tuple[bool, str, Any]]:
        raise NotImplementedError


class ThresholdRule(Rule):
    ARGS = ("sensor", "above", "below", "for", "hysteresis")
    REQUIRED = ("sensor",)

    def __init__(self, where: str, spec: Mapping[str, Any]) -> None:
        super().__init__(where, spec)
        self.sensor = validate.text(where + "['sensor']", spec["sensor"], _SENSOR,
                                    "'UNIT/SENSOR' such as 'BR/E7' or 'unit1/temp'")
        if ("above" in spec) == ("below" in spec):
            raise ConfigError("argument '%s': a threshold needs exactly one of 'above' or 'below'" % where)
        self.above = "above" in spec
        key = "above" if self.above else "below"
        self.limit = validate.number("%s['%s']" % (where, key), spec[key])
        self.hold = self.seconds(spec, "for", 0)
        self.hysteresis = float(validate.number(where + "['hysteresis']", spec.get("hysteresis", 0), 0))
        self.over_since: Optional[float] = None     # monotonic: over the limit since
        self.over = False                           # the hysteresis state
        self.value: Any = None

    def default_name(self, spec: Mapping[str, Any]) -> str:
        return "%s %s %s" % (spec.get("sensor"), "above" if "above" in spec else "below",
                             spec.get("above", spec.get("below")))

    def take(self, record: Record, now: float) -> None:
        if "%s/%s" % (record.unit, record.sensor) != self.sensor:
            return
        value = record.value
        self.value = value
        beyond = value > self.limit if self.above else value < self.limit
        back = value < self.limit - self.hysteresis if self.above else value > self.limit + self.hysteresis
        if beyond and not self.over:
            self.over, self.over_since = True, now
        elif back and self.over:
            self.over, self.over_since = False, None

    def observe(self, now, wall, snapshots):
        if self.value is None:
            return {}
        active = self.over and self.over_since is not None and now - self.over_since >= self.hold
        detail = "%s = %s is %s %s" % (self.sensor, format_value(self.value),
                                        "above" if self.above else "below", format_value(self.limit))
        if active and self.hold:
            detail += " (for %s)" % _duration(now - (self.over_since or now))
        if not self.over:
            detail = "%s = %s is back" % (self.sensor, format_value(self.value))
        return {self.sensor: (active, detail, self.value)}


class SilentRule(Rule):
    ARGS = ("sensor", "for")
    REQUIRED = ("sensor", "for")

    def __init__(self, where: str, spec: Mapping[str, Any]) -> None:
        super().__init__(where, spec)
        self.sensor = validate.text(where + "['sensor']", spec["sensor"], _SENSOR,
                                    "'UNIT/SENSOR' such as 'BR/E7' or 'unit1/temp'")
        self.silence = self.seconds(spec, "for", minimum=1)
        self.last_seen: Optional[float] = None
        self.started: Optional[float] = None

    def default_name(self, spec: Mapping[str, Any]) -> str:
        return "%s silent" % spec.get("sensor")

    def take(self, record: Record, now: float) -> None:
        if "%s/%s" % (record.unit, record.sensor) == self.sensor:
            self.last_seen = now

    def observe(self, now, wall, snapshots):
        if self.started is None:
            self.started = now
        since = self.last_seen if self.last_seen is not None else self.started
        quiet = now - since
        if quiet >= self.silence:
            what = "no reading" if self.last_seen is None else "no reading in %s" % _duration(quiet)
            return {self.sensor: (True, "%s: %s" % (self.sensor, what), None)}
        return {self.sensor: (False, "%s: readings again" % self.sensor, None)}


class LinkDownRule(Rule):
    ARGS = ("for", "worker")
    REQUIRED = ("for",)

    def __init__(self, where: str, spec: Mapping[str, Any]) -> None:
        super().__init__(where, spec)
        self.hold = self.seconds(spec, "for", minimum=0)
        self.worker = self.worker_filter(spec)
        self.down_since: Dict[str, float] = {}

    def default_name(self, spec: Mapping[str, Any]) -> str:
        return "meter link down"

    def observe(self, now, wall, snapshots):
        result = {}
        for snap in snapshots:
            link = snap["states"].get("link")
            if link is None or not self.matches(snap, self.worker):
                continue
            down = link != LINK_UP or snap["states"].get("worker") == "BACKOFF"
            if not down:
                self.down_since.pop(snap["name"], None)
                result[snap["name"]] = (False, "%s: link up (%s)" % (snap["name"], link), None)
                continue
            since = self.down_since.setdefault(snap["name"], now)
            state = link if snap["states"].get("worker") != "BACKOFF" else "worker restarting"
            result[snap["name"]] = (now - since >= self.hold, "%s: link %s for %s" % (
                snap["name"], state, _duration(now - since)), None)
        return result


class SpoolStaleRule(Rule):
    ARGS = ("for", "worker")
    REQUIRED = ("for",)

    def __init__(self, where: str, spec: Mapping[str, Any]) -> None:
        super().__init__(where, spec)
        self.age = self.seconds(spec, "for", minimum=1)
        self.worker = self.worker_filter(spec)
        self.waiting_since: Dict[str, float] = {}    # wall seconds: spool seen non-empty since

    def default_name(self, spec: Mapping[str, Any]) -> str:
        return "output not delivering"

    def observe(self, now, wall, snapshots):
        result = {}
        for snap in snapshots:
            depth = snap["gauges"].get("spool_depth")
            if depth is None or not self.matches(snap, self.worker):
                continue
            if depth <= 0:
                self.waiting_since.pop(snap["name"], None)
                result[snap["name"]] = (False, "%s: spool delivered" % snap["name"], None)
                continue
            since = max(self.waiting_since.setdefault(snap["name"], wall),
                        snap["stamps"].get("last_success", 0.0))
            age = wall - since
            result[snap["name"]] = (age >= self.age, "%s: %s item%s waiting, nothing delivered for %s"
                                    % (snap["name"], format_value(depth), "" if depth == 1 else "s",
                                       _duration(max(0.0, age))), None)
        return result


class RestartLoopRule(Rule):
    ARGS = ("count", "within", "worker")
    REQUIRED = ("count", "within")

    def __init__(self, where: str, spec: Mapping[str, Any]) -> None:
        super().__init__(where, spec)
        self.count = validate.number(where + "['count']", spec["count"], 1, 1000, integer=True)
        self.within = self.seconds(spec, "within", minimum=1)
        self.worker = self.worker_filter(spec)
        self.seen: Dict[str, int] = {}                              # restarts counter last seen
        self.times: Dict[str, collections.deque] = {}               # monotonic times of restarts
        self.looping: set = set()                                   # workers alerted on

    def default_name(self, spec: Mapping[str, Any]) -> str:
        return "worker restarting in a loop"

    def observe(self, now, wall, snapshots):
        result = {}
        for snap in snapshots:
            if not self.matches(snap, self.worker):
                continue
            restarts = snap["counters"].get("restarts", 0)
            name = snap["name"]
            times = self.times.setdefault(name, collections.deque())
            if name in self.seen and restarts > self.seen[name]:
                times.extend([now] * min(restarts - self.seen[name], 1000))
            self.seen[name] = restarts
            while times and now - times[0] > self.within:
                times.popleft()
            recent = len(times)
            if recent >= self.count:
                self.looping.add(name)
            elif recent == 0:
                self.looping.discard(name)
            # in between: unchanged (it clears only after a whole quiet window)
            if name in self.looping:
                result[name] = (True, "%s restarted %d times in %s" % (name, recent, _duration(self.within)),
                                None)
            else:
                result[name] = (False, "%s: no restart in %s" % (name, _duration(self.within)), None)
        return result


RULE_CLASSES = {"threshold": ThresholdRule, "silent": SilentRule, "link_down": LinkDownRule,
                "spool_stale": SpoolStaleRule, "restart_loop": RestartLoopRule}


def parse_rules(rules: Any) -> List[Rule]:
    if not isinstance(rules, (list, tuple)) or not rules:
        raise ConfigError("argument 'rules' must be a non-empty list of dicts such as "
                          "{'alert': 'threshold', 'sensor': 'BR/E7', 'above': 5000, 'for': 120}")
    parsed = []
    for index, spec in enumerate(rules):
        where = "rules[%d]" % index
        if not isinstance(spec, Mapping) or spec.get("alert") not in RULE_KINDS:
            raise ConfigError("argument '%s' must be a dict whose 'alert' is one of %s, got %.80r"
                              % (where, ", ".join(RULE_KINDS), spec))
        parsed.append(RULE_CLASSES[spec["alert"]](where, spec))
    return parsed


# -- alert events -------------------------------------------------------------------

class Event:
    """One message: an alert started, is still on (reminder) or cleared."""

    def __init__(self, event: str, rule: Rule, subject: str, detail: str, value: Any,
                 since: datetime.datetime, time: datetime.datetime, host: str) -> None:
        self.event, self.rule, self.subject, self.detail, self.value = event, rule, subject, detail, value
        self.since, self.time, self.host = since, time, host

    @property
    def text(self) -> str:
        word = {START: "ALERT", REMINDER: "STILL", CLEAR: "CLEARED"}[self.event]
        return "kei %s: %s: %s" % (word, self.rule.name, self.detail)

    def payload(self) -> Dict[str, Any]:
        return {"text": self.text, "content": self.text, "event": self.event, "rule": self.rule.name,
                "alert": self.rule.kind, "subject": self.subject, "detail": self.detail,
                "value": self.value, "since": self.since.isoformat(timespec="seconds"),
                "time": self.time.isoformat(timespec="seconds"), "host": self.host}


class _Active:
    __slots__ = ("since_wall", "reminded_at")

    def __init__(self, since_wall: datetime.datetime, now: float) -> None:
        self.since_wall = since_wall
        self.reminded_at = now


# -- channels ------------------------------------------------------------------------

class Channel:
    """A destination with an outbox and a sender thread (module doc)."""

    kind = "channel"

    def __init__(self) -> None:
        self.outbox: "collections.deque[Event]" = collections.deque()
        self.lock = threading.Condition()
        self.thread: Optional[threading.Thread] = None
        self.stop_event = threading.Event()
        self.sent = 0
        self.failures = 0
        self.dropped = 0

    def describe(self) -> str:
        raise NotImplementedError

    def deliver(self, event: Event) -> None:
        """Send one message; raise on failure (any exception)."""
        raise NotImplementedError

    def secrets(self) -> List[str]:
        """Texts that must never reach a log line (removed from error messages)."""
        return []

    def clean(self, exc: BaseException) -> str:
        text = "%s: %s" % (type(exc).__name__, exc)
        for secret in sorted(self.secrets(), key=len, reverse=True):
            if secret:
                text = text.replace(secret, "<redacted>")
        return redact(text)[:300]

    def put(self, event: Event) -> None:
        with self.lock:
            if len(self.outbox) >= OUTBOX_SIZE:
                self.outbox.popleft()
                self.dropped += 1
                logger.error("alerts: %s outbox full; the oldest message is dropped", self.describe())
            self.outbox.append(event)
            self.lock.notify()

    def pending(self) -> int:
        with self.lock:
            return len(self.outbox)

    def start(self, clock: Clock, health: Any) -> None:
        self.stop_event.clear()
        # its own limiter: a LogLimiter is not shared between threads
        limiter = LogLimiter(logger, clock.monotonic)
        self.thread = threading.Thread(target=self._run, args=(clock, health, limiter),
                                       name="alerts-%s" % self.kind, daemon=True)
        self.thread.start()

    def stop(self, timeout: float) -> None:
        self.stop_event.set()
        with self.lock:
            self.lock.notify_all()
        if self.thread is not None:
            self.thread.join(timeout)

    def _run(self, clock: Clock, health: Any, limiter: LogLimiter) -> None:
        backoff = Backoff(RETRY_FIRST, RETRY_MAX, jitter=True)
        while not self.stop_event.is_set():
            with self.lock:
                while not self.outbox and not self.stop_event.is_set():
                    self.lock.wait(1.0)
                if self.stop_event.is_set():
                    break
                event = self.outbox[0]
            try:
                self.deliver(event)
            except Exception as exc:  # noqa: BLE001 - a channel never kills the watcher
                self.failures += 1
                health.count("send_failures_%s" % self.kind)
                delay = backoff.next()
                limiter.warning(self.describe(), "failed sends",
                                "alerts: sending to %s failed (%s); retrying in %.0f s",
                                self.describe(), self.clean(exc), delay)
                if clock.wait(self.stop_event, delay):
                    break
                limiter.flush()
                continue
            backoff.reset()
            with self.lock:
                if self.outbox and self.outbox[0] is event:
                    self.outbox.popleft()
            self.sent += 1
            health.count("sent_%s" % self.kind)
            logger.info("alerts: %s sent to %s", event.event, self.describe())
        limiter.flush(final=True)
        left = self.pending()
        if left:
            logger.warning("alerts: %d message%s for %s not sent before stop", left,
                           "" if left == 1 else "s", self.describe())


class _HideSecrets(logging.Filter):
    """On urllib3's logger while a webhook channel runs: its DEBUG line
    ``"POST /services/T0/B0/<token> HTTP/1.1" 200`` would show the URL's
    path, which is the secret of Slack and Discord webhooks."""

    def __init__(self, secrets: List[str]) -> None:
        super().__init__()
        self.secrets = sorted((s for s in secrets if s), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: let the handler report it
            return True
        cleaned = text
        for secret in self.secrets:
            cleaned = cleaned.replace(secret, "<redacted>")
        if cleaned != text:
            record.msg, record.args = cleaned, None
        return True


URLLIB3_LOGGER = "urllib3.connectionpool"


class WebhookChannel(Channel):
    kind = "webhook"

    def __init__(self, url: Any, fmt: Any, headers: Any) -> None:
        super().__init__()
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("argument 'webhook_url' must be an http:// or https:// URL")
        self.url = url
        self.parts = parts
        self.format = validate.choice("webhook_format", fmt, ("json", "text"))
        if headers is not None and (not isinstance(headers, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
            raise ConfigError("argument 'webhook_headers' must be a dict of text to text")
        self.headers = dict(headers or {})

    def describe(self) -> str:
        # the path and query of a webhook URL are its token: never shown
        return "webhook %s://%s" % (self.parts.scheme, self.parts.netloc.rpartition("@")[2])

    def secrets(self) -> List[str]:
        tail = self.parts.path + (("?" + self.parts.query) if self.parts.query else "")
        return [self.url, tail, self.parts.path if len(self.parts.path) > 1 else "",
                self.parts.query, self.parts.password or ""] + list(self.headers.values())

    def start(self, clock: Clock, health: Any) -> None:
        self.hide = _HideSecrets(self.secrets())
        logging.getLogger(URLLIB3_LOGGER).addFilter(self.hide)
        super().start(clock, health)

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        logging.getLogger(URLLIB3_LOGGER).removeFilter(self.hide)

    def deliver(self, event: Event) -> None:
        import requests
        headers = dict(self.headers)
        if self.format == "json":
            response = requests.post(self.url, json=event.payload(), headers=headers, timeout=SEND_TIMEOUT)
        else:
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            response = requests.post(self.url, data=event.text.encode("utf-8"), headers=headers,
                                     timeout=SEND_TIMEOUT)
        if not 200 <= response.status_code < 300:
            raise IOError("HTTP %d" % response.status_code)


def _ca_file(argument: str, value: Any) -> Optional[str]:
    if value is not None and (not isinstance(value, str) or not os.path.isfile(value)):
        raise ConfigError("argument '%s' key 'ca_file' must name an existing file, got %.80r" % (argument, value))
    return value


def _addresses(value: Any) -> List[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(
            isinstance(a, str) and "@" in a and not any(c.isspace() for c in a) for a in items):
        raise ConfigError("argument 'mail' key 'to' must be an e-mail address or a list of them")
    return list(items)


class MailChannel(Channel):
    kind = "mail"
    KEYS = ("host", "port", "username", "password", "sender", "to", "starttls", "ca_file")

    def __init__(self, mail: Any) -> None:
        super().__init__()
        if not isinstance(mail, Mapping):
            raise ConfigError("argument 'mail' must be a dict with host, username, password, sender, to")
        unknown = sorted(set(mail) - set(self.KEYS))
        if unknown:
            raise ConfigError("argument 'mail': unknown key %r; known: %s" % (unknown[0], ", ".join(self.KEYS)))
        self.host = validate.text("mail['host']", mail.get("host"), r"[^\s/]+", "a host name or address")
        self.port = validate.number("mail['port']", mail.get("port", 587), 1, 65535, integer=True)
        self.username = mail.get("username")
        self.password = mail.get("password")
        if (self.username is None) != (self.password is None) or (
                self.username is not None and not (isinstance(self.username, str) and isinstance(self.password, str))):
            raise ConfigError("argument 'mail': 'username' and 'password' must be given together, as text")
        self.sender = validate.text("mail['sender']", mail.get("sender"), r"[^\s@]+@[^\s@]+",
                                    "an e-mail address")
        self.to = _addresses(mail.get("to"))
        self.starttls = validate.flag("mail['starttls']", mail.get("starttls", True))
        if self.username is not None and not self.starttls:
            raise ConfigError("argument 'mail': a login needs 'starttls': True (no password in clear text)")
        self.ca_file = _ca_file("mail", mail.get("ca_file"))

    def describe(self) -> str:
        return "mail via %s:%d" % (self.host, self.port)

    def secrets(self) -> List[str]:
        return [self.password or ""]

    def deliver(self, event: Event) -> None:
        import smtplib
        from email.message import EmailMessage
        message = EmailMessage()
        message["Subject"] = event.text
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        payload = event.payload()
        message.set_content("%s\n\n%s\n" % (event.text, "\n".join(
            "%s: %s" % (key, payload[key]) for key in ("event", "rule", "subject", "detail", "value",
                                                        "since", "time", "host"))))
        with smtplib.SMTP(self.host, self.port, timeout=SEND_TIMEOUT) as smtp:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=self.ca_file))
                smtp.ehlo()
            if self.username is not None:
                smtp.login(self.username, self.password)
            smtp.send_message(message)


class MqttChannel(Channel):
    kind = "mqtt"
    KEYS = ("host", "port", "username", "password", "topic", "tls", "ca_file", "qos")

    def __init__(self, mqtt: Any) -> None:
        super().__init__()
        if not isinstance(mqtt, Mapping):
            raise ConfigError("argument 'mqtt' must be a dict with at least 'host'")
        unknown = sorted(set(mqtt) - set(self.KEYS))
        if unknown:
            raise ConfigError("argument 'mqtt': unknown key %r; known: %s" % (unknown[0], ", ".join(self.KEYS)))
        self.host = validate.text("mqtt['host']", mqtt.get("host"), r"[^\s/]+", "a host name or address")
        self.port = validate.number("mqtt['port']", mqtt.get("port", 1883), 1, 65535, integer=True)
        self.username = mqtt.get("username")
        self.password = mqtt.get("password")
        if self.username is not None and not isinstance(self.username, str):
            raise ConfigError("argument 'mqtt' key 'username' must be text")
        if self.password is not None and (not isinstance(self.password, str) or self.username is None):
            raise ConfigError("argument 'mqtt' key 'password' must be text, and needs 'username'")
        self.topic = validate.text("mqtt['topic']", mqtt.get("topic", "kei/alerts"), r"[^+#\0]+",
                                   "a topic without '+' or '#'")
        self.tls = validate.flag("mqtt['tls']", mqtt.get("tls", False))
        self.ca_file = _ca_file("mqtt", mqtt.get("ca_file"))
        self.qos = validate.choice("mqtt['qos']", mqtt.get("qos", 1), (0, 1, 2))
        try:
            import paho.mqtt.client  # noqa: F401 - only to say early that it is missing
        except ImportError as exc:
            raise ConfigError("argument 'mqtt' needs the Python package paho-mqtt (%s). Install it with:  "
                              "pip install 'kei[mqtt]'   or, on Debian / Raspberry Pi OS:  "
                              "sudo apt install python3-paho-mqtt" % exc) from exc

    def describe(self) -> str:
        return "mqtt %s:%d" % (self.host, self.port)

    def secrets(self) -> List[str]:
        return [self.password or ""]

    def deliver(self, event: Event) -> None:
        # One short connection per message: alerts are rare, and nothing is
        # left half-connected while the broker is away.
        import paho.mqtt.client as mqtt
        try:
            from paho.mqtt.enums import CallbackAPIVersion
            client = mqtt.Client(CallbackAPIVersion.VERSION2, clean_session=True)
        except ImportError:                    # paho-mqtt 1.x
            client = mqtt.Client(clean_session=True)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls or self.ca_file:
            client.tls_set(ca_certs=self.ca_file)
        client.connect(self.host, self.port, keepalive=30)
        client.loop_start()
        try:
            info = client.publish(self.topic, json.dumps(event.payload()), qos=self.qos)
            info.wait_for_publish(SEND_TIMEOUT)
            if not info.is_published():
                raise IOError("the broker did not confirm the message")
        finally:
            client.disconnect()
            client.loop_stop()


# -- the worker ------------------------------------------------------------------------

class Watcher(Worker):
    """Send alerts about readings and worker health (see the module doc).

    Arguments: ``record_que`` (the readings, beside the FileRecorder),
    ``rules`` (list of dicts, module doc), ``remind`` (seconds between two
    reminders of a lasting alert; None: never), ``interval`` (seconds between
    two looks at the workers' health), ``webhook_url`` / ``webhook_format`` /
    ``webhook_headers``, ``mail`` (dict), ``mqtt`` (dict), ``host`` (the name
    in messages; default the host name).

    ``worker_def`` entry::

        {'class': Watcher,
         'args': {'record_que': record_que,
                  'rules': [{'alert': 'threshold', 'sensor': 'BR/E7', 'above': 5000,
                             'for': 120, 'hysteresis': 500, 'name': 'power high'},
                            {'alert': 'link_down', 'for': 600}],
                  'webhook_url': 'https://ntfy.sh/my-kei-alerts', 'webhook_format': 'text'}}
    """

    CONSUMES = ("record_que",)
    # Rules need every reading (a threshold may hinge on one value), and
    # readings are small: hold, like the recorder.
    BUFFER_POLICY = "hold"

    def __init__(self, record_que: "queue.Queue[Any]", rules: Any, remind: Optional[float] = DEFAULT_REMIND,
                 interval: float = DEFAULT_INTERVAL, webhook_url: Optional[str] = None,
                 webhook_format: str = "json", webhook_headers: Optional[Mapping[str, str]] = None,
                 mail: Optional[Mapping[str, Any]] = None, mqtt: Optional[Mapping[str, Any]] = None,
                 host: Optional[str] = None, clock: Optional[Clock] = None, name: Optional[str] = None):
        super().__init__(clock=clock, name=name)
        self.record_que = validate.a_queue("record_que", record_que)
        self.rules = parse_rules(rules)
        self.remind = None if remind is None else float(validate.number("remind", remind, 60))
        self.interval = float(validate.number("interval", interval, 0.1, 3600))
        self.host = socket.gethostname() if host is None else validate.text(
            "host", host, r"[^\r\n]+", "one line of text", 80)
        self.channels: List[Channel] = []
        if webhook_url is not None:
            self.channels.append(WebhookChannel(webhook_url, webhook_format, webhook_headers))
        elif webhook_headers is not None:
            raise ConfigError("argument 'webhook_headers' needs 'webhook_url'")
        if mail is not None:
            self.channels.append(MailChannel(mail))
        if mqtt is not None:
            self.channels.append(MqttChannel(mqtt))
        self.active: Dict[Tuple[int, str], _Active] = {}
        self.history: "collections.deque[Event]" = collections.deque(maxlen=200)   # for tests, status
        self.next_look: Optional[float] = None
        self.limiter = LogLimiter(logger, self.clock.monotonic)
        # A threshold without a minimum duration acts on the reading that crosses it.
        self.at_once = any(isinstance(r, ThresholdRule) and r.hold == 0 for r in self.rules)

    # -- rules ----------------------------------------------------------------
    def take(self, item: Any) -> None:
        """Give one queue item to the record rules."""
        if isinstance(item, Record):
            record = item
        else:
            try:
                record = Record.from_legacy(item, self.clock.now())
            except (TypeError, ValueError) as exc:
                self.limiter.warning(self.name, "unusable items", "%s: skipped an unusable item %.80r: %s",
                                     self.name, item, exc)
                return
        if record.data_id == HISTORY_DATA_ID:
            return                     # back-filled history: not what is happening now
        self.health.count("in")
        now = self.clock.monotonic()
        for rule in self.rules:
            rule.take(record, now)

    def evaluate(self) -> List[Event]:
        """Look at every rule now; emit and return the messages that are due."""
        now = self.clock.monotonic()
        wall_dt = self.clock.now()
        wall = wall_dt.timestamp()
        snapshots = [health.snapshot() for health in self.registry] if self.registry is not None else []
        events = []
        for index, rule in enumerate(self.rules):
            try:
                seen = rule.observe(now, wall, snapshots)
            except Exception:  # noqa: BLE001 - one odd snapshot must not stop the others
                logger.exception("alerts: rule %r failed", rule.name)
                continue
            for subject, (on, detail, value) in seen.items():
                key = (index, subject)
                current = self.active.get(key)
                if on and current is None:
                    current = self.active[key] = _Active(wall_dt, now)
                    events.append(Event(START, rule, subject, detail, value, wall_dt, wall_dt, self.host))
                elif on and self.remind is not None and now - current.reminded_at >= self.remind:
                    current.reminded_at = now
                    events.append(Event(REMINDER, rule, subject, detail, value, current.since_wall, wall_dt,
                                        self.host))
                elif not on and current is not None:
                    del self.active[key]
                    events.append(Event(CLEAR, rule, subject, "%s (lasted %s)" % (
                        detail, _duration((wall_dt - current.since_wall).total_seconds())), value,
                        current.since_wall, wall_dt, self.host))
        for event in events:
            self.emit(event)
        self.health.gauge("active_alerts", len(self.active))
        return events

    def emit(self, event: Event) -> None:
        self.history.append(event)
        self.health.count("alerts_%s" % event.event)
        logger.log(logging.INFO if event.event == CLEAR else logging.WARNING, "%s", event.text)
        for channel in self.channels:
            channel.put(event)

    # -- the thread -------------------------------------------------------------
    def setup(self) -> None:
        for channel in self.channels:
            channel.start(self.clock, self.health)
        self.next_look = self.clock.monotonic()

    def step(self) -> None:
        assert self.next_look is not None
        left = self.next_look - self.clock.monotonic()
        if left > 0:
            item = self.get(self.record_que, timeout=self.clock.to_real(left))
            if item is None:
                return
            self.take(item)
            if not self.at_once:
                return                  # the next look is due within 'interval'
        self.evaluate()
        self.limiter.flush()
        now = self.clock.monotonic()
        if now >= self.next_look:
            self.next_look = now + self.interval

    def cleanup(self) -> None:
        for channel in self.channels:
            channel.stop_event.set()
        for channel in self.channels:
            channel.stop(timeout=STOP_GRACE)
        self.limiter.flush(final=True)
