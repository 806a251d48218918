"""A LiveKit-mode caller: a LiveKit participant that joins the room with the token server's token
(as the page does), publishes a microphone track, hears the agent's audio track and reads the
agent's events from the "agent-events" data topic. The soak and the LiveKit tests call through it.

The microphone is paced the way a real one is: 10 ms frames captured in real time (silence when
nothing is being said), so the agent's VAD sees a person in a quiet room.

Leak check: LiveKit mode has no per-call /healthz; the worker's Prometheus /metrics (on
AGENT_HEALTH_PORT, next to its /healthz) must drop to 0 active sessions and 0 engine streams after the hang-up.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import numpy as np
from livekit import rtc
from prometheus_client.parser import text_string_to_metric_families

from .event_log import EventLog, Said, poll_until
from .utterances import RATE, Utterance

EVENTS_TOPIC = "agent-events"
MIC_FRAME = RATE // 100  # 10 ms
# The SDK's audio source queues what it is given until WebRTC pulls it (1 s by default): the
# microphone runs from the moment the track is published, WebRTC pulls only once the call is up, and
# the backlog of that wait (~0.8 s) then stayed in front of every word. A queue of two frames makes
# capture wait for WebRTC instead, as a real microphone's driver does.
MIC_QUEUE_MS = 20
MIC_LATE_S = 0.05  # the capture loop this far behind its clock re-anchors instead of bursting


class LiveKitClient(EventLog):
    def __init__(self, metrics_url: str) -> None:
        super().__init__()
        self.metrics_url = metrics_url
        self.room = rtc.Room()
        self.source = rtc.AudioSource(RATE, 1, queue_size_ms=MIC_QUEUE_MS)
        self._speech: list[tuple[Said, np.ndarray]] = []  # utterances being "spoken": what is left, int16 at RATE
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self, _http: aiohttp.ClientSession, grant: dict[str, Any]) -> None:
        self.room.on("data_received", self._on_data)
        self.room.on("track_subscribed", self._on_track)
        try:
            await self.room.connect(grant["url"], grant["token"], rtc.RoomOptions(auto_subscribe=True))
        except Exception as exc:  # the SDK raises its own ConnectError, among others
            raise RuntimeError(f"could not join the LiveKit room at {grant['url']}: {exc}") from exc
        track = rtc.LocalAudioTrack.create_audio_track("soak-mic", self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)
        self._spawn(self._microphone())

    async def close(self, _http: aiohttp.ClientSession) -> None:
        self.receive_buffer = await self._receive_buffer()
        await self.room.disconnect()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def leak_check(self, http: aiohttp.ClientSession, timeout_s: float) -> dict[str, Any]:
        return await metrics_leak_check(http, self.metrics_url, timeout_s)

    def say(self, utt: Utterance) -> Said:
        """Start speaking with the microphone's next 10 ms frame."""
        said = Said(utt, time.monotonic(), MIC_FRAME / RATE)
        self._speech.append((said, utt.pcm))
        return said

    # ---- outgoing ------------------------------------------------------------------------------

    async def _microphone(self) -> None:
        """10 ms frames on a real-time clock: speech while there is some, silence otherwise."""
        silence = np.zeros(MIC_FRAME, dtype=np.int16)
        next_at = time.monotonic()
        while True:
            chunk = self._next_chunk() if self._speech else silence
            await self.source.capture_frame(rtc.AudioFrame(data=chunk.tobytes(), sample_rate=RATE, num_channels=1,
                                                           samples_per_channel=MIC_FRAME))
            next_at += MIC_FRAME / RATE
            if time.monotonic() - next_at > MIC_LATE_S:  # capture waited for WebRTC: start the clock again
                next_at = time.monotonic()
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def _next_chunk(self) -> np.ndarray:
        said, head = self._speech[0]
        if said.first_frame_at is None:
            said.first_frame_at = time.monotonic()  # captured now: the frame is handed over next
        chunk, rest = head[:MIC_FRAME], head[MIC_FRAME:]
        if len(rest):
            self._speech[0] = (said, rest)
        else:
            self._speech.pop(0)
        if len(chunk) < MIC_FRAME:
            chunk = np.concatenate([chunk, np.zeros(MIC_FRAME - len(chunk), dtype=np.int16)])
        return chunk

    # ---- incoming ------------------------------------------------------------------------------

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic == EVENTS_TOPIC:
            self._on_message(packet.data)

    def _on_track(self, track: rtc.Track, _publication: Any, _participant: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._spawn(self._consume(rtc.AudioStream(track, sample_rate=RATE, num_channels=1)))

    async def _consume(self, stream: rtc.AudioStream) -> None:
        try:
            async for event in stream:
                pcm = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float32) / 32768
                self._on_audio_frame(pcm)
        finally:
            await stream.aclose()

    async def _receive_buffer(self) -> dict[str, float] | None:
        """How long the agent's audio waited in our jitter buffer over the call, on average (WebRTC's
        inbound-rtp jitterBufferDelay / jitterBufferEmittedCount), and its target and minimum."""
        try:
            stats = await self.room.get_rtc_stats()
        except Exception:  # a room that never connected or already dropped: nothing to read
            return None
        # one peer connection carries both directions on this server, so its stats come as the publisher's
        for entry in [*stats.subscriber_stats, *stats.publisher_stats]:
            if not entry.HasField("inbound_rtp") or entry.inbound_rtp.stream.kind != "audio":
                continue
            inbound = entry.inbound_rtp.inbound
            emitted = inbound.jitter_buffer_emitted_count
            if emitted:
                return {name: round(1000 * total / emitted, 1) for name, total in (
                    ("mean_ms", inbound.jitter_buffer_delay), ("target_ms", inbound.jitter_buffer_target_delay),
                    ("minimum_ms", inbound.jitter_buffer_minimum_delay))}
        return None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def metric_value(text: str, name: str) -> float | None:
    """The value of an unlabelled sample in Prometheus text format (None: absent or unparsable)."""
    try:
        samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    except ValueError:
        return None
    return next((sample.value for sample in samples if sample.name == name and not sample.labels), None)


async def metrics_leak_check(http: aiohttp.ClientSession, metrics_url: str, timeout_s: float) -> dict[str, Any]:
    """After the hang-up the worker must report 0 active sessions and 0 engine streams."""
    async def scrape() -> dict[str, float | None]:
        try:
            async with http.get(metrics_url) as resp:
                text = await resp.text() if resp.status == 200 else ""
        except aiohttp.ClientError:
            text = ""
        return {"active_sessions": metric_value(text, "agent_active_sessions"),
                "active_streams": metric_value(text, "agent_engine_active_streams")}

    def idle(seen: dict[str, float | None]) -> bool:
        return seen["active_sessions"] == 0 and seen["active_streams"] == 0

    seen = await poll_until(scrape, idle, timeout_s)
    if idle(seen):
        return {"metrics": seen, "problems": []}
    if all(v is None for v in seen.values()):
        return {"metrics": seen, "problems": [f"the worker's {metrics_url} did not answer with agent metrics "
                                              "after the call (is the worker running, on AGENT_HEALTH_PORT?)"]}
    return {"metrics": seen, "problems": [
        f"after hanging up and {timeout_s:.0f} s: {seen['active_sessions']} session(s) and "
        f"{seen['active_streams']} engine stream(s) still active"]}
