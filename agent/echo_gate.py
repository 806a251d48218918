"""Echo gate: keeps the agent's own voice, picked up by the user's microphone, from barging in.

While the agent's audio is playing, each microphone frame is compared with the loudest audio the
agent played in the last `window_s` (the echo path's delay). A frame quieter than
`min_ratio` x that level is what echo (after the browser's echo cancellation) looks like and is
replaced by silence before VAD and STT see it; a user talking over the agent is louder than the
residual echo and passes untouched. No playback, no gating: unlike a blanket "ignore interruptions
for 3 s", a user who speaks up is heard from the first frame.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from livekit import rtc
from livekit.agents.voice import io


@dataclass(frozen=True)
class EchoGateConfig:
    enabled: bool = True
    min_ratio: float = 0.1  # user speech must reach this fraction of the played level (-20 dB):
    # residual echo after browser AEC plus the speaker-to-mic path is typically 20-40 dB down
    window_s: float = 0.4  # how long played audio can still come back through the mic
    silence_rms: float = 1e-4  # played audio quieter than this is treated as no playback

    def __post_init__(self) -> None:
        if not 0 < self.min_ratio <= 10:
            raise ValueError("echo min_ratio must be in (0, 10]")
        if self.window_s <= 0:
            raise ValueError("echo window_s must be > 0")


def frame_rms(frame: rtc.AudioFrame) -> float:
    samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / 32768.0
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


class EchoGate(io.AudioInput):
    """An AudioInput wrapping the real one; feed it what the agent plays through `observe_played`."""

    def __init__(self, source: io.AudioInput, config: EchoGateConfig | None = None) -> None:
        super().__init__(label="EchoGate", source=source)
        self.config = config or EchoGateConfig()
        self._played: deque[tuple[float, float]] = deque()  # (monotonic time, rms) of played frames
        self.gated_frames = 0
        self.passed_frames = 0

    def observe_played(self, frame: rtc.AudioFrame) -> None:
        """Called for every frame the agent hands to the transport."""
        now = time.monotonic()
        self._played.append((now, frame_rms(frame)))
        self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.config.window_s
        while self._played and self._played[0][0] < horizon:
            self._played.popleft()

    def playback_level(self) -> float:
        self._trim(time.monotonic())
        return max((rms for _, rms in self._played), default=0.0)

    def is_echo(self, frame: rtc.AudioFrame) -> bool:
        if not self.config.enabled:
            return False
        played = self.playback_level()
        if played < self.config.silence_rms:
            return False
        return frame_rms(frame) < self.config.min_ratio * played

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await super().__anext__()
        if self.is_echo(frame):
            self.gated_frames += 1
            return rtc.AudioFrame(data=bytes(frame.samples_per_channel * frame.num_channels * 2),
                                  sample_rate=frame.sample_rate, num_channels=frame.num_channels,
                                  samples_per_channel=frame.samples_per_channel)
        self.passed_frames += 1
        return frame
