"""One browser peer in direct mode: its RTCPeerConnection, the audio bridge both ways, the
"agent-events" data channel and its own VoicePipeline (on the process's shared engine and VAD).

Lifecycle: `accept(offer)` answers (non-trickle: aiortc finishes gathering inside
setLocalDescription); the session starts when the connection is up, so a greeting is not played
into a call that is still connecting; `close()` tears everything down exactly once, whoever asks:
the page (DELETE or a "bye" message), the connection ("failed"/"closed", or "disconnected" past a
grace period), the watchdog (never connected, or no audio from the peer for a while), the server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from livekit.agents import vad as lk_vad

from tts_engine import TTSEngine

from ..config import AgentConfig
from ..observe.metrics import AgentMetrics
from ..session.pipeline import VoicePipeline
from ..session.turn_end import SmartTurnModel
from ..transport.audio_output import PacedAudioOutput, silence_transport_on_cut
from .config import DirectServerConfig
from .events import EventChannel
from .jitter import set_track_prefetch
from .webrtc_io import OutgoingAudioTrack, WebRTCAudioInput

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0  # a session start that is still running at close time gets this long to finish
_WATCH_INTERVAL_S = 0.5


class DirectPeer:
    def __init__(self, peer_id: str, *, engine: TTSEngine, vad: lk_vad.VAD, agent_cfg: AgentConfig,
                 cfg: DirectServerConfig, session_id: str, identity: str,
                 on_closed: Callable[[DirectPeer], None] | None = None, metrics: AgentMetrics | None = None,
                 turn_model: SmartTurnModel | None = None) -> None:
        self.peer_id = peer_id
        self.identity = identity
        self.cfg = cfg
        # no STUN/TURN servers: host candidates on the configured addresses only (and no lookup of
        # aiortc's default public STUN server, which would stall gathering on an offline machine)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = OutgoingAudioTrack()
        self.output = PacedAudioOutput(sample_rate=engine.config.output_sample_rate, on_play=self.track.push,
                                       label=f"PacedAudioOutput[{peer_id}]")
        silence_transport_on_cut(self.output, self.track.clear)
        self.events = EventChannel(on_bye=lambda: self.close_soon("bye"))
        # every event goes to the page; the metrics see it on the way (a metrics failure never drops one)
        self.metrics = metrics
        on_event = metrics.observer(session_id, then=self.events.send) if metrics is not None else self.events.send
        if metrics is not None:
            metrics.session_started(session_id)
        self.pipeline = VoicePipeline(engine, agent_cfg, vad, session_id=session_id, on_event=on_event,
                                      turn_model=turn_model)
        self.audio_in: WebRTCAudioInput | None = None
        self._test_voice = engine.is_test_voice  # random weights: the page warns that the voice is noise
        self.created_at = time.monotonic()
        self.connected_at: float | None = None
        self.close_reason: str | None = None
        self._on_closed = on_closed
        self._tasks: set[asyncio.Task[Any]] = set()
        self._start_task: asyncio.Task[None] | None = None
        self._grace_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def session_id(self) -> str:
        return self.pipeline.session_id

    @property
    def closed(self) -> bool:
        return self._closing is not None

    # ---- signalling ----------------------------------------------------------------------------

    async def accept(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Apply the page's offer and return the complete answer. ValueError: unusable offer."""
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self.events.attach)
        self.pc.on("connectionstatechange", self._on_connection_state)
        await self.pc.setRemoteDescription(offer)
        if self.audio_in is None:
            raise ValueError("the offer carries no audio track")
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        # the first message on the channel, whenever it opens: which session this page talks to
        self.events.send("session", {"session_id": self.session_id, "peer_id": self.peer_id,
                                     "test_voice": self._test_voice})
        self._spawn(self._watchdog(), "watchdog")
        return self.pc.localDescription

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self.audio_in is not None:
            return  # the server only lets offers with one audio section through
        try:
            set_track_prefetch(self.pc, track, self.cfg.jitter_prefetch)  # before the first packet arrives
        except RuntimeError as exc:  # a call with aiortc's 80 ms is better than no call
            log.warning("peer %s: %s", self.peer_id, exc)
        self.audio_in = WebRTCAudioInput(track, label=f"WebRTCAudioInput[{self.peer_id}]")
        # added while the remote description is applied, so the answer is sendrecv on that section
        self.pc.addTrack(self.track)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("peer %s: connection %s", self.peer_id, state)
        if state == "connected":
            if self._grace_task is not None:
                self._grace_task.cancel()
                self._grace_task = None
            if self.connected_at is None:
                self.connected_at = time.monotonic()
                self._start_task = self._spawn(self._start_session(), "start")
        elif state in ("failed", "closed"):
            self.close_soon(f"connection_{state}")
        elif state == "disconnected" and self._grace_task is None:
            self._grace_task = self._spawn(self._close_after_grace(), "grace")

    # ---- background work -----------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=f"direct-peer-{self.peer_id}-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("peer %s: task %s failed", self.peer_id, task.get_name(), exc_info=task.exception())

    async def _start_session(self) -> None:
        assert self.audio_in is not None
        try:
            await self.pipeline.start(audio_in=self.audio_in, audio_out=self.output)
        except Exception:
            log.exception("peer %s: session %s failed to start", self.peer_id, self.session_id)
            self.close_soon("session_failed")

    async def _close_after_grace(self) -> None:
        await asyncio.sleep(self.cfg.disconnect_grace_s)
        self.close_soon("disconnected")

    async def _watchdog(self) -> None:
        """Catch peers that vanish without a word: never connected, or no audio any more."""
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            now = time.monotonic()
            if self.connected_at is None:
                if now - self.created_at > self.cfg.connect_timeout_s:
                    self.close_soon("connect_timeout")
                    return
                continue
            heard = self.audio_in.last_frame_at if self.audio_in is not None else None
            if now - (heard or self.connected_at) > self.cfg.media_timeout_s:
                self.close_soon("media_timeout")
                return

    # ---- teardown ------------------------------------------------------------------------------

    def close_soon(self, reason: str) -> asyncio.Task[None]:
        """Start tearing down (once); safe from synchronous event handlers."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                self._close(reason), name=f"direct-peer-{self.peer_id}-close")
        return self._closing

    async def close(self, reason: str = "closed") -> None:
        # shielded: a caller that is cancelled (a request handler, say) must not stop the teardown
        await asyncio.shield(self.close_soon(reason))

    async def _close(self, reason: str) -> None:
        self.close_reason = reason
        log.info("peer %s (%s): closing: %s", self.peer_id, self.identity, reason)
        self.events.send("bye", {"reason": reason})  # best effort: the page may be gone already
        start = self._start_task
        others = [t for t in self._tasks if t is not start]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if start is not None and not start.done():
            # cancelling AgentSession.start halfway would strand its tasks: let it finish first
            await _step(self.peer_id, "session start", asyncio.wait_for(start, START_TIMEOUT_S))
        await _step(self.peer_id, "pipeline", self.pipeline.aclose())
        await _step(self.peer_id, "audio output", self.output.aclose())
        if self.audio_in is not None:
            await _step(self.peer_id, "audio input", self.audio_in.aclose())
        self.track.stop()
        await _step(self.peer_id, "peer connection", self.pc.close())
        log.info("peer %s closed", self.peer_id)
        if self.metrics is not None:
            self.metrics.session_ended(self.session_id)
        if self._on_closed is not None:
            self._on_closed(self)


async def _step(peer_id: str, what: str, awaitable: Coroutine[Any, Any, Any] | asyncio.Future[Any]) -> None:
    """One teardown step; a failure is logged and the remaining steps still run."""
    try:
        await awaitable
    except Exception:
        log.exception("peer %s: closing the %s failed", peer_id, what)
