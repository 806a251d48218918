"""Real-time paced audio sink for every transport that is not a LiveKit room.

AgentSession pushes TTS frames faster than real time and expects the sink to play them at the
listener's pace and to report playback back (livekit/agents/voice/io.py, AudioOutput):
- `capture_frame`/`flush` call the base class, which counts one segment per capture..flush;
- `on_playback_started(created_at=time.time())` on the first frame actually PLAYED of a segment
  (the session only enters "speaking" and measures e2e latency from it);
- `on_playback_finished(...)` exactly once per segment, or `wait_for_playout()` never returns;
- `clear_buffer()` drops what is queued, `pause()`/`resume()` really stop and restart playout.
Transport hooks in through `on_play(frame)`, called when a frame is due to be heard. All times
this class exposes are time.monotonic(); only livekit's own events carry time.time().
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from livekit import rtc
from livekit.agents import utils
from livekit.agents.voice import io

logger = logging.getLogger(__name__)

class PlaybackEvent(enum.Enum):
    """What the output just did; transports react to these (they never decide a barge-in)."""

    STARTED = "started"  # a segment's first frame was played
    FINISHED = "finished"  # a segment was reported finished (played out, or interrupted)
    CLEARED = "cleared"  # the queue was dropped (a barge-in's cut)
    PAUSED = "paused"  # playout stopped, the queue kept (the user may be talking over us)
    RESUMED = "resumed"


PlaybackListener = Callable[[PlaybackEvent, float], None]
"""`callback(event, t)`, t in monotonic seconds."""

MAX_FRAME_S = 0.02  # longer frames are split so pause/clear act within one 20 ms frame (the default)
# A frame this late means the queue ran dry (TTS slower than real time) or the loop stalled:
# re-anchor the clock instead of bursting the backlog out. Smaller lateness is caught up.
_UNDERRUN_S = 0.05
_CONTIGUOUS_S = 1e-3  # gap between two frames of a segment that still counts as one run


@dataclass(eq=False)
class _Segment:
    """One capture_frame..flush segment; dropped as a whole once it is reported finished."""

    played_s: float = 0.0
    started: bool = False
    cleared: bool = False  # cleared while still capturing: drop its frames, report at flush
    due_end: float = 0.0  # scheduled (monotonic) end of its last played frame
    run_wall: float | None = None  # time.time() at which the current contiguous run began
    run_offset: float = 0.0  # where in the segment that run began


class PacedAudioOutput(io.AudioOutput):
    """Plays captured frames in real time through `on_play`; never generates silence."""

    def __init__(self, sample_rate: int = 24000, on_play: Callable[[rtc.AudioFrame], None] | None = None,
                 *, label: str = "PacedAudioOutput", can_pause: bool = True,
                 max_frame_s: float = MAX_FRAME_S) -> None:
        # sample_rate is passed to the base so the session resamples TTS audio to it
        # (generation.py perform_audio_forwarding); mismatching frames are a bug here.
        super().__init__(label=label, capabilities=io.AudioOutputCapabilities(pause=can_pause),
                         sample_rate=sample_rate)
        self._on_play = on_play
        self._frame_taps: list[Callable[[rtc.AudioFrame], None]] = []  # e.g. the echo gate
        self._rate = sample_rate
        self._max_samples = round(sample_rate * max_frame_s)
        self._queue: deque[tuple[_Segment, rtc.AudioFrame | None]] = deque()  # None: end of segment
        self._queued_samples = 0
        self._open: list[_Segment] = []  # captured, not yet reported finished; oldest first
        self._capturing: _Segment | None = None
        self._last_seg: _Segment | None = None  # owner of the most recently played frame
        self._paused = False
        self._next_due: float | None = None
        self._audible_until = 0.0
        self._listeners: list[PlaybackListener] = []
        self._wake: asyncio.Event | None = None  # created with the task, inside the running loop
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.last_played_at: float | None = None
        self.silent_since: float | None = None
        self.frames_played = 0
        self.segments_started = 0
        self.segments_finished = 0
        self.interrupted_segments = 0

    # ---- observation ---------------------------------------------------------------------------

    @property
    def is_playing(self) -> bool:
        """Audio is queued (even while paused) or the frame last played is still being heard."""
        return self._queued_samples > 0 or time.monotonic() < self._audible_until

    @property
    def audible_until(self) -> float:
        """When the frames already handed to `on_play` finish sounding (monotonic)."""
        return self._audible_until

    @property
    def queued_seconds(self) -> float:
        return self._queued_samples / self._rate

    @property
    def paused(self) -> bool:
        return self._paused

    def add_playback_listener(self, callback: PlaybackListener) -> Callable[[], None]:
        """Subscribe to playback events; returns a function that unsubscribes."""
        self._listeners.append(callback)
        return lambda: self.remove_playback_listener(callback)

    def add_frame_tap(self, tap: Callable[[rtc.AudioFrame], None]) -> None:
        """Also hand every played frame to `tap` (at the moment it is played)."""
        self._frame_taps.append(tap)

    def remove_playback_listener(self, callback: PlaybackListener) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    # ---- io.AudioOutput contract ---------------------------------------------------------------

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        if self._closed:
            raise RuntimeError(f"{self.label} is closed")
        if frame.sample_rate != self._rate or frame.num_channels != 1:
            raise ValueError(f"{self.label} plays mono {self._rate} Hz, got "
                             f"{frame.num_channels} ch {frame.sample_rate} Hz")
        await super().capture_frame(frame)  # counts the segment
        seg = self._capturing
        if seg is None:
            seg = self._capturing = _Segment()
            self._open.append(seg)
        if seg.cleared:
            return
        for piece in _split(frame, self._max_samples):
            self._queue.append((seg, piece))
            self._queued_samples += piece.samples_per_channel
        self._ensure_task()
        self._kick()

    def flush(self) -> None:
        super().flush()
        seg, self._capturing = self._capturing, None
        if seg is None:  # nothing captured since the last flush: the base counted no segment
            return
        if seg.cleared:
            self._finish(seg, interrupted=True, at=time.monotonic())
            return
        self._queue.append((seg, None))
        self._kick()

    def clear_buffer(self) -> None:
        """Drop everything queued, synchronously (the barge-in fast path relies on it).

        Flushed segments are reported finished (interrupted) right here. A segment still being
        captured is reported at its flush, as room_io does, so the base class and wrappers see
        one capture..flush per report; its remaining frames are dropped until then.
        """
        now = time.monotonic()
        # the frame in flight cannot be taken back; a segment already cleared has nothing left
        discards = self._queued_samples > 0 or any(not seg.cleared for seg in self._open)
        if (self._queued_samples > 0 and not self._paused) or now < self._audible_until:
            # a second clear (generation.py clears again after cancelling) must not move it
            self.silent_since = max(now, self._audible_until)
        self._queue.clear()
        self._queued_samples = 0
        self._next_due = None
        if discards:
            self._emit(PlaybackEvent.CLEARED, now)
        for seg in list(self._open):
            if seg is self._capturing:
                seg.cleared = True
                self._end_run(seg)
            else:
                self._finish(seg, interrupted=True, at=now)

    def pause(self) -> None:
        # called on every VAD inference while the user talks over us: must be idempotent
        super().pause()
        if self._paused:
            return
        self._paused = True
        now = time.monotonic()
        if now < self._audible_until or self._queued_samples > 0:
            self.silent_since = max(now, self._audible_until)
        if self._last_seg is not None:
            self._end_run(self._last_seg)
        self._emit(PlaybackEvent.PAUSED, now)

    def resume(self) -> None:
        super().resume()
        if not self._paused:
            return
        self._paused = False
        self._next_due = None  # restart the clock now; never burst the paused time out
        self._emit(PlaybackEvent.RESUMED, time.monotonic())
        self._kick()

    async def aclose(self) -> None:
        """Stop playout; open segments are reported interrupted so no waiter hangs."""
        self._closed = True
        self._queue.clear()
        self._queued_samples = 0
        self._capturing = None
        now = time.monotonic()
        for seg in list(self._open):
            self._finish(seg, interrupted=True, at=now)
        if self._task is not None:
            await utils.aio.cancel_and_wait(self._task)
            self._task = None

    # ---- subclass hook -------------------------------------------------------------------------

    def _frame_played(self, frame: rtc.AudioFrame, played_at: float) -> None:
        """Called for every frame at the moment it is played (monotonic time)."""

    # ---- playout -------------------------------------------------------------------------------

    def _ensure_task(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._playout(), name=f"{self.label}.playout")

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _playout(self) -> None:
        try:
            await self._playout_loop()
        except Exception:  # a dead clock would leave wait_for_playout() hanging forever
            logger.exception("%s: playout failed; dropping queued audio", self.label)
            self._task = None
            self.clear_buffer()

    async def _playout_loop(self) -> None:
        assert self._wake is not None
        while True:
            if self._paused or not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            seg, frame = self._queue[0]
            now = time.monotonic()
            if frame is None:  # a flushed segment ends once its last frame has been heard
                if now < self._audible_until:
                    await asyncio.sleep(self._audible_until - now)
                    continue  # pause/clear may have happened meanwhile
                self._queue.popleft()
                self._finish(seg, interrupted=False, at=now)
                continue
            if self._next_due is None or now - self._next_due > _UNDERRUN_S:
                self._next_due = now
            if now < self._next_due:
                # sleep to an absolute deadline: lateness does not accumulate into drift
                await asyncio.sleep(self._next_due - now)
                continue
            self._queue.popleft()
            self._queued_samples -= frame.samples_per_channel
            self._play(seg, frame, now, self._next_due)
            self._next_due += frame.duration

    def _play(self, seg: _Segment, frame: rtc.AudioFrame, now: float, due: float) -> None:
        # contiguity is judged on the schedule: a late wake-up that is caught up is no gap
        if seg.run_wall is not None and due - seg.due_end > _CONTIGUOUS_S:
            self._end_run(seg)  # the queue ran dry mid-segment: the next run starts here
        if seg.run_wall is None:
            seg.run_wall, seg.run_offset = time.time(), seg.played_s
        if not seg.started:
            seg.started = True
            self.segments_started += 1
            self.on_playback_started(created_at=time.time())
            self._emit(PlaybackEvent.STARTED, now)
        seg.played_s += frame.duration
        seg.due_end = due + frame.duration
        self._audible_until = now + frame.duration
        self._last_seg = seg
        self.frames_played += 1
        self.last_played_at = now
        self._frame_played(frame, now)
        for sink in (*self._frame_taps, self._on_play):
            if sink is None:
                continue
            try:
                sink(frame)
            except Exception:  # a broken transport must not stop the clock or the reports
                logger.exception("%s: on_play failed", self.label)

    def _end_run(self, seg: _Segment) -> None:
        """Report the contiguous stretch of `seg` played since its run began (recorder_io uses it)."""
        if seg.run_wall is None:
            return
        duration = seg.played_s - seg.run_offset
        if duration > 0:
            self.on_playback_progressed(started_at=seg.run_wall, offset=seg.run_offset, duration=duration)
        seg.run_wall = None

    def _finish(self, seg: _Segment, *, interrupted: bool, at: float) -> None:
        self._open.remove(seg)
        self._end_run(seg)
        if self._last_seg is seg:
            self._last_seg = None
        self.segments_finished += 1
        self.interrupted_segments += int(interrupted)
        self.on_playback_finished(playback_position=seg.played_s, interrupted=interrupted)
        self._emit(PlaybackEvent.FINISHED, at)

    def _emit(self, event: PlaybackEvent, t: float) -> None:
        for callback in list(self._listeners):
            try:
                callback(event, t)
            except Exception:
                logger.exception("%s: playback listener failed on %r", self.label, event)


def _split(frame: rtc.AudioFrame, max_samples: int) -> list[rtc.AudioFrame]:
    n = frame.samples_per_channel
    if n <= max_samples:
        return [frame] if n else []
    pcm = np.frombuffer(frame.data, dtype=np.int16)
    return [rtc.AudioFrame(data=pcm[i:i + max_samples].tobytes(), sample_rate=frame.sample_rate,
                           num_channels=1, samples_per_channel=len(pcm[i:i + max_samples]))
            for i in range(0, n, max_samples)]


def silence_transport_on_cut(output: PacedAudioOutput, clear: Callable[[], None]) -> None:
    """Empty the transport's own queue (`clear`) whenever the output is cleared or paused.

    A barge-in empties the paced output; the wire must go silent too, not play out what the
    transport already holds. A pause (the user may be talking over us) silences it the same way:
    at most one frame of audio is lost if the agent then resumes."""
    def on_playback(event: PlaybackEvent, _t: float) -> None:
        if event in (PlaybackEvent.CLEARED, PlaybackEvent.PAUSED):
            clear()

    output.add_playback_listener(on_playback)
