"""Prometheus metrics for the agent: per-stage turn latency, turns, barge-ins, errors, sessions, engine.

One `AgentMetrics` owns its own CollectorRegistry (never the process-wide default), so tests and
several agents in one process do not collide. Events come from VoicePipeline's `on_event(kind, data)`:

    metrics = AgentMetrics()
    metrics.register_engine(engine.stats, engine.load)
    with metrics.session(session_id, then=send_to_page) as on_event:
        pipeline = VoicePipeline(engine, cfg, vad, session_id, on_event=on_event)
        ...
    metrics.add_routes(app)  # GET /metrics on an aiohttp app

Engine numbers are read at scrape time through the callbacks, never pushed: the engine stays
unaware of Prometheus (tts_engine imports torch only).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .trace_stats import ERROR_STAGES, STAGES, error_stage, split_errors

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]
# Milliseconds: from a few ms (publishing, cancel-to-silence) to seconds (a slow LLM, a stalled turn).
LATENCY_BUCKETS_MS: tuple[float, ...] = (5, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000)
# Engine stats keys that only ever grow: exposed as counters so rate() works; every other number is a gauge.
ENGINE_COUNTERS = frozenset({"steps", "packets", "underruns", "eager_fallbacks", "graph_replays"})


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class _EngineCollector(Collector):
    """Reads the engine's stats and load when Prometheus scrapes. A failing callback costs its
    metrics for that scrape (logged), never the scrape itself."""

    def __init__(self, prefix: str, stats_fn: Callable[[], dict[str, Any]] | None,
                 load_fn: Callable[[], float] | None) -> None:
        self.prefix, self.stats_fn, self.load_fn = prefix, stats_fn, load_fn

    def collect(self) -> Iterator[Metric]:
        if self.load_fn is not None:
            try:
                load = float(self.load_fn())
            except Exception:
                log.exception("engine load callback failed")
            else:
                yield GaugeMetricFamily(f"{self.prefix}_engine_load", "Share of TTS stream slots in use (0..1)",
                                        value=load)
        if self.stats_fn is None:
            return
        try:
            stats = dict(self.stats_fn())
        except Exception:
            log.exception("engine stats callback failed")
            return
        for key, value in sorted(stats.items()):
            if not _is_number(value):
                continue
            name = f"{self.prefix}_engine_{re.sub(r'[^a-zA-Z0-9_]', '_', key)}"
            if key in ENGINE_COUNTERS:  # the family name drops "_total"; the sample gets it back
                yield CounterMetricFamily(name, f"TTS engine {key} since start", value=value)
            else:
                yield GaugeMetricFamily(name, f"TTS engine {key}", value=value)


class AgentMetrics:
    def __init__(self, prefix: str = "agent", buckets_ms: tuple[float, ...] = LATENCY_BUCKETS_MS,
                 registry: CollectorRegistry | None = None) -> None:
        self.prefix = prefix
        # own registry by default (tests, several instances); the LiveKit worker passes the global one,
        # which livekit's own metrics server (prometheus_port) exposes
        self.registry = registry if registry is not None else CollectorRegistry()
        r, p = self.registry, prefix
        self.stage_ms = Histogram(f"{p}_turn_stage_ms", "Per-turn latency of one pipeline stage, milliseconds",
                                  ["stage"], buckets=buckets_ms, registry=r)
        self.turns = Counter(f"{p}_turns", "Turns written to the trace", registry=r)
        self.interrupted_turns = Counter(f"{p}_turns_interrupted", "Turns the user barged in on", registry=r)
        self.failed_turns = Counter(f"{p}_turns_failed", "Turns ending with an error, by first failing stage",
                                    ["stage"], registry=r)
        self.barge_ins = Counter(f"{p}_barge_ins", "Barge-ins (reply cancellations) by outcome", ["outcome"],
                                 registry=r)
        self.errors = Counter(f"{p}_errors", "Errors reported by sessions, by stage", ["stage"], registry=r)
        self.active_sessions = Gauge(f"{p}_active_sessions", "Conversations in progress", registry=r)
        for stage in ERROR_STAGES:  # zero series from the start: a rate over a missing series is no data, not 0
            self.errors.labels(stage=stage)
            self.failed_turns.labels(stage=stage)
        for key in STAGES:
            self.stage_ms.labels(stage=_stage_label(key))
        self._sessions: set[str] = set()
        self._lock = threading.Lock()
        self._engine: _EngineCollector | None = None

    # ---- sources -------------------------------------------------------------------------------

    def register_engine(self, engine_stats_fn: Callable[[], dict[str, Any]] | None,
                        load_fn: Callable[[], float] | None = None) -> None:
        """Expose `engine.stats()` / `engine.load()`, called at each scrape. Calling again replaces them."""
        if self._engine is not None:
            self.registry.unregister(self._engine)
        self._engine = _EngineCollector(self.prefix, engine_stats_fn, load_fn)
        self.registry.register(self._engine)

    def session_started(self, session_id: str) -> None:
        with self._lock:
            self._sessions.add(session_id)
            self.active_sessions.set(len(self._sessions))

    def session_ended(self, session_id: str) -> None:
        """Idempotent: ending a session twice (error path + normal close) counts once."""
        with self._lock:
            self._sessions.discard(session_id)
            self.active_sessions.set(len(self._sessions))

    @contextmanager
    def session(self, session_id: str, then: EventCallback | None = None) -> Iterator[EventCallback]:
        """Marks the session active for the `with` block and yields its on_event callback."""
        self.session_started(session_id)
        try:
            yield self.observer(session_id, then)
        finally:
            self.session_ended(session_id)

    def observer(self, session_id: str, then: EventCallback | None = None) -> EventCallback:
        """A VoicePipeline on_event callback that records metrics, then calls `then` (the page's
        data channel, a log...). A metrics bug never keeps the event from `then`."""

        def on_event(kind: str, data: dict[str, Any]) -> None:
            try:
                self.observe_event(kind, data)
            except Exception:
                log.exception("session %s: metrics for %r event failed", session_id, kind)
            if then is not None:
                then(kind, data)

        return on_event

    def observe_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "turn":
            self.observe_turn(data)
        elif kind == "barge_in":
            self.barge_ins.labels(outcome=str(data.get("outcome") or "unknown")).inc()
        elif kind == "error":
            self.errors.labels(stage=error_stage(str(data.get("message", "")))).inc()
        # user_state / agent_state / transcript carry no numbers worth a series

    def observe_turn(self, rec: dict[str, Any]) -> None:
        """One trace record (agent/observe/traces.py): each stage that happened goes into its histogram."""
        self.turns.inc()
        if rec.get("interrupted") is True:
            self.interrupted_turns.inc()
        if rec.get("error") is not None:
            parts = split_errors(str(rec["error"]))
            self.failed_turns.labels(stage=error_stage(parts[0]) if parts else "other").inc()
        for key in STAGES:
            v = rec.get(key)
            # a negative duration is a bookkeeping bug, not a latency (the trace report flags it)
            if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0:
                self.stage_ms.labels(stage=_stage_label(key)).observe(v)

    # ---- exposition ----------------------------------------------------------------------------

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """(body, content type), negotiated like prometheus_client's own server: text format by
        default, OpenMetrics when the scraper asks for it."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    async def handle_metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.exposition(request.headers.get("Accept", ""))
        # aiohttp's content_type= refuses parameters (version, charset): set the header whole
        return web.Response(body=body, headers={"Content-Type": content_type})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self.handle_metrics)


def _stage_label(key: str) -> str:
    return key.removesuffix("_ms")  # the metric name already says milliseconds
