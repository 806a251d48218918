"""AgentMetrics: pipeline events in -> Prometheus exposition out, scraped over HTTP from an aiohttp app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from agent.observe.metrics import AgentMetrics

ENGINE_STATS: dict[str, Any] = {
    "active_streams": 2, "pending": 1, "max_streams": 4, "running_utterances": 2, "steps": 900, "packets": 1200,
    "underruns": 3, "cuda_graphs": 0, "eager_fallbacks": 5, "kv_cache_bytes": 1 << 20,
    "device": "cpu",  # not a number: skipped
}


def record(turn_id: int, v2v: float | None, **extra: Any) -> dict[str, Any]:
    rec = {"session_id": "s1", "turn_id": turn_id, "vad_to_stt_ms": 120.0, "stt_ms": 100.0,
           "llm_ttft_ms": 150.0,
           "tts_ttfa_ms": 80.0, "tts_first_to_publish_ms": 2.0, "voice_to_voice_ms": v2v,
           "pipeline_overhead_ms": None if v2v is None else v2v - 330.0, "interrupted": False,
           "cancel_to_silence_ms": None, "error": None}
    rec.update(extra)
    return rec


@asynccontextmanager
async def serve(metrics: AgentMetrics) -> AsyncIterator[TestClient]:
    """A real HTTP server on a free port (an async fixture would run on another event loop)."""
    app = web.Application()
    metrics.add_routes(app)
    async with TestClient(TestServer(app)) as c:
        yield c


async def scrape(c: TestClient, accept: str | None = None) -> tuple[str, str]:
    resp = await c.get("/metrics", headers={"Accept": accept} if accept else None)
    assert resp.status == 200
    return await resp.text(), resp.headers["Content-Type"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_turn_events_fill_histograms_and_counters() -> None:
    metrics = AgentMetrics()
    async with serve(metrics) as c:
        seen: list[str] = []
        with metrics.session("s1", then=lambda kind, data: seen.append(kind)) as on_event:
            on_event("user_state", {"state": "listening"})
            on_event("turn", record(1, 400.0))
            on_event("barge_in", {"outcome": "cut", "cancel_to_silence_ms": 35.0})
            on_event("turn", record(2, 700.0, interrupted=True, cancel_to_silence_ms=35.0))
            on_event("barge_in", {"outcome": "false_resumed", "cancel_to_silence_ms": 0.0})
            on_event("error", {"message": "llm: timeout"})
            on_event("error", {"message": "something odd"})
            on_event("turn", record(3, None, llm_ttft_ms=None, tts_ttfa_ms=None, tts_first_to_publish_ms=None,
                                    stt_ms=-4.0, error="llm: timeout; tts: engine busy"))
            text, content_type = await scrape(c)
            s = samples(text)
            assert s[("agent_active_sessions", ())] == 1
        assert seen == ["user_state", "turn", "barge_in", "turn", "barge_in", "error", "error", "turn"]
        assert content_type.startswith("text/plain; version=0.0.4")

        v2v = (("stage", "voice_to_voice"),)
        assert s[("agent_turn_stage_ms_count", v2v)] == 2
        assert s[("agent_turn_stage_ms_sum", v2v)] == 1100.0
        assert s[("agent_turn_stage_ms_bucket", (("le", "500.0"), ("stage", "voice_to_voice")))] == 1
        assert s[("agent_turn_stage_ms_bucket", (("le", "750.0"), ("stage", "voice_to_voice")))] == 2
        assert s[("agent_turn_stage_ms_count", (("stage", "stt"),))] == 2  # the -4.0 is not a latency
        assert s[("agent_turn_stage_ms_sum", (("stage", "stt"),))] == 200.0
        assert s[("agent_turn_stage_ms_count", (("stage", "cancel_to_silence"),))] == 1
        assert s[("agent_turn_stage_ms_count", (("stage", "tts_first_to_publish"),))] == 2
        assert s[("agent_turns_total", ())] == 3
        assert s[("agent_turns_interrupted_total", ())] == 1
        assert s[("agent_turns_failed_total", (("stage", "llm"),))] == 1
        assert s[("agent_turns_failed_total", (("stage", "tts"),))] == 0
        assert s[("agent_barge_ins_total", (("outcome", "cut"),))] == 1
        assert s[("agent_barge_ins_total", (("outcome", "false_resumed"),))] == 1
        assert s[("agent_errors_total", (("stage", "llm"),))] == 1
        assert s[("agent_errors_total", (("stage", "other"),))] == 1
        assert s[("agent_errors_total", (("stage", "stt"),))] == 0  # present from the start, at zero
        assert 'agent_turn_stage_ms_count{stage="voice_to_voice"} 2.0' in text

        text, _ = await scrape(c)
        assert samples(text)[("agent_active_sessions", ())] == 0  # the with block ended the session


async def test_engine_stats_are_read_at_scrape_time() -> None:
    metrics = AgentMetrics()
    async with serve(metrics) as c:
        stats = dict(ENGINE_STATS)
        metrics.register_engine(lambda: stats, lambda: stats["active_streams"] / stats["max_streams"])
        s = samples((await scrape(c))[0])
        assert s[("agent_engine_load", ())] == 0.5
        assert s[("agent_engine_underruns_total", ())] == 3
        assert s[("agent_engine_packets_total", ())] == 1200
        assert s[("agent_engine_eager_fallbacks_total", ())] == 5
        assert s[("agent_engine_active_streams", ())] == 2
        assert s[("agent_engine_pending", ())] == 1
        assert s[("agent_engine_kv_cache_bytes", ())] == 1 << 20
        assert not any(name.startswith("agent_engine_device") for name, _ in s)

        stats.update(underruns=7, active_streams=4)  # nothing pushed: the next scrape reads the new numbers
        s = samples((await scrape(c))[0])
        assert (s[("agent_engine_underruns_total", ())], s[("agent_engine_load", ())]) == (7, 1.0)
        text = (await scrape(c))[0]
        assert "# TYPE agent_engine_underruns_total counter" in text
        assert "# TYPE agent_engine_active_streams gauge" in text


async def test_broken_engine_callback_costs_its_metrics_not_the_scrape() -> None:
    metrics = AgentMetrics()
    async with serve(metrics) as c:

        def broken() -> dict[str, Any]:
            raise RuntimeError("engine closed")

        metrics.register_engine(broken, lambda: 0.25)
        s = samples((await scrape(c))[0])
        assert s[("agent_engine_load", ())] == 0.25
        assert ("agent_engine_underruns_total", ()) not in s
        assert ("agent_turns_total", ()) in s


async def test_openmetrics_on_request_and_separate_registries() -> None:
    metrics = AgentMetrics()
    async with serve(metrics) as c:
        other = AgentMetrics()  # its own registry: a second instance does not collide with the first
        other.session_started("x")
        other.session_started("y")
        other.session_ended("y")
        other.session_ended("y")  # idempotent
        body, _ = other.exposition()
        assert b"agent_active_sessions 1.0" in body
        text, content_type = await scrape(c, accept="application/openmetrics-text; version=1.0.0")
        assert content_type.startswith("application/openmetrics-text")
        assert text.rstrip().endswith("# EOF")
        assert "agent_active_sessions 0.0" in text


def test_listener_after_metrics_still_runs_when_data_is_odd() -> None:
    metrics = AgentMetrics(prefix="voice")
    got: list[dict[str, Any]] = []
    on_event = metrics.observer("s1", then=lambda kind, data: got.append(data))
    on_event("turn", {"error": object(), "stt_ms": "fast"})  # odd data: counted as a failed turn, no latency
    on_event("barge_in", {})
    assert len(got) == 2
    body = metrics.exposition()[0].decode()
    assert 'voice_turns_failed_total{stage="other"} 1.0' in body
    assert 'voice_barge_ins_total{outcome="unknown"} 1.0' in body
