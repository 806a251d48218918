"""A live-microphone stand-in: WAV clips played in real time on a silent timeline.

Frame k holds samples [k*spf, (k+1)*spf) and, like a real capture device, is delivered once its
last sample has been "recorded": at t0 + (k+1)*frame_s, where t0 (monotonic) is the first read.
Pacing is by absolute deadlines from t0, so a late wake-up is caught up rather than accumulated.
Between and after clips it yields silence until closed, as a mic does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from livekit import rtc
from livekit.agents.voice import io

from agent.session.turn_end import resample

logger = logging.getLogger(__name__)

ClipSource = str | Path | np.ndarray


@dataclass
class ClipSpan:
    """Where one clip sits on the input timeline. Times are time.monotonic(), set as it is fed."""

    source: str
    offset_s: float  # scheduled start, seconds after the first frame was read
    duration_s: float
    started_at: float | None = None  # when its first sample was "spoken" (t0 + offset)
    ended_at: float | None = None  # when its last sample was spoken: the true end of speech
    end_delivered_at: float | None = None  # when the frame holding its last sample was handed out


@dataclass
class _Clip:
    start: int  # first sample on the timeline
    pcm: np.ndarray = field(repr=False)  # int16 mono at the input's rate
    span: ClipSpan

    @property
    def end(self) -> int:
        return self.start + len(self.pcm)


class WavAudioInput(io.AudioInput):
    def __init__(self, sample_rate: int = 16000, frame_ms: int = 20, *, label: str = "WavAudioInput") -> None:
        super().__init__(label=label)
        if sample_rate * frame_ms % 1000:
            raise ValueError(f"{frame_ms} ms is not a whole number of samples at {sample_rate} Hz")
        self.sample_rate = sample_rate
        self.samples_per_frame = sample_rate * frame_ms // 1000
        self.clip_spans: list[ClipSpan] = []
        self.frames_produced = 0
        self._clips: list[_Clip] = []  # not yet fully fed
        self._cursor = 0  # first sample of the next frame
        self._last_end = 0  # end of the latest clip ever scheduled
        self._t0: float | None = None
        self._closed = False
        self._stop_at: int | None = None  # close_after_clips: end of stream, in samples

    @property
    def started_at(self) -> float | None:
        """Monotonic time of sample 0 (the first read), None before it."""
        return self._t0

    @property
    def position_s(self) -> float:
        """How much of the timeline has been delivered."""
        return self._cursor / self.sample_rate

    def schedule(self, clip: ClipSource, at_s: float, *, sample_rate: int | None = None) -> ClipSpan:
        """Play `clip` `at_s` seconds after the first read (mixed with any overlapping clip).

        Arrays are int16, or float in [-1, 1]; shape (n,) or (n, channels); `sample_rate`
        defaults to the input's. A start already delivered is moved to the next frame.
        """
        pcm, name = self._load(clip, sample_rate)
        start = round(at_s * self.sample_rate)
        if start < self._cursor:
            logger.warning("%s: clip %s scheduled at %.3f s, already past; playing it now",
                           self.label, name, at_s)
            start = self._cursor
        span = ClipSpan(source=name, offset_s=start / self.sample_rate,
                        duration_s=len(pcm) / self.sample_rate)
        self._clips.append(_Clip(start=start, pcm=pcm, span=span))
        self._last_end = max(self._last_end, start + len(pcm))
        self.clip_spans.append(span)
        return span

    def append(self, clip: ClipSource, gap_s: float = 0.0, *, sample_rate: int | None = None) -> ClipSpan:
        """Play `clip` `gap_s` after the latest clip ends (or after what was delivered, if later)."""
        after = max(self._last_end, self._cursor) / self.sample_rate
        return self.schedule(clip, after + gap_s, sample_rate=sample_rate)

    def close(self) -> None:
        """End of input now: the pending and every later read raise StopAsyncIteration."""
        self._closed = True

    def close_after_clips(self, tail_s: float = 0.0) -> None:
        """End of input once every scheduled clip plus `tail_s` of silence has been delivered."""
        self._stop_at = self._last_end + round(tail_s * self.sample_rate)

    async def aclose(self) -> None:
        self.close()

    async def __anext__(self) -> rtc.AudioFrame:
        spf = self.samples_per_frame
        if self._closed or (self._stop_at is not None and self._cursor >= self._stop_at):
            raise StopAsyncIteration
        if self._t0 is None:
            self._t0 = time.monotonic()
        delay = self._t0 + (self._cursor + spf) / self.sample_rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.2:
            logger.debug("%s: reader is %.0f ms behind real time", self.label, -delay * 1000)
        if self._closed:
            raise StopAsyncIteration
        pcm = self._mix(self._cursor, self._cursor + spf)
        self._cursor += spf
        self.frames_produced += 1
        return rtc.AudioFrame(data=pcm.tobytes(), sample_rate=self.sample_rate, num_channels=1,
                              samples_per_channel=spf)

    def _mix(self, a: int, b: int) -> np.ndarray:
        assert self._t0 is not None
        acc = np.zeros(b - a, dtype=np.int32)  # int32: overlapping clips must not wrap around
        delivered_at = time.monotonic()
        for clip in self._clips:
            lo, hi = max(a, clip.start), min(b, clip.end)
            if lo >= hi:
                continue
            acc[lo - a:hi - a] += clip.pcm[lo - clip.start:hi - clip.start]
            if lo == clip.start:
                clip.span.started_at = self._t0 + clip.start / self.sample_rate
            if hi == clip.end:
                clip.span.ended_at = self._t0 + clip.end / self.sample_rate
                clip.span.end_delivered_at = delivered_at
        self._clips = [c for c in self._clips if c.end > b]
        return np.clip(acc, -32768, 32767).astype(np.int16)

    def _load(self, clip: ClipSource, sample_rate: int | None) -> tuple[np.ndarray, str]:
        if isinstance(clip, str | Path):
            data, rate = sf.read(str(clip), dtype="int16", always_2d=True)
            name = str(clip)
        else:
            data, rate, name = np.asarray(clip), sample_rate or self.sample_rate, "<array>"
        pcm = _to_mono_int16(data)
        if len(pcm) == 0:
            raise ValueError(f"clip {name} is empty")
        if rate != self.sample_rate:
            pcm = resample(pcm, rate, self.sample_rate)
        return pcm, name


def _to_mono_int16(data: np.ndarray) -> np.ndarray:
    is_float = np.issubdtype(data.dtype, np.floating)  # float audio convention: [-1, 1]
    if data.ndim == 2:  # (n, channels): average the channels
        data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    elif data.ndim != 1:
        raise ValueError(f"expected audio of shape (n,) or (n, channels), got {data.shape}")
    if is_float:
        data = data * 32767.0
    return np.clip(np.round(data), -32768, 32767).astype(np.int16)

