"""Prometheus metrics of the speech API, on a CollectorRegistry of its own (never the process-wide
default), so the API mounted inside the agent process does not collide with the agent's metrics.

    speech_api_requests_total{endpoint, status}   every answered request (WebSocket: 101 on upgrade)
    speech_api_ttfa_seconds{endpoint}             request arrival -> first audio bytes written
    speech_api_active_streams                     engine streams the API holds now (HTTP and WebSocket)
    speech_api_rejects_total{reason}              401 auth, 429 key_limit, 503 engine_busy / engine_unavailable
    speech_api_stream_ends_total{endpoint, reason}  eos, frame_cap, cancelled, client_gone, write_timeout, error
    speech_api_audio_seconds_total{endpoint}      audio sent
    speech_api_engine_load                        the engine's share of stream slots in use (read at scrape)
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

TTFA_BUCKETS_S = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class SpeechMetrics:
    def __init__(self, engine_load: Callable[[], float], registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        r = self.registry
        self.requests = Counter("speech_api_requests", "Requests answered, by endpoint and HTTP status",
                                ["endpoint", "status"], registry=r)
        self.ttfa = Histogram("speech_api_ttfa_seconds", "Request arrival to the first audio bytes written",
                              ["endpoint"], buckets=TTFA_BUCKETS_S, registry=r)
        self.active = Gauge("speech_api_active_streams", "Engine streams the API holds now (HTTP and WebSocket utterances)",
                            registry=r)
        self.rejects = Counter("speech_api_rejects", "Requests refused for capacity or auth", ["reason"], registry=r)
        self.ends = Counter("speech_api_stream_ends", "Speech streams ended, by why", ["endpoint", "reason"], registry=r)
        self.audio = Counter("speech_api_audio_seconds", "Seconds of audio sent", ["endpoint"], registry=r)
        load = Gauge("speech_api_engine_load", "Share of the TTS engine's stream slots in use (0..1)", registry=r)
        load.set_function(engine_load)

    async def handle(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        # aiohttp's content_type= refuses parameters (version, charset): set the header whole
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})
