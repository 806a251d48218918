"""The app served on a thread with its own event loop, for callers that block or whose own loop is
busy: the agent processes (`serve_beside`), the tests (OpenAI's sync client), `scripts/bench_speech_api.py
--tiny`."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from aiohttp import web

from token_server.http_guard import KEEPALIVE_TIMEOUT_S
from tts_engine import TTSEngine

from .app import make_app
from .config import SpeechApiConfig

log = logging.getLogger(__name__)

# aiohttp cancels the handler of a client that disconnects: its engine stream is cancelled then, not
# at the next write (which, before the first packet, waits for the engine)
HANDLER_CANCELLATION = True


class BackgroundServer:
    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S,
                                     handler_cancellation=HANDLER_CANCELLATION)
        self._thread = threading.Thread(target=self._loop.run_forever, name="speech-api", daemon=True)

    @property
    def url(self) -> str:
        """http://host:port, the root the app's routes hang from (OpenAI's base_url is this + /v1)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        """Bind and serve; raises OSError here when the port cannot be bound (the thread is gone then)."""
        self._thread.start()
        try:
            self.call(self._start_site())
        except BaseException:
            self.close()
            raise
        return self

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self) -> None:
        """Stop serving: open streams are cut (their engine slots freed), then the thread ends."""
        if self._thread.is_alive():
            self.call(self._runner.cleanup())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    async def _start_site(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_beside(engine: TTSEngine, cfg: SpeechApiConfig) -> BackgroundServer:
    """The API on `engine` for a process that serves something else on its main loop - the agent's
    calls: on its own thread, loop and port, so parsing and encoding for API clients never hold up a
    call's event loop, while both share the one model copy. Raises OSError when the port is taken."""
    server = BackgroundServer(make_app(engine, cfg), cfg.host, cfg.port).start()
    log.info("speech API on http://%s:%d/v1/audio/speech (auth %s), on the engine the calls use", cfg.host,
             server.port, cfg.auth_summary)
    return server
