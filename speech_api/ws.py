"""`WS /v1/audio/speech/stream`: text in while it is being written, audio out as it decodes.

Auth and the per-key limit are checked on the upgrade request (401 / 429 JSON, no upgrade); the
connection then counts as one of its key's streams until it closes. Messages (JSON text frames in,
JSON text frames and binary frames out), one utterance at a time, any number per connection:

    client -> {"type": "start", "voice": "ryan", "language"?: "english", "response_format"?: "pcm",
               "model"?: "qwen3-tts", "timestamps"?: "word"|"none"}
                                                      opens an engine stream (pcm is the only format)
    server <- {"type": "started", "utterance": 1, "format": "pcm_s16le", "sample_rate": 24000, "channels": 1}
    client -> {"type": "text", "text": "Hello "}      any number, any chunking (same audio as all at once)
    client -> {"type": "end"}                         no more text: the utterance runs to its end
    server <- binary frames: raw s16le 24 kHz mono PCM, one 80 ms codec frame each, as each decodes
    server <- {"type": "word", "word": "Hello,", "start_s": 0.0, "end_s": 0.32}   once the audio up to
               the word's end was sent (timestamps.py; unless the start said "timestamps": "none")
    server <- {"type": "done", "utterance": 1, "reason": "eos"|"frame_cap"|"cancelled"|"error",
               "frames": n, "audio_seconds": s, "ttfa_ms": first text -> first audio sent (or null),
               "words": word events sent}
    client -> {"type": "cancel"}                      stops at once (the slot is freed); "done" follows
    server <- {"type": "error", "error": {"message", "type", "param", "code"}}   a refused message; the
               connection stays open (engine_busy carries "retry_after": seconds)

Closing the socket cancels the utterance and frees its engine slot at once. A connection that sends
nothing for `ws_idle_timeout_s` while the server waits for its text is closed (code 1000).

After each binary frame, and once more when the audio ended, the events of the utterance's
FrameObserver (timestamps.py) are sent; its `on_done` adds fields to "done".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from tts_engine import InvalidTextError, StreamError, TTSStream
from tts_engine.frames import PACKETS_PER_FRAME

from .audio import OUTPUT_RATE, AudioChain
from .errors import ApiError, bad_field, error_body
from .request import check_model, voice_and_language
from .timestamps import TIMESTAMP_CHOICES, FrameObserver, observer_for

if TYPE_CHECKING:
    from .app import SpeechService

log = logging.getLogger(__name__)

HEARTBEAT_S = 20.0  # ping interval: a peer that vanished without a close is noticed within ~2 of these
START_FIELDS = ("type", "voice", "language", "response_format", "model", "timestamps")


class _Utterance:
    def __init__(self, number: int, stream: TTSStream, chain: AudioChain, observer: FrameObserver) -> None:
        self.number, self.stream, self.chain, self.observer = number, stream, chain, observer
        self.text_ended = False
        self.first_text_at: float | None = None
        self.ttfa_ms: float | None = None
        self.frames = 0
        self.task: asyncio.Task[None] | None = None


async def speech_socket(service: SpeechService, request: web.Request) -> web.WebSocketResponse:
    caller = service.auth.caller(request)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=service.cfg.ws_max_message_bytes)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "this endpoint speaks WebSocket: send an Upgrade request", "websocket_required")
    with service.slots.hold(caller):
        await ws.prepare(request)
        service.sockets.add(ws)
        try:
            await _Session(service, ws).run()
        except Exception:  # after the upgrade no HTTP error can be sent: log an id, close with 1011
            event = _server_fault("ws session")
            if not ws.closed:
                with contextlib.suppress(ConnectionResetError):
                    await ws.send_json(event)
                await ws.close(code=WSCloseCode.INTERNAL_ERROR)
        finally:
            service.sockets.discard(ws)
            await ws.close()
    return ws


class _Session:
    def __init__(self, service: SpeechService, ws: web.WebSocketResponse) -> None:
        self.service, self.ws = service, ws
        self.utterance: _Utterance | None = None
        self.count = 0
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        try:
            while (message := await self._receive()) is not None:
                try:
                    await self._handle(message)
                except ApiError as exc:
                    await self._send_json(_error_event(exc))
        finally:
            await self._stop()

    async def _receive(self) -> dict[str, Any] | None:
        while True:
            try:
                async with asyncio.timeout(self.service.cfg.ws_idle_timeout_s):
                    msg = await self.ws.receive()
            except TimeoutError:
                u = self.utterance
                if u is not None and u.text_ended and u.task is not None and not u.task.done():
                    continue  # all text is in: the client only listens now
                await self._send_json(_error_event(ApiError(408, "no message for "
                                      f"{self.service.cfg.ws_idle_timeout_s:.0f} s: closing", "idle_timeout")))
                return None
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return None
            if msg.type != WSMsgType.TEXT:
                await self._send_json(_error_event(bad_field(None, "send JSON text messages", "invalid_message")))
                continue
            try:
                data = json.loads(msg.data)
            except (ValueError, RecursionError):  # malformed, too deep, or an integer of 4300+ digits
                data = None
            if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                await self._send_json(_error_event(bad_field(
                    "type", "each message is a JSON object with a \"type\": start, text, end or cancel", "invalid_message")))
                continue
            return data

    async def _handle(self, data: dict[str, Any]) -> None:
        kind, u = data["type"], self.utterance
        if kind == "start":
            await self._start(data)
            return
        if kind not in ("text", "end", "cancel"):
            raise bad_field("type", f"unknown message type {kind[:32]!r}: start, text, end or cancel", "invalid_message")
        if u is None or u.task is None or u.task.done():
            raise bad_field("type", f"'{kind}' needs an utterance: send start first", "no_utterance")
        if kind == "cancel":
            u.stream.cancel()
        elif u.text_ended:
            raise bad_field("type", f"'{kind}' after end: start a new utterance", "text_ended")
        elif kind == "end":
            u.text_ended = True
            u.stream.end_text()
        else:
            text = data.get("text")
            if not isinstance(text, str):
                raise bad_field("text", "'text' must be a string", "invalid_type")
            if u.first_text_at is None and text.strip():
                u.first_text_at = time.monotonic()
            try:
                u.stream.push_text(text)
            except InvalidTextError as exc:  # over the engine's max_text_chars: the utterance fails ("done": error)
                raise bad_field("text", f"{exc}", "input_too_long") from None

    async def _start(self, data: dict[str, Any]) -> None:
        u = self.utterance
        if u is not None and u.task is not None and not u.task.done():
            raise bad_field("type", "an utterance is in progress: send end (and wait for done) or cancel first",
                            "utterance_in_progress")
        unknown = sorted(set(data) - set(START_FIELDS))
        if unknown:
            raise bad_field(unknown[0], f"unknown start field(s) {', '.join(unknown)}; accepted: "
                                        f"{', '.join(START_FIELDS[1:])}", "unknown_parameter")
        if data.get("model") is not None:
            check_model(data, self.service.cfg)
        if data.get("response_format") not in (None, "pcm"):
            raise bad_field("response_format", "the WebSocket sends pcm only (s16le, 24 kHz, mono); use "
                                               "POST /v1/audio/speech for encoded formats", "unsupported_format")
        timestamps = data.get("timestamps", "word")
        if timestamps not in TIMESTAMP_CHOICES:
            raise bad_field("timestamps", f"'timestamps' must be one of {', '.join(TIMESTAMP_CHOICES)}; "
                                          f"got {str(timestamps)[:64]!r}")
        voice, language = voice_and_language(data, self.service.catalog, self.service.cfg)
        stream = self.service.open_stream(voice, language)
        self.service.track(stream)
        self.count += 1
        try:
            chain = AudioChain("pcm", self.service.engine.config.output_sample_rate)
            observer = observer_for(stream, timestamps, "word")
        except BaseException:
            self.service.untrack(stream, "ws", "error")
            raise
        u = self.utterance = _Utterance(self.count, stream, chain, observer)
        await self._send_json({"type": "started", "utterance": u.number, "format": "pcm_s16le",
                               "sample_rate": OUTPUT_RATE, "channels": 1})
        u.task = asyncio.create_task(self._pump(u))

    async def _pump(self, u: _Utterance) -> None:
        reason = "error"
        try:
            pending: list[np.ndarray] = []
            async for packet in u.stream:
                pending.append(packet.pcm)
                if (packet.seq + 1) % PACKETS_PER_FRAME == 0:
                    await self._send_frame(u, np.concatenate(pending))
                    pending.clear()
            if pending:
                await self._send_frame(u, np.concatenate(pending))
            for event in u.observer.on_frame(u.frames):  # the audio ended: its last word is final now
                await self._send_json(event)
            reason = "cancelled" if u.stream.cancelled else u.stream.stats.finish_reason or "eos"
        except StreamError as exc:
            code = "input_too_long" if isinstance(exc.__cause__, InvalidTextError) else "stream_failed"
            log.info("ws utterance %d failed: %s", u.number, exc)
            await self._send_json(_error_event(ApiError(400 if code == "input_too_long" else 500, str(exc), code)))
        except ConnectionResetError:
            reason = "client_gone"
            return
        except TimeoutError:
            reason = "write_timeout"
            await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"no audio taken for too long")
            return
        except Exception:  # a bug here must not pass silently in a task nobody awaits
            await self._send_json(_server_fault(f"ws utterance {u.number}"))
        finally:
            self.service.untrack(u.stream, "ws", reason)
            self.service.metrics.audio.labels("ws").inc(u.chain.seconds_out)
        await self._send_json({"type": "done", "utterance": u.number, "reason": reason, "frames": u.frames,
                               "audio_seconds": round(u.chain.seconds_out, 3),
                               "ttfa_ms": None if u.ttfa_ms is None else round(u.ttfa_ms, 1), **u.observer.on_done()})

    async def _send_frame(self, u: _Utterance, pcm: np.ndarray) -> None:
        data = u.chain.push(pcm)
        async with self._send_lock, asyncio.timeout(self.service.cfg.write_timeout_s):
            await self.ws.send_bytes(data)
        u.frames += 1
        if u.ttfa_ms is None:
            now = time.monotonic()
            u.ttfa_ms = 1000 * (now - (u.first_text_at or now))
            self.service.metrics.ttfa.labels("ws").observe(u.ttfa_ms / 1000)
        for event in u.observer.on_frame(u.frames):
            await self._send_json(event)

    async def _send_json(self, event: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        try:
            async with self._send_lock, asyncio.timeout(self.service.cfg.write_timeout_s):
                await self.ws.send_json(event)
        except (ConnectionResetError, TimeoutError):
            pass  # the peer is gone; the receive loop sees the close and stops the utterance

    async def _stop(self) -> None:
        u = self.utterance
        if u is None:
            return
        u.stream.cancel()  # the slot is free now, before the pump task notices
        if u.task is None:  # stopped while "started" was being sent: no pump owns the stream yet
            self.service.untrack(u.stream, "ws", "cancelled")
            return
        u.task.cancel()
        await asyncio.gather(u.task, return_exceptions=True)


def _server_fault(what: str) -> dict[str, Any]:
    """Log the exception being handled with a request id; the client's error event names only the id."""
    request_id = secrets.token_hex(6)
    log.exception("%s failed unexpectedly (request id %s)", what, request_id)
    return {"type": "error", **error_body(500, f"unexpected server error (request id {request_id})", "internal_error")}


def _error_event(exc: ApiError) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "error", **exc.body()}
    if "Retry-After" in exc.headers:
        event["retry_after"] = int(exc.headers["Retry-After"])
    return event
