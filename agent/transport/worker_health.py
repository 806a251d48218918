"""The LiveKit worker's own HTTP server: `GET /healthz` that tells the truth, `GET /metrics`.

livekit-agents' built-in health check answers "OK" as soon as the process runs - before the worker
has registered with the LiveKit server, and before any model is loaded - and listens on every
interface. This server starts first, on its own thread and event loop, so it can already answer
503 ("loading") while the engine loads on the main thread; it answers 200 only when the engine is
ready, the worker is registered, and the LiveKit server answers now. It listens on AGENT_HOST
(127.0.0.1 unless asked otherwise).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

StatusFn = Callable[[bool], tuple[bool, dict[str, Any]]]
"""`status(livekit_reachable) -> (healthy, JSON body)`; called on the health server's thread."""

PROBE_EVERY_S = 2.0  # a scrape every second must not become a request to the LiveKit server each time
PROBE_TIMEOUT_S = 1.0


def http_url(livekit_url: str) -> str:
    """The LiveKit server's HTTP root (it answers "OK" there) for its ws:// or wss:// URL."""
    parts = urlsplit(livekit_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "/", "", ""))


class WorkerHealthServer:
    def __init__(self, status: StatusFn, metrics: Callable[[str], tuple[bytes, str]], livekit_url: str,
                 host: str, port: int) -> None:
        self.status = status
        self.metrics = metrics  # (Accept header) -> (body, content type)
        self.livekit_root = http_url(livekit_url) if livekit_url else ""
        self.host, self.port = host, port
        self._probed_at = -PROBE_EVERY_S
        self._reachable = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._http: aiohttp.ClientSession | None = None

    def start(self) -> None:
        """Bind and serve on a daemon thread. Raises OSError here if the port cannot be bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="worker-health", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        log.info("worker health and metrics on http://%s:%d/healthz and /metrics", self.host, self.port)

    def close(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop_site(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=5)

    async def _start_site(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def _stop_site(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _livekit_reachable(self) -> bool:
        if not self.livekit_root:
            return False
        now = time.monotonic()
        if now - self._probed_at < PROBE_EVERY_S:
            return self._reachable
        self._probed_at = now
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S))
        try:
            async with self._http.get(self.livekit_root) as resp:
                self._reachable = resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            self._reachable = False
        return self._reachable

    async def _healthz(self, _request: web.Request) -> web.Response:
        healthy, body = self.status(await self._livekit_reachable())
        return web.json_response(body, status=200 if healthy else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})
