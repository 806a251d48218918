"""One clock for the agent's timings.

livekit stamps VAD-derived events with wall-clock times (`time.time()`), backdated to when the
speech really started or ended; the agent times everything else on `time.monotonic()`. This maps
such a stamp onto the monotonic clock (a wall-clock step between the two reads is the only error).
"""

from __future__ import annotations

import time


def monotonic_from_wall(wall_ts: float | None) -> float:
    """The monotonic time of a recent wall-clock stamp (now when there is none; never in the future)."""
    now_mono, now_wall = time.monotonic(), time.time()
    if wall_ts is None:
        return now_mono
    return now_mono - max(0.0, now_wall - wall_ts)
