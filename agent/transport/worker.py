"""The LiveKit worker: registers with a LiveKit server, joins rooms by dispatch and runs one
VoicePipeline per room.

Jobs run as THREADS of one worker process (JobExecutorType.THREAD), not as livekit's default
separate processes: every session must share the ONE TTSEngine, i.e. one model copy and one GPU
owner. The engine is loaded before the worker registers (`python -m agent start` does it), so a job
never waits for a model and livekit's 10 s process-initialisation timeout never meets a real
checkpoint; the setup function only hands out what is already loaded.

Dispatch: the worker reports `WorkerState.load()` - the larger of the engine's stream slots in use
and its sessions over AGENT_MAX_SESSIONS - and marks itself full at 1.0, so the LiveKit server,
which picks among available workers weighted by 1 - load, sends new rooms to the others. Run one
worker per GPU machine against one LiveKit deployment to scale out.

Audio out goes through our own paced sink (room_audio.py) instead of RoomIO's, so a barge-in
silences the room at once and its cut is timed like direct mode's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import prometheus_client
from livekit import rtc
from livekit.agents import AgentServer, AutoSubscribe, JobContext, JobExecutorType

from ..config import WorkerConfig
from ..observe.metrics import AgentMetrics
from ..resources import SharedResources
from ..session.pipeline import VoicePipeline
from .audio_output import PacedAudioOutput, silence_transport_on_cut
from .room_audio import RoomAudioSink

log = logging.getLogger(__name__)

EVENTS_TOPIC = "agent-events"  # data-channel topic of transcripts, state and per-turn latency
SUBSCRIBE_WAIT_S = 5.0  # how long a new session waits for the user to subscribe to the agent's voice
# The room's AudioSource hands audio to the encoder on a 10 ms tick: a 20 ms frame waits for two
# ticks, and a cut lets the frame in flight finish. 10 ms frames halve both.
ROOM_FRAME_S = 0.01


class WorkerState:
    """What the worker process knows about itself: its sessions, its registration, its load."""

    def __init__(self, resources: SharedResources, cfg: WorkerConfig,
                 registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.resources = resources
        self.cfg = cfg
        # one worker per process: its metrics go to the global registry, next to livekit's own
        self.metrics = AgentMetrics(registry=registry if registry is not None else prometheus_client.REGISTRY)
        self.metrics.register_engine(lambda: resources.engine.stats() if resources.loaded else {}, resources.load)
        self._lock = threading.Lock()
        self._sessions: set[str] = set()
        self.worker_id: str | None = None  # set once the LiveKit server accepted the registration
        self._connect_lock = threading.Lock()  # see connecting()

    @property
    def sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def load(self) -> float:
        """0..1 for dispatch: 1.0 means full (no new job until a session ends, or ever: a dead engine)."""
        if self.resources.loaded and not self.resources.ready:
            return 1.0
        return min(1.0, max(self.resources.load(), self.sessions / self.cfg.max_sessions))

    def session_started(self, session_id: str) -> None:
        with self._lock:
            self._sessions.add(session_id)
        self.metrics.session_started(session_id)

    def session_ended(self, session_id: str) -> None:
        with self._lock:
            self._sessions.discard(session_id)
        self.metrics.session_ended(session_id)

    @contextlib.asynccontextmanager
    async def connecting(self) -> AsyncIterator[None]:
        """One room connection at a time per process. With livekit rtc 1.1.21, two rooms connecting
        at once from two job threads can leave one connect callback unanswered; the FFI layer then
        panics ("timed out waiting for ReadyForRoomEventRequest") and terminates the whole worker.
        A connect takes ~0.1 s, so a burst of four rooms costs the last one ~0.3 s. Polled rather
        than blocking in a thread, so a job cancelled while it waits never leaves the lock held."""
        while not self._connect_lock.acquire(blocking=False):
            await asyncio.sleep(0.01)
        try:
            yield
        finally:
            self._connect_lock.release()

    def registered(self, worker_id: str) -> None:
        log.info("registered with the LiveKit server as %s", worker_id)
        self.worker_id = worker_id

    def status(self, *, livekit_reachable: bool, draining: bool = False) -> tuple[bool, dict[str, Any]]:
        """(healthy, body) for GET /healthz: healthy = engine ready, registered, server reachable."""
        problems = []
        if not self.resources.ready:
            problems.append("the TTS engine and Silero are not loaded (yet)" if not self.resources.loaded
                            else "the TTS engine is not running")
        if self.worker_id is None:
            problems.append("not registered with the LiveKit server (yet)")
        if not livekit_reachable:
            problems.append(f"the LiveKit server {self.cfg.livekit_url} does not answer")
        if draining:
            problems.append("draining: finishing its sessions, taking no new ones")
        body = {"status": "ok" if not problems else "unavailable", "problems": problems,
                "worker_id": self.worker_id, "agent_name": self.cfg.agent_name or None,
                "sessions": self.sessions, "max_sessions": self.cfg.max_sessions, "load": round(self.load(), 3),
                "engine": self.resources.engine.stats() if self.resources.loaded else None}
        return not problems, body


def _sent(pending: set[asyncio.Task]):
    def done(task: asyncio.Task) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("data-channel event not sent: %s", task.exception())
    return done


def make_server(state: WorkerState) -> AgentServer:
    resources, cfg = state.resources, state.cfg
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD, load_fnc=state.load, load_threshold=1.0,
        # one warm job thread per session slot: a burst of rooms never waits for a thread, and
        # livekit's estimate for jobs it has accepted but not started (threshold / idle threads)
        # is then one session's share of the load, so a burst of max_sessions rooms is all taken
        num_idle_processes=cfg.max_sessions,
        # the engine is loaded before run_app; a job thread only picks up the shared objects
        setup_fnc=lambda proc: (resources.engine, resources.vad, resources.turn_model),
        # livekit's own health server answers "OK" before registration: ours (worker_health.py) is
        # the one to ask; this one is kept off every public interface and off a fixed port
        host="127.0.0.1", port=0)
    server.on("worker_registered", lambda worker_id, _info: state.registered(worker_id))

    @server.rtc_session(agent_name=cfg.agent_name)
    async def entrypoint(ctx: JobContext) -> None:
        async with state.connecting():
            await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
        room = ctx.room
        session_id = f"{room.name}-{ctx.job.id}"
        state.session_started(session_id)

        async def session_over() -> None:
            state.session_ended(session_id)
        ctx.add_shutdown_callback(session_over)

        sending: set[asyncio.Task] = set()

        def publish(kind: str, data: dict[str, Any]) -> None:
            """Send an event to the room without blocking the pipeline (a failed send is logged)."""
            payload = json.dumps({"type": kind, **data}).encode()
            task = asyncio.ensure_future(room.local_participant.publish_data(payload, reliable=True, topic=EVENTS_TOPIC))
            sending.add(task)
            task.add_done_callback(_sent(sending))

        rate = resources.engine.config.output_sample_rate
        sink = RoomAudioSink(rate)
        output = PacedAudioOutput(sample_rate=rate, on_play=sink.push, label=f"PacedAudioOutput[{room.name}]",
                                  max_frame_s=ROOM_FRAME_S)
        silence_transport_on_cut(output, sink.clear)
        on_event: Callable[[str, dict[str, Any]], None] = state.metrics.observer(session_id, then=publish)
        pipeline = VoicePipeline(resources.engine, resources.agent_cfg, resources.vad,
                                 session_id=session_id, on_event=on_event, turn_model=resources.turn_model)
        # shutdown callbacks run in order: stop the conversation, then its audio path
        ctx.add_shutdown_callback(pipeline.aclose)
        ctx.add_shutdown_callback(output.aclose)
        ctx.add_shutdown_callback(sink.aclose)
        # the session closes when the user hangs up (RoomIO: the linked participant left on purpose);
        # the job must end then too, or the worker counts a session until the room times out
        pipeline.session.on("close", lambda ev: ctx.shutdown(reason=f"session closed: {ev.reason}"))
        publication = await sink.publish(room)
        await _wait_for_listener(publication, room.name)
        await pipeline.start(audio_out=output, room=room)

    return server


async def _wait_for_listener(publication: rtc.LocalTrackPublication, room_name: str) -> None:
    """A greeting played before the user subscribed would be lost: give them a moment."""
    try:
        await asyncio.wait_for(publication.wait_for_subscription(), SUBSCRIBE_WAIT_S)
    except TimeoutError:
        log.warning("room %s: nobody subscribed to the agent's voice within %.0f s; starting anyway",
                    room_name, SUBSCRIBE_WAIT_S)
