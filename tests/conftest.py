"""Fixtures for every test: a fake clock, and a check that no worker thread leaks."""

from __future__ import annotations

import threading
import time

import pytest

from keilib.clock import FakeClock
from keilib.worker import Worker


@pytest.fixture
def fake_clock():
    import datetime
    return FakeClock(datetime.datetime(2026, 5, 20, 14, 0, 0))


@pytest.fixture(autouse=True)
def no_leaked_workers():
    """Fail a test that leaves a Worker thread running (pymodbus habit)."""
    before = {t for t in threading.enumerate() if isinstance(t, Worker)}
    yield
    deadline = time.monotonic() + 3.0
    while True:
        leaked = [t for t in threading.enumerate()
                  if isinstance(t, Worker) and t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    for thread in leaked:
        thread.request_stop()
    assert not leaked, "worker threads left running: %s" % [t.name for t in leaked]
