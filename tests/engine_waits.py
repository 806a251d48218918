"""Waiting for the engine thread in tests (it runs concurrently with the test)."""

from __future__ import annotations

import time


def wait_idle(engine, timeout: float = 20.0) -> dict:
    """Block until no stream holds a slot, runs, or waits to be admitted; return the stats."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats["active_streams"] == 0 and stats["running_utterances"] == 0 and stats["pending"] == 0:
            return stats
        time.sleep(0.01)
    raise AssertionError(f"engine did not go idle: {engine.stats()}")
