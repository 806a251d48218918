"""The aiohttp app over one shared TTSEngine: `make_app(engine, config)`.

    POST /v1/audio/speech          OpenAI's text-to-speech: chunked audio or SSE, as frames decode
    WS   /v1/audio/speech/stream   text in as it is written, PCM out as it decodes (ws.py)
    GET  /v1/audio/voices          the checkpoint's speakers and languages
    GET  /v1/models                the model names `model` may take
    GET  /healthz                  200 while the engine runs, else 503 (no key needed)
    GET  /metrics                  Prometheus, on this app's own registry (no key needed)

The engine stays free of HTTP: this app only opens streams on it, so one model copy serves the
agent's calls and the API when the agent mounts it (`parent.add_subapp("/speech", make_app(...))`).
Every refusal is OpenAI's error JSON (errors.py); anything unexpected is a 500 naming only a request
id. A client that goes away, or takes no audio for `write_timeout_s`, loses its stream at once: the
engine slot is freed by cancelling the stream in the handler's `finally` (speech_stream.py says when
a disconnect is noticed: serve the app with handler_cancellation, as BackgroundServer does).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from token_server.http_guard import RequestError, parse_json, read_body, unexpected_errors
from tts_engine import (
    EngineBusy,
    EngineClosed,
    Priority,
    TTSEngine,
    TTSStream,
    UnknownLanguageError,
    UnknownSpeakerError,
)

from .auth import KeyAuth, KeySlots
from .config import SpeechApiConfig
from .errors import ApiError, engine_unavailable, render_error
from .metrics import SpeechMetrics
from .request import Catalog, parse_speech_request
from .speech_stream import SpeechStreamer
from .ws import speech_socket

log = logging.getLogger(__name__)

_BODY_CODES = {408: "body_timeout", 413: "body_too_large"}
CLIENT_GONE = 499  # nginx's "client closed request": the requests metric's status for a client gone too soon


class SpeechService:
    """Handlers and shared state of one app: auth, per-key slots, metrics, the open streams."""

    def __init__(self, engine: TTSEngine, cfg: SpeechApiConfig) -> None:
        self.engine = engine
        self.cfg = cfg
        self.catalog = Catalog(speakers=tuple(s.lower() for s in engine.speakers),
                               languages=tuple(lang.lower() for lang in engine.languages),
                               max_text_chars=engine.config.max_text_chars)
        self.auth = KeyAuth(cfg.api_keys)
        self.slots = KeySlots(cfg.max_streams_per_key, cfg.retry_after_key_s)
        self.metrics = SpeechMetrics(engine.load)
        self.streams: set[TTSStream] = set()  # open engine streams, cancelled on shutdown
        self.sockets: set[web.WebSocketResponse] = set()
        self.created = int(time.time())

    # ---- engine access -------------------------------------------------------------------------

    def open_stream(self, voice: str, language: str) -> TTSStream:
        """An engine stream, or 503 (full / not running) with Retry-After.

        Every API stream is STREAMING: its audio leaves as it decodes (even when the client keeps it
        all), so the engine serves live calls first in each step, and the live reserve of slots
        stays theirs."""
        try:
            return self.engine.open_stream(speaker=voice, language=language, priority=Priority.STREAMING)
        except EngineBusy:
            total, kept = self.engine.config.max_streams, self.engine.config.live_reserve
            raise ApiError(503, f"every TTS stream slot open to API requests is in use ({total - kept} of {total}; "
                                f"{kept} kept for live calls); retry shortly", "engine_busy",
                           headers={"Retry-After": str(self.cfg.retry_after_busy_s)}) from None
        except EngineClosed:
            raise engine_unavailable("the TTS engine is not running; the service is restarting") from None
        except UnknownSpeakerError as exc:  # checked before; kept for an engine whose voices changed
            raise ApiError(400, str(exc), "unknown_voice", "voice") from None
        except UnknownLanguageError as exc:
            raise ApiError(400, str(exc), "unknown_language", "language") from None

    def track(self, stream: TTSStream) -> None:
        self.streams.add(stream)
        self.metrics.active.inc()

    def untrack(self, stream: TTSStream, endpoint: str, reason: str) -> None:
        if not stream.done:
            stream.cancel()  # frees the engine slot now, whatever state the stream is in
        if stream in self.streams:
            self.streams.discard(stream)
            self.metrics.active.dec()
            self.metrics.ends.labels(endpoint, reason).inc()

    # ---- handlers ------------------------------------------------------------------------------

    async def speech(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        caller = self.auth.caller(request)
        if request.content_type != "application/json":
            raise ApiError(415, f"Content-Type must be application/json, got {request.content_type or 'none'}",
                           "unsupported_media_type")
        try:
            data = parse_json(await read_body(request, self.cfg.max_body_bytes))
        except RequestError as exc:
            raise ApiError(exc.status, str(exc), _BODY_CODES.get(exc.status, "invalid_json")) from None
        req = parse_speech_request(data, self.catalog, self.cfg)
        with self.slots.hold(caller):
            stream = self.open_stream(req.voice, req.language)
            request_id = secrets.token_hex(6)
            log.info("speech %s: caller=%s voice=%s language=%s format=%s/%s speed=%s chars=%d", request_id,
                     caller, req.voice, req.language, req.response_format, req.stream_format, req.speed, len(req.input))
            streamer = SpeechStreamer(self, request, req, stream, request_id, started)
            return await streamer.run()

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        return await speech_socket(self, request)

    async def voices(self, request: web.Request) -> web.Response:
        self.auth.caller(request)
        return web.json_response({"object": "list", "default_language": self.cfg.default_language,
                                  "languages": list(self.catalog.languages),
                                  "data": [{"id": s, "object": "voice", "languages": list(self.catalog.languages)}
                                           for s in self.catalog.speakers]})

    async def models(self, request: web.Request) -> web.Response:
        self.auth.caller(request)
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "created": self.created, "owned_by": "speech_api"}
            for name in self.cfg.models]})

    async def healthz(self, _request: web.Request) -> web.Response:
        running = self.engine.running
        stats = self.engine.stats()
        return web.json_response({
            "status": "ok" if running else "unavailable", "streams": len(self.streams),
            "engine": {"running": running, "load": self.engine.load(), "active_streams": stats["active_streams"],
                       "max_streams": stats["max_streams"], "test_voice": self.engine.is_test_voice}},
            status=200 if running else 503)

    # ---- lifecycle and middlewares -------------------------------------------------------------

    async def on_shutdown(self, _app: web.Application) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"server shutting down")
        for stream in list(self.streams):
            stream.cancel()

    @web.middleware
    async def count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or "other"
        try:
            response = await handler(request)
        except asyncio.CancelledError:  # with handler_cancellation: the client went away mid-request
            self.metrics.requests.labels(route, str(CLIENT_GONE)).inc()
            raise
        self.metrics.requests.labels(route, str(response.status)).inc()
        return response

    @web.middleware
    async def api_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            if exc.status in (401, 429, 503):
                self.metrics.rejects.labels(exc.code).inc()
            return exc.response()
        except ConnectionResetError:  # gone while its body was read or its status line written: not a fault
            log.debug("%s %s: the client went away before an answer", request.method, request.path)
            return web.Response(status=CLIENT_GONE)  # aiohttp's write of it fails quietly; only counted
        except web.HTTPException as exc:  # routing: unknown path (404), wrong method (405)
            if exc.status == 404:
                error = ApiError(404, f"not found: {request.method} {request.path}", "not_found")
            else:
                error = ApiError(exc.status, f"{exc.reason} ({request.method} {request.path})", "method_not_allowed"
                                 if exc.status == 405 else "http_error")
            if "Allow" in exc.headers:
                error.headers["Allow"] = exc.headers["Allow"]
            return error.response()


SERVICE_KEY = web.AppKey("speech_api_service", SpeechService)


def make_app(engine: TTSEngine, config: SpeechApiConfig | None = None) -> web.Application:
    """The API over `engine`; `app[SERVICE_KEY]` is its SpeechService (metrics, open streams)."""
    cfg = SpeechApiConfig() if config is None else config
    service = SpeechService(engine, cfg)
    app = web.Application(middlewares=[service.count, unexpected_errors(render_error), service.api_errors])
    app[SERVICE_KEY] = service
    app.router.add_post("/v1/audio/speech", service.speech, name="speech")
    app.router.add_get("/v1/audio/speech/stream", service.socket, name="speech_ws")
    app.router.add_get("/v1/audio/voices", service.voices, name="voices")
    app.router.add_get("/v1/models", service.models, name="models")
    app.router.add_get("/healthz", service.healthz, name="healthz")
    app.router.add_get("/metrics", service.metrics.handle, name="metrics")
    app.on_shutdown.append(service.on_shutdown)
    return app
