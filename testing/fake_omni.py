"""A protocol-faithful fake of vLLM-Omni's OpenAI-compatible server, for tests and benchmarks only.

Speaks what the real server speaks: SSE `data: {json}\\n\\n` lines of `chat.completion.chunk`
objects with a top-level `"modality"`, a first delta `{"role": "assistant", "content": ""}`, one
delta per word, a `finish_reason: "stop"` chunk, an optional usage chunk, then `data: [DONE]`.
A chat request whose last user message carries audio (an `audio_url` data URI or `input_audio`)
is answered as a transcription, the way Qwen3-Omni is used as an STT.

Fault injection (`fail_next(kind)`) applies to the next POST request(s):
  "status_500"             answer 500 with an OpenAI-style error JSON;
  "timeout"                sleep `timeout_sleep_s` before answering (past the client's timeout);
  "disconnect_mid_stream"  send the role chunk and two words, then abort the TCP connection.
A refused connection is not injected: `await fake.stop()` and keep using the old base_url.

`fault_every(n)` makes every n-th turn (counted by transcription requests: one per turn) a faulty
one, cycling through FAULT_CYCLE: the STT answers 500, the STT hangs past the client's timeout,
the LLM stream is cut mid-reply, the LLM answers 500 (which the framework retries).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import threading
import time
import uuid
import wave
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

FAULT_KINDS = ("status_500", "timeout", "disconnect_mid_stream")
# (kind, count, target) per faulty turn, in turn
FAULT_CYCLE: tuple[tuple[str, int, str], ...] = (("status_500", 1, "stt"), ("timeout", 1, "stt"),
                                                 ("disconnect_mid_stream", 1, "llm"), ("status_500", 1, "llm"))
DEFAULT_MODEL = "Qwen/Qwen3-Omni-30B-A3B-Instruct"
TranscriptSource = Sequence[str] | Callable[[bytes], str]
_ABORT = web.RequestKey("fake_omni_abort", bool)  # this request carries the disconnect_mid_stream fault


def echo_reply(messages: list[dict[str, Any]]) -> str:
    user = [m for m in messages if m.get("role") == "user"]
    said = _text_of(user[-1].get("content")) if user else ""
    return f"You said: {said.strip()}. Tell me more." if said.strip() else "I did not catch that."


def silent_wav(seconds: float = 0.1, sample_rate: int = 24000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(b"\0\0" * int(seconds * sample_rate))
    return buf.getvalue()


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _error(status: int, message: str, kind: str = "BadRequestError") -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status)


class _BadRequest(Exception):
    pass


class FakeOmni:
    def __init__(
        self,
        transcripts: TranscriptSource = (),
        reply: Callable[[list[dict[str, Any]]], str] = echo_reply,
        *,
        stt_latency_s: float = 0.0,
        llm_first_token_latency_s: float = 0.0,
        llm_token_interval_s: float = 0.0,
        emit_audio_modality_chunks: bool = True,
        models: Sequence[str] = (DEFAULT_MODEL,),
        timeout_sleep_s: float = 30.0,
    ) -> None:
        self._transcripts = transcripts if callable(transcripts) else list(transcripts)
        self._reply = reply
        self.stt_latency_s = stt_latency_s
        self.llm_first_token_latency_s = llm_first_token_latency_s
        self.llm_token_interval_s = llm_token_interval_s
        self.emit_audio_modality_chunks = emit_audio_modality_chunks
        self.models = tuple(models)
        self.timeout_sleep_s = timeout_sleep_s
        # Every request: {"path", "json" (None for multipart/bad JSON), "form", "audio" (WAV bytes), "time"}.
        self.requests: list[dict[str, Any]] = []
        self.streams_opened = 0
        self.streams_completed = 0  # reached data: [DONE]
        self.open_streams = 0
        self.disconnects = 0  # the client went away before the stream completed
        self.disconnect_times: list[float] = []  # time.monotonic() of each
        self.aborts = 0  # connections cut by the "disconnect_mid_stream" fault
        self._faults: list[tuple[str, str]] = []  # (kind, target)
        self._fault_every = 0  # fault_every(n): every n-th turn is faulty; 0 = off
        self._stt_requests = 0
        self.faulty_turns = 0
        self._next_transcript = 0
        self._disconnected: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle and control

    async def start(self, port: int = 0) -> str:
        """Bind 127.0.0.1 (on a free port unless given); returns the OpenAI base URL (".../v1")."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        # handler_cancellation: a client disconnect cancels the handler at once, which is how
        # the fake notices a closed stream even while it sleeps between tokens.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = self._runner.addresses[0][1]
        self._disconnected = asyncio.Condition()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def fail_next(self, kind: str, count: int = 1, target: str = "any") -> None:
        """Fail the next `count` requests of `target` ("any", "stt": audio in, "llm": text only)."""
        if kind == "refuse":
            raise ValueError("'refuse' is not injected: await fake.stop() and keep the old base_url")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {FAULT_KINDS}")
        if target not in ("any", "stt", "llm"):
            raise ValueError("target must be 'any', 'stt' or 'llm'")
        self._faults.extend([(kind, target)] * count)

    def fault_every(self, n: int) -> None:
        """Make every n-th turn from now on faulty (FAULT_CYCLE), counting them in `faulty_turns` from 0;
        0 turns it off and keeps the count, so a test can switch faults off before it reads how many fell."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self._fault_every, self._stt_requests = n, 0
        if n:
            self.faulty_turns = 0
        self._faults.clear()

    def _scheduled_fault(self, is_stt: bool) -> None:
        """A new turn (its first transcription request) may be one of the faulty ones."""
        if not is_stt or not self._fault_every or any(target == "stt" for _k, target in self._faults):
            return  # a retry of a faulty turn's STT is part of that turn
        self._stt_requests += 1
        if self._stt_requests % self._fault_every == 0:
            kind, count, target = FAULT_CYCLE[self.faulty_turns % len(FAULT_CYCLE)]
            self.faulty_turns += 1
            self._faults.extend([(kind, target)] * count)

    async def wait_for_disconnects(self, n: int = 1, timeout: float = 1.0) -> float:
        """Wait until `n` client disconnects were seen; returns the time of the n-th."""
        assert self._disconnected is not None, "start() first"
        async with self._disconnected:
            await asyncio.wait_for(self._disconnected.wait_for(lambda: self.disconnects >= n), timeout)
        return self.disconnect_times[n - 1]

    # ---------------------------------------------------------------------------- endpoints

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _models(self, _: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "vllm"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        rec = self._record(request)
        form = await request.post()
        rec["form"] = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return _error(400, "multipart field 'file' is required")
        rec["audio"] = upload.file.read()
        if not form.get("model"):
            return _error(400, "field 'model' is required")
        if (fault := await self._apply_fault(request, is_stt=True)) is not None:
            return fault
        try:
            text = await self._transcribe(rec["audio"])
        except _BadRequest as e:
            return _error(400, str(e))
        if request.get(_ABORT):
            return self._abort(request)
        return web.json_response({"text": text})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        rec = self._record(request)
        try:
            body = json.loads(await request.read())
        except ValueError as e:
            return _error(400, f"Invalid JSON body: {e}")
        rec["json"] = body
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty list")
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            return _error(400, "every message needs a string 'role'")
        if body.get("model") not in (None, *self.models):
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        try:
            rec["audio"] = _find_audio(messages)
        except _BadRequest as e:
            return _error(400, str(e))
        if (fault := await self._apply_fault(request, is_stt=rec["audio"] is not None)) is not None:
            return fault
        try:
            text = await self._transcribe(rec["audio"]) if rec["audio"] is not None else self._reply(messages)
        except _BadRequest as e:
            return _error(400, str(e))
        model = body.get("model") or self.models[0]
        if not body.get("stream"):
            if request.get(_ABORT):
                return self._abort(request)
            return web.json_response(_completion(model, text, messages))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(request, model, text, messages, include_usage)

    # ------------------------------------------------------------------------------ helpers

    def _record(self, request: web.Request) -> dict[str, Any]:
        rec: dict[str, Any] = {"path": request.path, "json": None, "form": {}, "audio": None,
                               "time": time.monotonic()}
        self.requests.append(rec)
        return rec

    async def _apply_fault(self, request: web.Request, is_stt: bool) -> web.Response | None:
        self._scheduled_fault(is_stt)
        kind = None
        for i, (fault_kind, target) in enumerate(self._faults):
            if target == "any" or (target == "stt") == is_stt:
                kind = fault_kind
                del self._faults[i]
                break
        if kind == "status_500":
            return _error(500, "injected fault: internal server error", "InternalServerError")
        if kind == "timeout":
            await asyncio.sleep(self.timeout_sleep_s)  # cancelled when the client gives up
        if kind == "disconnect_mid_stream":
            request[_ABORT] = True
        return None

    def _abort(self, request: web.Request, resp: web.StreamResponse | None = None) -> web.StreamResponse:
        self.aborts += 1
        assert request.transport is not None
        request.transport.abort()
        return resp if resp is not None else web.Response()

    async def _transcribe(self, wav: bytes) -> str:
        try:
            with wave.open(io.BytesIO(wav)) as w:
                w.getframerate()
        except (wave.Error, EOFError) as e:
            raise _BadRequest(f"audio is not a valid WAV file: {e}") from e
        await asyncio.sleep(self.stt_latency_s)
        if callable(self._transcripts):
            return self._transcripts(wav)
        if self._next_transcript >= len(self._transcripts):
            raise _BadRequest("FakeOmni: no transcript left for this audio request")
        self._next_transcript += 1
        return self._transcripts[self._next_transcript - 1]

    async def _stream(
        self, request: web.Request, model: str, text: str, messages: list[dict[str, Any]], include_usage: bool
    ) -> web.StreamResponse:
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:16]}", int(time.time())

        def sse(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
            choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
            chunk |= {"choices": choices if delta is not None else [], "modality": "text", **extra}
            return f"data: {json.dumps(chunk)}\n\n".encode()

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        self.streams_opened += 1
        self.open_streams += 1
        tokens = re.findall(r"\s*\S+", text)
        try:
            await resp.write(sse({"role": "assistant", "content": ""}))
            await asyncio.sleep(self.llm_first_token_latency_s)
            for i, tok in enumerate(tokens):
                if i:
                    await asyncio.sleep(self.llm_token_interval_s)
                await resp.write(sse({"content": tok}))
                if i == 0 and self.emit_audio_modality_chunks:
                    audio_b64 = base64.b64encode(silent_wav()).decode()
                    await resp.write(sse({"content": audio_b64}, modality="audio"))
                if i == min(1, len(tokens) - 1) and request.get(_ABORT):
                    return self._abort(request, resp)  # no terminating chunk: the body is cut short
            await resp.write(sse({}, finish="stop"))
            if include_usage:
                await resp.write(sse(None, usage=_usage(messages, len(tokens))))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            self.streams_completed += 1
            return resp
        except (asyncio.CancelledError, ConnectionResetError):
            if not request.get(_ABORT):
                await self._note_disconnect()
            raise
        finally:
            self.open_streams -= 1

    async def _note_disconnect(self) -> None:
        self.disconnects += 1
        self.disconnect_times.append(time.monotonic())
        assert self._disconnected is not None
        async with self._disconnected:
            self._disconnected.notify_all()


def _find_audio(messages: list[dict[str, Any]]) -> bytes | None:
    """Decoded WAV bytes of the last user message's audio part, or None when it has none."""
    user = [m for m in messages if m.get("role") == "user"]
    content = user[-1].get("content") if user else None
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "audio_url":
            url = (part.get("audio_url") or {}).get("url", "")
            prefix, sep, data = url.partition(";base64,")
            if not sep or not prefix.startswith("data:audio/"):
                raise _BadRequest("audio_url must be a data:audio/...;base64, URI")
            return _b64(data)
        if part.get("type") == "input_audio":
            return _b64((part.get("input_audio") or {}).get("data", ""))
    return None


