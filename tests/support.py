"""Helpers shared by the tests: waiting on conditions, never on fixed sleeps."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01,
             message: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; raise on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (
                timeout, message or getattr(predicate, "__name__", "condition")))
        time.sleep(interval)


def read_text(path: Path) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return ""


def subprocess_env(**extra: str) -> dict:
    """Environment for a kei.py subprocess: the repo and tests importable."""
    env = dict(os.environ)
    env.pop("DEBUG", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS)] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


PYTHON = sys.executable
