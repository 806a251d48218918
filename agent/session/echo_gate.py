"""Echo gate: keeps the agent's own voice, picked up by the user's microphone, from barging in.

While the agent's audio is playing, each microphone frame is compared with the loudest audio the
agent played in the last `window_s` (the echo path's delay). A frame quieter than the gate's ratio
x that level is what echo looks like and is replaced by silence before VAD and STT see it; a user
talking over the agent is louder than the echo and passes untouched. No playback, no gating:
unlike a blanket "ignore interruptions for 3 s", a user who speaks up is heard from the first frame.

The ratio adapts to the echo path. How loud the echo comes back differs by orders of magnitude
(a browser's echo cancellation leaves -30 dB or less; a speakerphone without it -10 dB), and a
fixed ratio either lets loud echo through or silences the first, quiet frames of a user cutting in
(each frame it eats is 20 ms later detection). So while the agent plays, the gate measures the echo
return - each microphone frame's level over the played level - and gates at `margin` x its
`percentile` over the last `history` frames, within [floor_ratio, max_ratio]. Until it has heard
`min_samples` such frames (the first 0.2 s the agent speaks in a session) it gates at `min_ratio`,
which assumes the worst. Only frames heard while the agent is playing right now count (a frame
played within `ACTIVE_S`), and only those under `measure_below` x the current ratio: a user talking
over the agent is far louder than its echo, and measuring them would lift the ratio to the user's
own level and gate their next words. The price: echo that jumps to more than twice the gate's ratio
within one reply (a volume knob turned far up mid-sentence) passes as a user until it settles.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

ACTIVE_S = 0.05  # the agent is playing now: its last frame was handed over this recently
# the resolution of the levels reported for a frame let through: a soft onset ("th", "h") that starts
# late in a 20 ms frame or rises through it crosses a level in one 5 ms block before the whole
# frame's mean does (the bench's soft onsets paused 5-10 ms sooner: docs/benchmarks.md, 2026-12-06)
LEVEL_BLOCK_S = 0.005


@dataclass(frozen=True)
class EchoGateConfig:
    enabled: bool = True
    # the ratio until the echo return is measured (fixed if not adaptive): -6 dB, the loudest echo of a
    # speakerphone without echo cancellation, so no echo gets through while the gate learns (0.2 s)
    min_ratio: float = 0.5
    window_s: float = 0.4  # how long played audio can still come back through the mic
    silence_rms: float = 1e-4  # played audio quieter than this is treated as no playback
    adaptive: bool = True
    margin: float = 2.0  # gate 6 dB above the measured echo return ...
    percentile: float = 95.0  # ... taken near its peaks (speech echo is mostly quieter than its peaks)
    # frames louder than this x the gate's ratio are the user, not echo, and are not measured; up to
    # it they are (so the estimate can climb, a factor at a time, when the echo gets louder)
    measure_below: float = 2.0
    floor_ratio: float = 0.02  # never gate below -34 dB: microphone noise alone must not pass as a user
    max_ratio: float = 0.5  # never demand more than -6 dB of the agent's level from a user
    history: int = 250  # frames of playback the estimate covers (5 s of 20 ms frames)
    min_samples: int = 10  # frames measured before the estimate replaces min_ratio

    def __post_init__(self) -> None:
        if not 0 < self.min_ratio <= 10:
            raise ValueError("echo min_ratio must be in (0, 10]")
        if self.window_s <= 0:
            raise ValueError("echo window_s must be > 0")
        if not 0 < self.floor_ratio <= self.max_ratio:
            raise ValueError("echo floor_ratio must be in (0, max_ratio]")
        if self.margin < 1 or not 0 < self.percentile <= 100 or self.min_samples < 1 or self.history < self.min_samples:
            raise ValueError("echo margin >= 1, percentile in (0, 100], 1 <= min_samples <= history")


def _samples(frame: rtc.AudioFrame) -> np.ndarray:
    return np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / 32768.0


def frame_rms(frame: rtc.AudioFrame) -> float:
    samples = _samples(frame)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


def block_rms(frame: rtc.AudioFrame, block_s: float = LEVEL_BLOCK_S) -> list[float]:
    """The RMS of each `block_s` of the frame, in order (a shorter last block is one of its own)."""
    samples = _samples(frame)
    block = max(1, round(block_s * frame.sample_rate * frame.num_channels))
    edges = range(block, samples.size, block)
    return [float(np.sqrt(np.mean(b * b))) for b in np.split(samples, edges) if b.size]


class EchoGate(io.AudioInput):
    """An AudioInput wrapping the real one; feed it what the agent plays through `observe_played`."""

    def __init__(self, source: io.AudioInput, config: EchoGateConfig | None = None,
                 on_voice_over_playback: Callable[[list[float], float], None] | None = None) -> None:
        super().__init__(label="EchoGate", source=source)
        self.config = config or EchoGateConfig()
        # (the RMS of each LEVEL_BLOCK_S block, LEVEL_BLOCK_S) of each frame let through while the agent
        # plays: louder than its echo
        self.on_voice_over_playback = on_voice_over_playback
        self._played: deque[tuple[float, float]] = deque()  # (monotonic time, rms) of played frames
        self._returns: deque[float] = deque(maxlen=self.config.history)  # mic level / played level
        self._ratio = self.config.min_ratio
        self.gated_frames = 0
        self.passed_frames = 0

    @property
    def ratio(self) -> float:
        """The ratio the gate applies now."""
        return self._ratio

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
        level = frame_rms(frame)
        echo = level < self._ratio * played
        echo_return = level / played
        if time.monotonic() - self._played[-1][0] <= ACTIVE_S and echo_return <= self.config.measure_below * self._ratio:
            self._measure(echo_return)
        if not echo and self.on_voice_over_playback is not None:
            self.on_voice_over_playback(block_rms(frame), LEVEL_BLOCK_S)
        return echo

    def _measure(self, echo_return: float) -> None:
        c = self.config
        if not c.adaptive:
            return
        self._returns.append(echo_return)
        if len(self._returns) >= c.min_samples:
            estimate = float(np.percentile(np.fromiter(self._returns, float), c.percentile))
            self._ratio = min(c.max_ratio, max(c.floor_ratio, c.margin * estimate))

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await super().__anext__()
        if self.is_echo(frame):
            self.gated_frames += 1
            return rtc.AudioFrame(data=bytes(frame.samples_per_channel * frame.num_channels * 2),
                                  sample_rate=frame.sample_rate, num_channels=frame.num_channels,
                                  samples_per_channel=frame.samples_per_channel)
        self.passed_frames += 1
        return frame
