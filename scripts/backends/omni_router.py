"""One OpenAI-compatible base URL in front of the two CPU stand-in servers.

The agent talks to a single "Omni" base URL for both STT and the LLM; on a CPU those are two
servers (scripts/backends/whisper_server.py and llama.cpp's server), so this reverse proxy routes:

    POST /v1/audio/transcriptions          -> --stt (the whisper server)
    POST /v1/chat/completions, /v1/completions, GET /v1/models -> --llm (llama.cpp)
    GET  /health                           200 only when both upstreams answer
    GET  /metrics                          Prometheus text: requests in flight and queued, queue waits

    python scripts/backends/omni_router.py --port 8091 --stt http://127.0.0.1:8092 --llm http://127.0.0.1:8093

Responses are relayed chunk by chunk as they arrive (SSE is never buffered: the agent measures the
LLM's first-token latency through here), and a client that goes away closes its upstream request,
so llama.cpp stops generating on barge-in. Needs only aiohttp: runs in either venv.

Concurrent sessions: each upstream serves `--stt-parallel` / `--llm-parallel` requests at a time
(default 1: on two cores a second request at once only slows both, and llama-cpp-python's server
would interrupt the running stream for the new one). The rest wait here in arrival order, and
every response says how long it waited in an `X-Queue-Wait-Ms` header (the agent puts it in its
turn traces) and /metrics counts it. A client that gives up while queued leaves the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

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

QUEUE_WAIT_HEADER = "X-Queue-Wait-Ms"


class Gate:
    """At most `parallel` requests to one upstream at a time, first come first served, with the
    numbers /metrics shows."""

    def __init__(self, parallel: int) -> None:
        self.parallel = parallel
        self._slots = asyncio.Semaphore(parallel)  # asyncio's semaphore wakes waiters in FIFO order
        self.waiting = 0
        self.in_flight = 0
        self.requests = 0
        self.wait_seconds_total = 0.0
        self.max_wait_s = 0.0

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[float]:
        """Waits for a slot; yields the seconds waited."""
        t0 = time.perf_counter()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        waited = time.perf_counter() - t0
        self.requests += 1
        self.wait_seconds_total += waited
        self.max_wait_s = max(self.max_wait_s, waited)
        self.in_flight += 1
        try:
            yield waited
        finally:
            self.in_flight -= 1
            self._slots.release()


UPSTREAMS = web.AppKey("upstreams", Upstreams)
SESSION = web.AppKey("session", aiohttp.ClientSession)
GATES = web.AppKey("gates", dict)


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
    try:
        body = await request.read()  # small (a JSON request or one utterance): read whole, then send
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, f"request body too large (limit {MAX_BODY_BYTES} bytes)")
    except (aiohttp.ClientPayloadError, web.RequestPayloadError) as exc:
        return error_response(400, f"the request body cannot be read: {str(exc).splitlines()[0][:200]}")
    async with request.app[GATES][which].admit() as waited_s:
        return await relay(request, which, base, url, headers, body, waited_s)


async def relay(request: web.Request, which: str, base: str, url: str, headers: dict[str, str], body: bytes,
                waited_s: float) -> web.StreamResponse:
    t0 = time.perf_counter()
    resp: web.StreamResponse | None = None
    chunks = 0
    try:
        async with request.app[SESSION].request(request.method, url, headers=headers, data=body) as upstream:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _DROP_RESPONSE:
                    resp.headers.add(k, v)
            resp.headers[QUEUE_WAIT_HEADER] = f"{waited_s * 1000:.1f}"
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
    logger.info("%s %s -> %s %d, %d chunks in %.0f ms (queued %.0f ms)", request.method, request.path, which,
                resp.status, chunks, (time.perf_counter() - t0) * 1000, waited_s * 1000)
    return resp


async def metrics(request: web.Request) -> web.Response:
    gates: dict[str, Gate] = request.app[GATES]
    lines = []
    for name, kind, help_text, value in (
            ("omni_router_requests_total", "counter", "requests admitted to an upstream", lambda g: g.requests),
            ("omni_router_in_flight", "gauge", "requests an upstream is serving now", lambda g: g.in_flight),
            ("omni_router_queued", "gauge", "requests waiting for an upstream slot now", lambda g: g.waiting),
            ("omni_router_queue_wait_seconds_total", "counter", "time admitted requests waited",
             lambda g: round(g.wait_seconds_total, 6)),
            ("omni_router_queue_wait_seconds_max", "gauge", "longest wait so far", lambda g: round(g.max_wait_s, 6)),
            ("omni_router_parallel", "gauge", "requests an upstream may serve at once", lambda g: g.parallel)):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{upstream="{which}"}} {value(gate)}' for which, gate in sorted(gates.items())]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


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


def make_app(upstreams: Upstreams, read_timeout_s: float = 300.0, stt_parallel: int = 1,
             llm_parallel: int = 1) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[json_errors])
    app[UPSTREAMS] = upstreams
    app[GATES] = {"stt": Gate(stt_parallel), "llm": Gate(llm_parallel)}

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
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Whatever goes wrong in here is logged with an id and answered in OpenAI's error shape, never
    as a traceback."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        request_id = secrets.token_hex(6)
        logger.exception("request %s %s %s failed unexpectedly", request_id, request.method, request.path)
        return error_response(500, f"unexpected router error (request id {request_id})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--stt", required=True, help="the transcription server, e.g. http://127.0.0.1:8092")
    parser.add_argument("--llm", required=True, help="the chat server, e.g. http://127.0.0.1:8093")
    parser.add_argument("--read-timeout", type=float, default=300.0,
                        help="longest silence from an upstream, seconds (default: %(default)s)")
    parser.add_argument("--stt-parallel", type=int, default=1, help="STT requests served at once (default 1)")
    parser.add_argument("--llm-parallel", type=int, default=1, help="LLM requests served at once (default 1)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    if min(args.stt_parallel, args.llm_parallel) < 1:
        parser.error("--stt-parallel and --llm-parallel must be >= 1")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("stt", "llm"):
        if not getattr(args, name).startswith(("http://", "https://")):
            parser.error(f"--{name} must be an http(s) URL, got {getattr(args, name)!r}")
    upstreams = Upstreams(stt=root_url(args.stt), llm=root_url(args.llm))
    logger.info("routing STT -> %s, LLM -> %s", upstreams.stt, upstreams.llm)
    # handler_cancellation: a client disconnect cancels its handler at once, even while the
    # upstream is silent (prompt processing), instead of at the next write.
    web.run_app(make_app(upstreams, args.read_timeout, args.stt_parallel, args.llm_parallel),
                host=args.host, port=args.port,
                handler_cancellation=True, print=None, keepalive_timeout=15)  # also the headers' deadline


if __name__ == "__main__":
    main()
