"""Audio between one aiortc peer connection and an AgentSession.

`WebRTCAudioInput` turns the peer's incoming track (Opus decoded by aiortc: 48 kHz stereo s16, but
any rate/layout is accepted) into the 16 kHz mono 20 ms frames the session's VAD and STT expect.

`OutgoingAudioTrack` is what aiortc's RTP sender pulls from. It paces itself: aiortc sends every
frame `recv()` returns at once, so the track is the clock of the wire (20 ms frames, 48 kHz mono
s16, monotonic pts). Agent audio arrives already paced in real time from `PacedAudioOutput`
(`on_play` -> `push`), so the track only has to keep in step with that clock:

- while the wire carries silence, audio that arrives goes out AT ONCE (the track's clock is
  re-anchored on it, instead of the listener waiting up to 20 ms for the next tick), the first
  frame padded at its front by the resampler's 16-sample delay instead of waiting a whole tick
  for a full frame;
- during an utterance a tick that finds less than a frame queued waits up to `LATE_PUSH_GRACE_S`
  for the push that is due (the event loop may wake a few ms late) rather than send a gap;
- the latency it adds is therefore the phase jitter of two clocks ticking together, a few ms.

`clear()` drops what is queued, so a barge-in is silence on the wire from the next frame on.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from livekit import rtc
from livekit.agents.voice import io

logger = logging.getLogger(__name__)

WIRE_RATE = 48000  # Opus in WebRTC always runs at 48 kHz
WIRE_SAMPLES = 960  # 20 ms per RTP packet
_TIME_BASE = fractions.Fraction(1, WIRE_RATE)
# A loop stall longer than this re-anchors the clock instead of bursting the backlog onto the wire
# (the receiver's jitter buffer absorbs smaller catch-ups).
_STALL_S = 0.1
# Mid-utterance, a tick may wait this long for a push that is a little late (half a frame: beyond
# that the frame goes out as silence and the queue keeps a frame of slack from then on).
LATE_PUSH_GRACE_S = 0.01


def _av_frame(pcm: np.ndarray, rate: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    return frame


class _MonoResampler:
    """Stateful resampling of any av audio frame to mono s16 at `rate`; rebuilt when the input's
    format changes (av's resampler refuses a mismatching frame)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: av.AudioResampler | None = None
        self._key: tuple[str, str, int] | None = None

    def push(self, frame: av.AudioFrame) -> np.ndarray:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key != self._key:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
            self._key = key
        assert self._resampler is not None
        frame.pts = None  # timing comes from our own clocks; RTP timestamps may jump on loss
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The resampler's tail (under 1 ms); the next push starts a fresh one."""
        resampler, self._resampler, self._key = self._resampler, None, None
        return self._collect(resampler.resample(None)) if resampler is not None else np.zeros(0, np.int16)

    def reset(self) -> None:
        self._resampler, self._key = None, None

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, np.int16)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16, copy=False)


class WebRTCAudioInput(io.AudioInput):
    """The peer's microphone as 16 kHz mono 20 ms frames; ends when the track ends or on aclose()."""

    def __init__(self, track: MediaStreamTrack, sample_rate: int = 16000, frame_ms: int = 20,
                 *, label: str = "WebRTCAudioInput") -> None:
        super().__init__(label=label)
        self.track = track
        self.sample_rate = sample_rate
        self.samples_per_frame = sample_rate * frame_ms // 1000
        self._resampler = _MonoResampler(sample_rate)
        self._pending = np.zeros(0, np.int16)
        self._closed = False
        self.frames_received = 0  # from the wire
        self.frames_produced = 0  # to the session
        self.last_frame_at: float | None = None  # monotonic time of the last frame from the wire

    @property
    def ended(self) -> bool:
        return self._closed or self.track.readyState == "ended"

    async def __anext__(self) -> rtc.AudioFrame:
        spf = self.samples_per_frame
        while len(self._pending) < spf:
            if self._closed:
                raise StopAsyncIteration
            try:
                frame = await self.track.recv()
            except MediaStreamError:  # the receiver stopped: the peer left or the pc was closed
                self._closed = True
                raise StopAsyncIteration from None
            if not isinstance(frame, av.AudioFrame):
                continue
            self.frames_received += 1
            self.last_frame_at = time.monotonic()
            self._pending = np.concatenate([self._pending, self._resampler.push(frame)])
        if self._closed:
            raise StopAsyncIteration
        pcm, self._pending = self._pending[:spf], self._pending[spf:]
        self.frames_produced += 1
        return rtc.AudioFrame(data=pcm.tobytes(), sample_rate=self.sample_rate, num_channels=1,
                              samples_per_channel=spf)

    async def aclose(self) -> None:
        """End the input; a pending read ends when the track does (closing the pc stops it)."""
        self._closed = True


