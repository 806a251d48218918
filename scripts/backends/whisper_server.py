"""A small OpenAI-compatible transcription server over faster-whisper (the CPU stand-in for STT).

    .venv-backends/bin/python scripts/backends/whisper_server.py --host 127.0.0.1 --port 8092

POST /v1/audio/transcriptions  multipart: file (any format PyAV decodes), model (any: one model is
                               served), language, prompt, temperature, response_format
                               (json | text | verbose_json)  ->  {"text": "..."}
GET  /v1/models, GET /health   health answers 200 only after the model has loaded.

Runs in .venv-backends (scripts/backends/install.sh), never in the project venv: faster-whisper
and ctranslate2 are not project dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio

logger = logging.getLogger("whisper_server")

SAMPLE_RATE = 16000
MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's own limit for this endpoint
RESPONSE_FORMATS = ("json", "text", "verbose_json")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / ".venv-backends" / "models" / "whisper-base"


class BadRequest(Exception):
    """A client error: answered 400 with OpenAI's error shape."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def error_response(status: int, message: str, param: str | None = None) -> web.Response:
    err_type = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": err_type, "param": param, "code": None}}
    return web.json_response(body, status=status)


@dataclass(frozen=True)
class Request:
    audio: bytes
    language: str | None
    prompt: str | None
    temperature: float
    response_format: str


@dataclass(frozen=True)
class Result:
    text: str
    language: str
    duration_s: float
    segments: list[dict[str, Any]]


class Transcriber:
    """Owns the model. Work runs in a worker thread, one request at a time: ctranslate2 already
    uses every thread it is given, so two at once would only make both slower (2 cores here)."""

    def __init__(self, model_dir: Path, threads: int, model_name: str) -> None:
        t0 = time.perf_counter()
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)
        self.model_name = model_name
        self.languages = frozenset(self.model.supported_languages)
        self._lock = asyncio.Lock()
        logger.info("loaded %s from %s in %.2f s (%d threads)", model_name, model_dir,
                    time.perf_counter() - t0, threads)

    async def transcribe(self, req: Request) -> Result:
        if req.language is not None and req.language not in self.languages:
            raise BadRequest(f"unsupported language {req.language!r} (ISO-639-1 codes such as 'en')",
                             "language")
        async with self._lock:
            # never on the event loop: a transcription takes ~1 s and health checks must still answer
            return await asyncio.to_thread(self._run, req)

    def _run(self, req: Request) -> Result:
        try:
            audio: np.ndarray = decode_audio(io.BytesIO(req.audio), sampling_rate=SAMPLE_RATE)
        except Exception as exc:  # PyAV raises many types for bad input; all mean "not audio"
            raise BadRequest(f"could not decode the uploaded file as audio: {exc}", "file") from exc
        duration_s = len(audio) / SAMPLE_RATE
        if duration_s == 0:
            raise BadRequest("the uploaded audio is empty", "file")
        t0 = time.perf_counter()
        segments, info = self.model.transcribe(
            audio, language=req.language, initial_prompt=req.prompt, temperature=req.temperature,
            beam_size=1, without_timestamps=True,
        )
        segs = [{"id": s.id, "start": s.start, "end": s.end, "text": s.text} for s in segments]  # runs here
        elapsed = time.perf_counter() - t0
        rtf = elapsed / duration_s
        log = logger.warning if rtf > 1.0 else logger.info
        log("transcribed %.2f s of audio in %.2f s (RTF %.2f%s)", duration_s, elapsed, rtf,
            ", slower than real time" if rtf > 1.0 else "")
        text = "".join(s["text"] for s in segs).strip()
        return Result(text=text, language=info.language, duration_s=duration_s, segments=segs)


async def parse_request(request: web.Request) -> Request:
    if not request.content_type.startswith("multipart/form-data"):
        raise BadRequest(f"expected multipart/form-data, got {request.content_type or 'no body'}")
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise
    except Exception as exc:  # a malformed multipart body, an unknown charset, an undecodable encoding
        raise BadRequest(f"malformed multipart body: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        raise BadRequest("missing the 'file' field (an audio file upload)", "file")
    audio = upload.file.read()
    if not audio:
        raise BadRequest("the uploaded file is empty", "file")

    def text_field(name: str) -> str | None:
        value = form.get(name)
        return (value.strip() or None) if isinstance(value, str) else None

    fmt = text_field("response_format") or "json"
    if fmt not in RESPONSE_FORMATS:
        raise BadRequest(f"response_format must be one of {RESPONSE_FORMATS}, got {fmt!r}", "response_format")
    raw_temp = text_field("temperature")
    try:
        temperature = float(raw_temp) if raw_temp is not None else 0.0
    except ValueError as exc:
        raise BadRequest(f"temperature must be a number, got {raw_temp!r}", "temperature") from exc
    if not 0.0 <= temperature <= 1.0:
        raise BadRequest(f"temperature must be in [0, 1], got {temperature}", "temperature")
    language = text_field("language")
    return Request(audio=audio, language=language.lower() if language else None, prompt=text_field("prompt"),
                   temperature=temperature, response_format=fmt)


TRANSCRIBER = web.AppKey("transcriber", Transcriber)


async def transcriptions(request: web.Request) -> web.StreamResponse:
    transcriber = request.app[TRANSCRIBER]
    try:
        req = await parse_request(request)
        result = await transcriber.transcribe(req)
    except BadRequest as exc:
        logger.info("400: %s", exc)
        return error_response(400, str(exc), exc.param)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, f"file too large (limit {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB)", "file")
    if req.response_format == "text":
        return web.Response(text=result.text + "\n", content_type="text/plain")
    if req.response_format == "verbose_json":
        return web.json_response({"task": "transcribe", "language": result.language,
                                  "duration": result.duration_s, "text": result.text,
                                  "segments": result.segments})
    return web.json_response({"text": result.text})


async def models(request: web.Request) -> web.Response:
    name = request.app[TRANSCRIBER].model_name
    return web.json_response({"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "faster-whisper"}]})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "model": request.app[TRANSCRIBER].model_name})


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    # OpenAI clients parse {"error": {...}}; aiohttp's own 404/405 pages are plain text.
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)
    except (asyncio.CancelledError, ConnectionResetError):
        raise  # the client went away: nobody to answer
    except Exception:
        request_id = secrets.token_hex(6)
        logger.exception("request %s %s %s failed unexpectedly", request_id, request.method, request.path)
        return error_response(500, f"internal error (request id {request_id}; the whisper server's log has it)")


def make_app(transcriber: Transcriber) -> web.Application:
    app = web.Application(client_max_size=MAX_UPLOAD_BYTES, middlewares=[json_errors])
    app[TRANSCRIBER] = transcriber
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/healthz", health)  # the name every service of this project answers on
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                        help="a CTranslate2 Whisper directory (default: %(default)s)")
    parser.add_argument("--model-name", default="whisper-base", help="the id /v1/models reports")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for one transcription")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not (args.model_dir / "model.bin").is_file():
        parser.error(f"no model.bin in {args.model_dir}: run scripts/backends/install.sh first")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    # Loaded before the port opens, so /health answering means the model is ready.
    transcriber = Transcriber(args.model_dir, args.threads, args.model_name)
    # keepalive_timeout: also the deadline for a request's headers (aiohttp arms it at connect)
    web.run_app(make_app(transcriber), host=args.host, port=args.port, print=None, keepalive_timeout=15)


if __name__ == "__main__":
    main()
