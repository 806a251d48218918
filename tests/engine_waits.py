"""Waiting for the engine thread in tests (it runs concurrently with the test)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_stats(engine, ok: Callable[[dict], bool], timeout: float = 20.0, what: str = "never came") -> dict:
    """Block until the engine's stats satisfy `ok`; return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = engine.stats()
        if ok(stats):
            return stats
        time.sleep(0.01)
    raise AssertionError(f"{what}: {engine.stats()}")


def wait_idle(engine, timeout: float = 20.0) -> dict:
    """Block until no stream holds a slot, runs, or waits to be admitted; return the stats."""
    return wait_stats(engine, lambda s: s["active_streams"] == 0 and s["running_utterances"] == 0
                      and s["pending"] == 0, timeout, "engine did not go idle")
