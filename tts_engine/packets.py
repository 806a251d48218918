"""Plain data a stream hands out: its audio packets and a snapshot of its statistics.

Both are frozen: a caller may keep them and read them from any thread while the engine goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AudioPacket:
    """20 ms of mono int16 PCM, ready the moment its codec frame decoded."""

    pcm: np.ndarray  # int16 [samples]
    sample_rate: int
    seq: int  # packet index in the stream
    frame: int  # codec frame it came from
    ready_at: float  # time.monotonic() when the engine delivered it

    def tobytes(self) -> bytes:
        return self.pcm.tobytes()


@dataclass(frozen=True)
class StreamStats:
    """One stream's numbers at one moment (`TTSStream.stats` returns the latest snapshot)."""

    opened_at: float
    first_packet_at: float | None = None
    frames: int = 0  # frames generated (also those generated after a cancel, whose audio is dropped)
    steps: int = 0  # engine stages (prefill / predict / talk) this stream took part in
    finish_reason: str | None = None  # "eos", "frame_cap", "cancelled", "error"
    admitted_step: int | None = None  # engine step that first saw the stream
    first_packet_step: int | None = None  # engine step that delivered its first packet
    underruns: int = 0  # packets ready after their real-time playback deadline
