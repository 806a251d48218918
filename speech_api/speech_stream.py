"""One `POST /v1/audio/speech` response: engine packets -> encoder -> chunked body or SSE events.

The status line waits for the stream's first packet, so a stream that fails before any audio still
gets its proper status (400 nothing speakable, 503 engine stopped, 500 anything else); from then on
each 80 ms codec frame is encoded and written the moment its four packets arrive. After the headers
a failure can only cut the body: `stream_format=audio` aborts the connection (the chunked body never
ends, so no client mistakes it for complete audio), `sse` sends an `error` event, as OpenAI's streams
do, which OpenAI's client raises as APIError.

A client that goes away is an ordinary end, never an error, and the handler's `finally` cancels its
stream, which frees the engine slot. Served with aiohttp's handler_cancellation (BackgroundServer,
`python -m speech_api`), the disconnect cancels the handler at once. In a server without it, the
next write raises aiohttp's ClientConnectionResetError (a ConnectionResetError): at the status line
(after the first packet) or at the next 80 ms frame; before the status line the error reaches the
app's middleware, which answers nobody (the `client_gone` status, 499, is only counted).

SSE events (OpenAI's): `data: {"type": "speech.audio.delta", "audio": "<base64 of response_format
bytes>"}` per chunk, then `data: {"type": "speech.audio.done", "usage": {"input_tokens": text tokens,
"output_tokens": codec frames, "total_tokens": sum}}`; no `event:` lines and no `[DONE]`. With
`"timestamps": "word"` (ours), `{"type": "speech.audio.word", "word", "start_s", "end_s"}` follows the
delta that carried the word's end (timestamps.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from tts_engine import AudioPacket, EngineClosed, InvalidTextError, StreamError, TTSStream
from tts_engine.frames import PACKETS_PER_FRAME  # each 80 ms codec frame arrives as 4 packets at once

from .audio import AudioChain
from .errors import ApiError, engine_unavailable, error_body
from .request import SpeechRequest
from .timestamps import observer_for

if TYPE_CHECKING:
    from .app import SpeechService

log = logging.getLogger(__name__)


def first_packet_error(exc: StreamError) -> ApiError | None:
    """A stream that failed before any audio: what the client gets, or None for a server fault (500)."""
    cause = exc.__cause__
    if isinstance(cause, InvalidTextError):
        return ApiError(400, f"'input' cannot be spoken: {cause}", "empty_input", "input")
    if isinstance(cause, EngineClosed):
        return engine_unavailable("the TTS engine stopped; the service is restarting")
    return None


def text_tokens(service: SpeechService, text: str) -> int:
    # the engine drops lone surrogates before tokenizing; so does this count
    return len(service.engine.text_tokenizer.encode(text.encode("utf-8", "ignore").decode("utf-8")))


class _AudioBody:
    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.request, self.response = request, response

    async def audio(self, data: bytes) -> None:
        await self.response.write(data)

    async def events(self, events: list[dict[str, Any]]) -> None:
        pass  # raw audio carries no events

    async def done(self, usage: Callable[[], dict[str, int]]) -> None:
        pass  # raw audio just ends

    async def fail(self, _error: dict[str, Any]) -> None:
        self.abort()

    def abort(self) -> None:
        """Drop the connection: the chunked body never ends, so no client takes it for complete."""
        if self.request.transport is not None:
            self.request.transport.abort()


class _SseBody(_AudioBody):
    async def audio(self, data: bytes) -> None:
        await self._event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})

    async def done(self, usage: Callable[[], dict[str, int]]) -> None:
        # counting the input's tokens takes the tokenizer lock the engine thread also takes: off the loop
        await self._event({"type": "speech.audio.done", "usage": await asyncio.to_thread(usage)})

    async def fail(self, error: dict[str, Any]) -> None:
        await self._event({"type": "error", **error})

    async def events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            await self._event(event)

    async def _event(self, event: dict[str, Any]) -> None:
        await self.response.write(b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")


class SpeechStreamer:
    def __init__(self, service: SpeechService, request: web.Request, req: SpeechRequest, stream: TTSStream,
                 request_id: str, started: float) -> None:
        self.service, self.request, self.req, self.stream = service, request, req, stream
        self.request_id, self.started = request_id, started
        self.chain: AudioChain | None = None
        self._first_audio_at: float | None = None
        self.words = observer_for(stream, req.timestamps, "speech.audio.word", req.speed)
        self.frames_sent = 0

    async def run(self) -> web.StreamResponse:
        end = "error"
        self.service.track(self.stream)
        try:
            self.chain = AudioChain(self.req.response_format, self.service.engine.config.output_sample_rate,
                                    self.req.speed)
            try:
                self.stream.push_text(self.req.input)
            except InvalidTextError as exc:
                raise ApiError(400, f"'input' cannot be spoken: {exc}", "input_too_long", "input") from None
            self.stream.end_text()
            first = await self._first_packet()
            try:
                response = await self._prepare(self.chain)
            except ConnectionResetError:  # gone before the status line: the middleware answers nobody
                end = "client_gone"
                raise
            end = await self._pump(response, first, self.chain)
            return response
        except asyncio.CancelledError:  # served with handler_cancellation: the client disconnected
            end = "client_gone"
            raise
        finally:
            if self.chain is not None:
                self.chain.close()
            self.service.untrack(self.stream, "speech", end)

    async def _first_packet(self) -> AudioPacket | None:
        try:
            packet = await anext(self.stream, None)
        except StreamError as exc:
            error = first_packet_error(exc)
            if error is None:
                raise  # the unexpected-error middleware logs it and answers 500 with a request id
            raise error from None
        if packet is None and self.stream.cancelled:  # only the server cancels: it is shutting down
            raise engine_unavailable("the service is shutting down")
        return packet

    async def _prepare(self, chain: AudioChain) -> web.StreamResponse:
        sse = self.req.stream_format == "sse"
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream" if sse else chain.content_type,
            "Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Request-Id": self.request_id})
        await response.prepare(self.request)
        return response

    async def _pump(self, response: web.StreamResponse, packet: AudioPacket | None, chain: AudioChain) -> str:
        """Write the audio; return why the stream ended (the stream_ends metric's reason)."""
        body = (_SseBody if self.req.stream_format == "sse" else _AudioBody)(self.request, response)
        pending: list[np.ndarray] = []
        try:
            while packet is not None:
                pending.append(packet.pcm)
                if (packet.seq + 1) % PACKETS_PER_FRAME == 0:
                    await self._send(body, chain.push(np.concatenate(pending)))
                    pending.clear()
                    self.frames_sent += 1
                    await self._words(body)
                packet = await anext(self.stream, None)
            if self.stream.cancelled:  # the server is shutting down: cut audio must not look complete
                await self._cut(body, error_body(503, "the service is shutting down", "engine_unavailable"))
                return "cancelled"
            tail = chain.push(np.concatenate(pending)) if pending else b""
            await self._send(body, tail + chain.finish())
            await self._words(body)  # the audio ended: its last word is final now
            async with asyncio.timeout(self.service.cfg.write_timeout_s):
                await body.done(self._usage)
                await response.write_eof()
            return self.stream.stats.finish_reason or "eos"
        except StreamError as exc:
            log.error("speech %s: the engine stream failed after audio began: %s", self.request_id, exc)
            await self._cut(body, error_body(500, f"synthesis failed mid-stream (request id {self.request_id})",
                                             "stream_failed"))
            return "error"
        except TimeoutError:
            log.info("speech %s: the client took no audio for %.0f s; stream cancelled", self.request_id,
                     self.service.cfg.write_timeout_s)
            body.abort()
            return "write_timeout"
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError: the client went away
            return "client_gone"
        except Exception:  # after the status line no 500 can be sent: log, and cut the body visibly
            log.exception("speech %s failed unexpectedly after audio began", self.request_id)
            await self._cut(body, error_body(500, f"unexpected server error (request id {self.request_id})",
                                             "internal_error"))
            return "error"
        finally:
            self.service.metrics.audio.labels("speech").inc(chain.seconds_out)

    async def _cut(self, body: _AudioBody, error: dict[str, Any]) -> None:
        """End a body that cannot complete. The client may be gone or stalled too: then drop it."""
        try:
            async with asyncio.timeout(self.service.cfg.write_timeout_s):
                await body.fail(error)
        except (ConnectionResetError, TimeoutError):
            body.abort()

    async def _send(self, body: _AudioBody, data: bytes) -> None:
        if not data:
            return  # an encoder still filling its first block (aac, flac, atempo) has nothing yet
        async with asyncio.timeout(self.service.cfg.write_timeout_s):
            await body.audio(data)
        if self._first_audio_at is None:
            self._first_audio_at = time.monotonic()
            self.service.metrics.ttfa.labels("speech").observe(self._first_audio_at - self.started)

    async def _words(self, body: _AudioBody) -> None:
        events = self.words.on_frame(self.frames_sent)
        if events:
            async with asyncio.timeout(self.service.cfg.write_timeout_s):
                await body.events(events)

    def _usage(self) -> dict[str, int]:
        inputs, outputs = text_tokens(self.service, self.req.input), self.stream.stats.frames
        return {"input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs}
