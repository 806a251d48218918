"""Agent audio into a LiveKit room: the room-mode counterpart of direct mode's OutgoingAudioTrack.

Why not RoomIO's own output: in livekit-agents 1.8.9 it feeds an `rtc.AudioSource` with a 200 ms
queue and its `pause()` leaves that queue alone, so after a barge-in up to 200 ms more of the reply
reaches the listener; and it has no notion of when the frame in flight stops sounding, so a cut
cannot be timed. Here `PacedAudioOutput` (the same sink direct mode uses) plays frames in real time
and hands each to `push` at the moment it is due to be heard; the sink feeds its own AudioSource,
whose queue therefore holds about one frame, and `clear()` empties it at once on a pause or a cut.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from livekit import rtc

log = logging.getLogger(__name__)

TRACK_NAME = "agent-voice"
# The native queue only has to bridge the paced output's 20 ms frames to WebRTC's 10 ms pulls;
# room for a few frames absorbs event-loop jitter without adding latency (it is never full).
QUEUE_MS = 100


class RoomAudioSink:
    """Publishes one microphone-source audio track and plays what `push` hands it, in order."""

    def __init__(self, sample_rate: int, *, track_name: str = TRACK_NAME, queue_ms: int = QUEUE_MS) -> None:
        # created inside the job's running loop: the source binds to it
        self.source = rtc.AudioSource(sample_rate, 1, queue_size_ms=queue_ms)
        self.track_name = track_name
        self.publication: rtc.LocalTrackPublication | None = None
        self._pending: deque[rtc.AudioFrame] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.frames_sent = 0
        self.frames_failed = 0
        self.clears = 0

    async def publish(self, room: rtc.Room) -> rtc.LocalTrackPublication:
        # Source Microphone: the page and other agents treat it as this participant's voice
        track = rtc.LocalAudioTrack.create_audio_track(self.track_name, self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        self.publication = await room.local_participant.publish_track(track, options)
        self._task = asyncio.create_task(self._forward(), name=f"room-audio-{self.track_name}")
        return self.publication

    def push(self, frame: rtc.AudioFrame) -> None:
        """One frame, at the moment it is due to be heard (PacedAudioOutput's on_play)."""
        self._pending.append(frame)
        self._wake.set()

    def clear(self) -> None:
        """Drop everything not yet played, now: the listener hears silence from the next 10 ms on."""
        if self._pending or self.source.queued_duration > 0:
            self.clears += 1
        self._pending.clear()
        self.source.clear_queue()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._pending.clear()
        await self.source.aclose()

    async def _forward(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                frame = self._pending.popleft()
                try:
                    await self.source.capture_frame(frame)
                except Exception:  # a closed source or a dropped room: the paced clock must go on
                    self.frames_failed += 1
                    if self.frames_failed == 1:  # 50 frames a second: say it once, count the rest
                        log.exception("room audio: a frame could not be captured (later failures are counted)")
                    continue
                self.frames_sent += 1
