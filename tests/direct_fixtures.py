"""The direct-mode signalling app served on a free loopback port, for the tests that talk to it."""

from __future__ import annotations

from aiohttp import web

from agent.direct import SERVER_KEY


class Server:
    """`async with Server(app) as s`: `s.base` is its URL, `s.direct` the DirectServer (its peers)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.direct = app[SERVER_KEY]
        self.runner = web.AppRunner(app, access_log=None)
        self.base = ""

    async def __aenter__(self) -> Server:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()
