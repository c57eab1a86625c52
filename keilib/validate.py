"""Argument checks for worker constructors: one clear ConfigError per rule.

Constructors run at ``kei.py --check`` time (``keilib.daemon.build_all``),
which prefixes the config file and the ``worker_def`` entry, so a message
from here only names the argument and the rule::

    keiconf.py: worker_def[1] (SerialReader): argument 'baudrate' must be an
    integer from 50 to 4000000, got 'fast'

Each check returns the value (converted where said) so a constructor can write
``self.cycle = number("cycle", cycle, 1, 86400)``.
"""

from __future__ import annotations

import math
import queue
import re

from keilib.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Iterable, Optional, Pattern, Union

# What php/upload.php and php/index.php accept as the <base> of
# YYYYMMDD-<base>.txt and sumYYYYMMDD-<base>.txt (index.php's
# GRAPH_BASE_PATTERN; upload.php allows names up to 100 characters).
FILE_NAME_PART = re.compile(r"[A-Za-z0-9_-]{1,80}\Z")

if TYPE_CHECKING:
    Number = Union[int, float]


def _shown(value: Any) -> str:
    """``repr`` of a value, cut short (a config value may be huge)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 30:
        return "an integer of %d digits" % len(str(abs(value)))
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _range_text(minimum: Optional[Number], maximum: Optional[Number], integer: bool) -> str:
    kind = "an integer" if integer else "a number"
    if minimum is not None and maximum is not None:
        return "%s from %s to %s" % (kind, minimum, maximum)
    if minimum is not None:
        return "%s of at least %s" % (kind, minimum)
    if maximum is not None:
        return "%s of at most %s" % (kind, maximum)
    return "a finite %s" % ("integer" if integer else "number")


def number(name: str, value: Any, minimum: Optional[Number] = None, maximum: Optional[Number] = None,
           integer: bool = False, exclusive_minimum: bool = False) -> Number:
    """``value`` must be an int (or, unless ``integer``, a float), finite,
    within ``[minimum, maximum]`` (``(minimum, maximum]`` with
    ``exclusive_minimum``).  bool and numeric strings are refused; huge ints
    (10**400) are compared exactly, never converted to float."""
    rule = _range_text(minimum, maximum, integer)
    if exclusive_minimum and minimum is not None:
        rule = rule.replace("from %s to" % minimum, "above %s and at most" % minimum).replace(
            "of at least %s" % minimum, "above %s" % minimum)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ConfigError("argument '%s' must be %s, got %s" % (name, rule, _shown(value)))
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError("argument '%s' must be %s, got %s" % (name, rule, _shown(value)))
    too_low = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    if too_low or (maximum is not None and value > maximum):
        raise ConfigError("argument '%s' must be %s, got %s" % (name, rule, _shown(value)))
    return value


def text(name: str, value: Any, pattern: Union[str, Pattern[str], None] = None, why: str = "",
         max_length: Optional[int] = None) -> str:
    """``value`` must be a non-empty str, at most ``max_length`` characters,
    matching ``pattern`` in full; ``why`` says the rule in words."""
    rule = why or ("text matching %s" % (pattern.pattern if hasattr(pattern, "pattern") else pattern))
    if not isinstance(value, str) or not value:
        raise ConfigError("argument '%s' must be %s, got %s" % (name, rule, _shown(value)))
    if max_length is not None and len(value) > max_length:
        raise ConfigError("argument '%s' must be %s (at most %d characters), got %d characters"
                          % (name, rule, max_length, len(value)))
    if pattern is not None and not re.fullmatch(pattern, value):
        raise ConfigError("argument '%s' must be %s, got %s" % (name, rule, _shown(value)))
    return value


def secret(name: str, value: Any, lengths: Iterable[int], why: str) -> str:
    """A password or ID: printable ASCII without spaces, of one of ``lengths``.
    The message never shows the value, only what is wrong with it."""
    allowed = sorted(set(lengths))
    if not isinstance(value, str):
        raise ConfigError("argument '%s' must be %s (a string), got %s" % (name, why, type(value).__name__))
    if len(value) not in allowed:
        raise ConfigError("argument '%s' must be %s, got %d characters" % (name, why, len(value)))
    for position, char in enumerate(value):
        if not "!" <= char <= "~":
            raise ConfigError("argument '%s' must be %s: printable ASCII without spaces; "
                              "character %d is not" % (name, why, position + 1))
    return value


def file_name_part(name: str, value: Any) -> str:
    """A part of a file name that the upload endpoint and the graph page
    accept: 1 to 80 of A-Z a-z 0-9 _ - (no dot, space, slash or non-ASCII)."""
    return text(name, value, FILE_NAME_PART,
                "1 to 80 letters, digits, '_' or '-' (what php/upload.php and php/index.php accept)")


def choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    options = list(choices)
    if isinstance(value, bool) or value not in options:
        raise ConfigError("argument '%s' must be one of %s, got %s"
                          % (name, ", ".join(repr(o) for o in options), _shown(value)))
    return value


def a_queue(name: str, value: Any, required: bool = True) -> Any:
    """A ``queue.Queue`` (None allowed when not ``required``)."""
    if value is None and not required:
        return None
    if not isinstance(value, queue.Queue):
        raise ConfigError("argument '%s' must be a queue.Queue, got %s"
                          % (name, "nothing" if value is None else type(value).__name__))
    return value


def clock(name: str, value: Any) -> Any:
    """A clock (``keilib.clock``): anything with callable ``now``, ``monotonic`` and ``wait``."""
    if not all(callable(getattr(value, method, None)) for method in ("now", "monotonic", "wait")):
        raise ConfigError("argument '%s' must be a clock such as keilib.clock.ScaledClock(60), got %s"
                          % (name, _shown(value)))
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError("argument '%s' must be True or False, got %s" % (name, _shown(value)))
    return value