class OutgoingAudioTrack(MediaStreamTrack):
    """Agent audio to the peer: queued by `push` in real time, sent by `recv` on a 20 ms clock."""

    kind = "audio"

    def __init__(self, *, max_queue_s: float = 0.1, end_gap_s: float = 0.05) -> None:
        super().__init__()
        self.max_queue_samples = round(max_queue_s * WIRE_RATE)
        # no push for this long means the utterance ended: send a partial last frame padded with
        # silence (PacedAudioOutput pushes every 20 ms, so this never triggers mid-utterance)
        self.end_gap_s = end_gap_s
        self._resampler = _MonoResampler(WIRE_RATE)
        self._queue: deque[np.ndarray] = deque()
        self._queued = 0
        self._last_push_at = 0.0
        self._t0: float | None = None
        self._pts = 0
        self._sending_audio = False  # the last frame sent carried audio (else the wire is silent)
        self._arrived: asyncio.Event | None = None  # set by push; made inside the running loop
        self.frames_sent = 0
        self.audio_frames_sent = 0  # frames carrying agent audio (the rest are silence)
        self.dropped_samples = 0  # overflow: a stall upstream burst more than max_queue_s at us
        self.clears = 0

    @property
    def queued_seconds(self) -> float:
        return self._queued / WIRE_RATE

    def push(self, frame: rtc.AudioFrame) -> None:
        """Queue one frame of agent audio (any rate, mono s16), at the moment it is due to be heard."""
        pcm = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels != 1:
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        if frame.sample_rate != WIRE_RATE:
            pcm = self._resampler.push(_av_frame(pcm, frame.sample_rate))
        self._append(pcm)
        self._last_push_at = time.monotonic()
        if self._arrived is not None:
            self._arrived.set()

    def clear(self) -> None:
        """Drop queued audio now (barge-in): the next frame on the wire is silence."""
        if self._queued:
            self.clears += 1
        self._queue.clear()
        self._queued = 0
        self._resampler.reset()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._arrived is None:
            self._arrived = asyncio.Event()
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        else:
            self._pts += WIRE_SAMPLES
            due = self._t0 + self._pts / WIRE_RATE
            if now - due > _STALL_S:
                logger.debug("outgoing track %.0f ms late; re-anchoring its clock", (now - due) * 1000)
                self._t0 = now - self._pts / WIRE_RATE
            elif due > now:  # absolute deadlines: late wake-ups do not add up to drift
                if not self._sending_audio and not self._queued and await self._audio_within(due - now):
                    self._t0 = time.monotonic() - self._pts / WIRE_RATE  # audio after silence: now is this tick
                else:
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self._sending_audio and self._queued < WIRE_SAMPLES and self._talking():
                await self._audio_within(LATE_PUSH_GRACE_S)  # the push due now may be a little late
        frame = _av_frame(self._take(), WIRE_RATE)
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        self.frames_sent += 1
        return frame

    async def _audio_within(self, timeout: float) -> bool:
        """Wait up to `timeout` for a push; True if one came."""
        assert self._arrived is not None
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _talking(self) -> bool:
        """An utterance is being pushed: the last push is less than `end_gap_s` old."""
        return time.monotonic() - self._last_push_at <= self.end_gap_s

    def _append(self, pcm: np.ndarray) -> None:
        if pcm.size == 0:
            return
        self._queue.append(pcm)
        self._queued += pcm.size
        excess = self._queued - self.max_queue_samples
        if excess > 0:  # keep latency bounded: drop the oldest audio, never delay the newest
            self._pop(excess)
            self.dropped_samples += excess
            logger.debug("outgoing track overflow: dropped %d samples", excess)

    def _take(self) -> np.ndarray:
        if self._sending_audio and not self._talking():
            self._append(self._resampler.flush())  # the utterance ended: the resampler's tail goes too
        out = np.zeros(WIRE_SAMPLES, np.int16)
        if self._queued >= WIRE_SAMPLES:
            out[:] = self._pop(WIRE_SAMPLES)
        elif self._queued and not self._sending_audio:
            # the first frame after silence: the resampler still holds its delay; pad in front
            n = self._queued
            out[WIRE_SAMPLES - n:] = self._pop(n)
        elif self._queued and not self._talking():  # the utterance's last samples, padded with silence
            n = self._queued
            out[:n] = self._pop(n)
        else:  # nothing to send, or a push that came too late for this tick (it goes out next)
            self._sending_audio = False
            return out
        self._sending_audio = True
        self.audio_frames_sent += 1
        return out

    def _pop(self, n: int) -> np.ndarray:
        parts = []
        while n > 0:
            head = self._queue[0]
            if head.size <= n:
                parts.append(self._queue.popleft())
                n -= head.size
            else:
                parts.append(head[:n])
                self._queue[0] = head[n:]
                n = 0
        out = np.concatenate(parts)
        self._queued -= out.size
        return out