def _b64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except ValueError as e:
        raise _BadRequest(f"audio is not valid base64: {e}") from e


def _usage(messages: list[dict[str, Any]], completion: int) -> dict[str, int]:
    prompt = sum(len(_text_of(m.get("content"))) for m in messages) // 4
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(model: str, text: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": _usage(messages, len(re.findall(r"\S+", text))),
    }


class FakeOmniThread:
    """A FakeOmni on its own event loop in a background thread, for sync tests and for servers in
    other processes (a worker, start_all's services) while the test's own loop is busy or absent."""

    def __init__(self, fake: FakeOmni) -> None:
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-omni", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.url = self.loop.run_until_complete(self.fake.start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.fake.stop())

    def __enter__(self) -> FakeOmniThread:
        self._thread.start()
        assert self._ready.wait(10), "the fake Omni server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the fake on its own, for benchmarks of the rest of the system (docs/benchmarks.md):

        .venv/bin/python -m testing.fake_omni --port 8091 &
        OMNI_BASE_URL=http://127.0.0.1:8091/v1 scripts/start_all.sh start

    It transcribes every utterance as the next of a few fixed sentences and answers each with --reply,
    at once (zero model time: what is left is the rest of the system); --token-interval-ms streams the
    transcript's and the reply's words that far apart instead, as a model decodes them."""
    import argparse
    import itertools

    ap = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8091)
    ap.add_argument("--reply", default="Sure thing.", help="the LLM's answer to every turn")
    ap.add_argument("--token-interval-ms", type=float, default=0.0,
                    help="pause between the streamed words of a transcript or a reply (0: all at once)")
    args = ap.parse_args(argv)
    sentences = itertools.cycle(("Tell me about the weather today.", "What time is it in Paris?",
                                 "Can you help me cook dinner?"))
    fake = FakeOmni(transcripts=lambda _wav: next(sentences), reply=lambda _messages: args.reply,
                    llm_token_interval_s=args.token_interval_ms / 1000)

    async def serve() -> None:
        print(f"fake Omni at {await fake.start(args.port)}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
