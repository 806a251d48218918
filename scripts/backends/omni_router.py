"""One OpenAI-compatible base URL in front of the two CPU stand-in servers.

The agent talks to a single "Omni" base URL for both STT and the LLM; on a CPU those are two
servers (scripts/backends/whisper_server.py and llama.cpp's server), so this reverse proxy routes:

    POST /v1/audio/transcriptions          -> --stt (the whisper server)
    POST /v1/chat/completions, /v1/completions, GET /v1/models -> --llm (llama.cpp)
    GET  /health                           200 only when both upstreams answer

    python scripts/backends/omni_router.py --port 8091 --stt http://127.0.0.1:8092 --llm http://127.0.0.1:8093

Responses are relayed chunk by chunk as they arrive (SSE is never buffered: the agent measures the
LLM's first-token latency through here), and a client that goes away closes its upstream request,
so llama.cpp stops generating on barge-in. Needs only aiohttp: runs in either venv.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

logger = logging.getLogger("omni_router")

MAX_BODY_BYTES = 32 * 1024 * 1024  # above the whisper server's 25 MiB upload limit
# Hop-by-hop headers (RFC 9110 7.6.1) plus the ones aiohttp recomputes for the new connection.
_DROP_REQUEST = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                           "trailer", "transfer-encoding", "upgrade", "host", "content-length"})
_DROP_RESPONSE = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                            "trailer", "transfer-encoding", "upgrade"})


@dataclass(frozen=True)
class Upstreams:
    stt: str  # root URLs without /v1, e.g. http://127.0.0.1:8092
    llm: str
    health_paths: tuple[str, str] = ("/health", "/v1/models")  # llama-cpp-python has no /health


# (method, path) -> which upstream serves it
ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/v1/audio/transcriptions"): "stt",
    ("POST", "/v1/chat/completions"): "llm",
    ("POST", "/v1/completions"): "llm",
    ("GET", "/v1/models"): "llm",
}

UPSTREAMS = web.AppKey("upstreams", Upstreams)
SESSION = web.AppKey("session", aiohttp.ClientSession)


def root_url(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def error_response(status: int, message: str) -> web.Response:
    err_type = "invalid_request_error" if status < 500 else "upstream_error"
    return web.json_response({"error": {"message": message, "type": err_type, "param": None, "code": None}},
                             status=status)


async def proxy(request: web.Request) -> web.StreamResponse:
    which = ROUTES.get((request.method, request.path))
    if which is None:
        return error_response(404, f"no route for {request.method} {request.path} "
                                   f"(served: {', '.join(f'{m} {p}' for m, p in ROUTES)})")
    base = getattr(request.app[UPSTREAMS], which)
    url = base + request.path_qs
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    body = await request.read()  # small (a JSON request or one utterance): read whole, then send
    t0 = time.perf_counter()
    resp: web.StreamResponse | None = None
    chunks = 0
    try:
        async with request.app[SESSION].request(request.method, url, headers=headers, data=body) as upstream:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _DROP_RESPONSE:
                    resp.headers.add(k, v)
            await resp.prepare(request)
            # iter_any yields whatever bytes arrived, at once: no line or size buffering
            async for chunk in upstream.content.iter_any():
                if chunks == 0:
                    logger.debug("%s %s: first bytes after %.0f ms", request.method, request.path,
                                 (time.perf_counter() - t0) * 1000)
                chunks += 1
                await resp.write(chunk)
            await resp.write_eof()
    except asyncio.CancelledError:
        # The client went away (handler_cancellation): leaving the `async with` closed the upstream
        # connection mid-response, which is what stops llama.cpp generating on barge-in.
        logger.info("%s %s: client disconnected after %d chunks; upstream request closed",
                    request.method, request.path, chunks)
        raise
    except (aiohttp.ClientError, TimeoutError, ConnectionResetError) as exc:
        if request.transport is None or request.transport.is_closing():
            # The same, noticed by a write to the client's closed socket (aiohttp raises a
            # ConnectionResetError there); the upstream is closed by now as well.
            logger.info("%s %s: client disconnected after %d chunks; upstream request closed",
                        request.method, request.path, chunks)
            return resp or web.Response(status=499)
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if resp is None or not resp.prepared:
            status = 504 if isinstance(exc, TimeoutError) else 502
            logger.warning("%s %s -> %s failed: %s", request.method, request.path, which, reason)
            return error_response(status, f"the {which} upstream {base} failed: {reason}")
        # Headers already went out: the only honest signal left is to cut the connection, so the
        # client sees a truncated stream rather than a clean end.
        logger.warning("%s %s: upstream failed mid-response after %d chunks: %s",
                       request.method, request.path, chunks, reason)
        request.transport.close()
        return resp
    logger.info("%s %s -> %s %d, %d chunks in %.0f ms", request.method, request.path, which,
                resp.status, chunks, (time.perf_counter() - t0) * 1000)
    return resp


async def check(session: aiohttp.ClientSession, url: str) -> str | None:
    """None when healthy, else why not."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as r:
            return None if r.status == 200 else f"HTTP {r.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def health(request: web.Request) -> web.Response:
    up = request.app[UPSTREAMS]
    session = request.app[SESSION]
    stt_url, llm_url = up.stt + up.health_paths[0], up.llm + up.health_paths[1]
    stt_err, llm_err = await asyncio.gather(check(session, stt_url), check(session, llm_url))
    detail = {"stt": {"url": stt_url, "ok": stt_err is None, "error": stt_err},
              "llm": {"url": llm_url, "ok": llm_err is None, "error": llm_err}}
    ok = stt_err is None and llm_err is None
    return web.json_response({"status": "ok" if ok else "unhealthy", "upstreams": detail},
                             status=200 if ok else 503)


def make_app(upstreams: Upstreams, read_timeout_s: float = 300.0) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[UPSTREAMS] = upstreams

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        # total=None: a streamed reply may run long; sock_read bounds a silent upstream instead.
        # auto_decompress=False: bytes are relayed exactly as sent, Content-Encoding included.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=read_timeout_s)
        app[SESSION] = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/health", health)
    app.router.add_get("/healthz", health)  # the name every service of this project answers on
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--stt", required=True, help="the transcription server, e.g. http://127.0.0.1:8092")
    parser.add_argument("--llm", required=True, help="the chat server, e.g. http://127.0.0.1:8093")
    parser.add_argument("--read-timeout", type=float, default=300.0,
                        help="longest silence from an upstream, seconds (default: %(default)s)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("stt", "llm"):
        if not getattr(args, name).startswith(("http://", "https://")):
            parser.error(f"--{name} must be an http(s) URL, got {getattr(args, name)!r}")
    upstreams = Upstreams(stt=root_url(args.stt), llm=root_url(args.llm))
    logger.info("routing STT -> %s, LLM -> %s", upstreams.stt, upstreams.llm)
    # handler_cancellation: a client disconnect cancels its handler at once, even while the
    # upstream is silent (prompt processing), instead of at the next write.
    web.run_app(make_app(upstreams, args.read_timeout), host=args.host, port=args.port,
                handler_cancellation=True, print=None)


if __name__ == "__main__":
    main()
