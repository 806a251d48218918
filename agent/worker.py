"""The LiveKit worker: joins rooms by dispatch and runs one VoicePipeline per room.

Jobs run as THREADS of one worker process (JobExecutorType.THREAD), not as livekit's default
separate processes: every session must share the ONE TTSEngine, i.e. one model copy and one GPU
owner. The engine is thread-safe and serves each job's event loop without blocking it. The
worker reports the engine's load (stream slots in use) so the LiveKit server dispatches new rooms
to the least busy worker; run one worker per GPU machine to scale out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import prometheus_client
from livekit.agents import AgentServer, JobContext, JobExecutorType
from livekit.agents import vad as lk_vad

from tts_engine import EngineConfig, TTSEngine

from .config import AgentConfig
from .metrics import AgentMetrics
from .pipeline import VoicePipeline, load_vad

log = logging.getLogger(__name__)

EVENTS_TOPIC = "agent-events"  # data-channel topic of transcripts, state and per-turn latency


class SharedResources:
    """Process-wide singletons, created once on first use: the TTS engine and the Silero model."""

    def __init__(self, agent_cfg: AgentConfig, engine_cfg: EngineConfig) -> None:
        self.agent_cfg = agent_cfg
        self.engine_cfg = engine_cfg
        self._lock = threading.Lock()
        self._engine: TTSEngine | None = None
        self._vad: lk_vad.VAD | None = None

    @property
    def engine(self) -> TTSEngine:
        with self._lock:
            if self._engine is None:
                self._engine = TTSEngine(self.engine_cfg)
                if self._engine.is_test_voice:
                    log.warning("TTS runs a RANDOM-WEIGHT TEST checkpoint (%s): the voice is noise, not speech",
                                self._engine.loaded.name)
            return self._engine

    @property
    def vad(self) -> lk_vad.VAD:
        with self._lock:
            if self._vad is None:
                self._vad = load_vad(self.agent_cfg)
            return self._vad

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def load(self) -> float:
        """0..1 for dispatch: the share of TTS stream slots in use (0 before the engine exists)."""
        engine = self._engine
        return engine.load() if engine is not None else 0.0

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None


def _sent(pending: set[asyncio.Task]):
    def done(task: asyncio.Task) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("data-channel event not sent: %s", task.exception())
    return done


def make_server(resources: SharedResources, agent_name: str = "", metrics_port: int | None = None,
                health_port: int | None = None) -> AgentServer:
    """metrics_port: serve Prometheus /metrics there (livekit's metrics server, global registry).
    health_port: livekit's health server (None: its default, 8081 in `start`, random in `dev`)."""
    metrics = AgentMetrics(registry=prometheus_client.REGISTRY) if metrics_port is not None else None
    if metrics is not None:
        metrics.register_engine(lambda: resources.engine.stats() if resources.loaded else {}, resources.load)
    ports: dict[str, Any] = {"port": health_port} if health_port is not None else {}
    server = AgentServer(job_executor_type=JobExecutorType.THREAD, load_fnc=resources.load,
                         setup_fnc=lambda proc: (resources.engine, resources.vad), prometheus_port=metrics_port,
                         **ports)

    @server.rtc_session(agent_name=agent_name)
    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        room = ctx.room

        sending: set[asyncio.Task] = set()

        def publish(kind: str, data: dict[str, Any]) -> None:
            """Send an event to the room without blocking the pipeline (a failed send is logged)."""
            payload = json.dumps({"type": kind, **data}).encode()
            task = asyncio.ensure_future(room.local_participant.publish_data(payload, reliable=True, topic=EVENTS_TOPIC))
            sending.add(task)
            task.add_done_callback(_sent(sending))

        session_id = f"{room.name}-{ctx.job.id}"
        on_event: Callable[[str, dict[str, Any]], None] = publish
        if metrics is not None:
            on_event = metrics.observer(session_id, then=publish)
            metrics.session_started(session_id)

            async def session_over() -> None:
                metrics.session_ended(session_id)
            ctx.add_shutdown_callback(session_over)
        pipeline = VoicePipeline(resources.engine, resources.agent_cfg, resources.vad,
                                 session_id=session_id, on_event=on_event)
        ctx.add_shutdown_callback(pipeline.aclose)
        await pipeline.start(room=room)

    return server
