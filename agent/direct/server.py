"""Direct mode's signalling server: browsers POST a WebRTC offer with a token from the token
server and get a complete answer back (non-trickle); each offer becomes a DirectPeer with its own
session on the process's one engine. Contract (requests, responses, errors): README.md here."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription
from livekit.agents import vad as lk_vad

from token_server.http_guard import (
    RateLimiter,
    RequestError,
    client_key,
    parse_json,
    read_body,
    retry_after_header,
    unexpected_errors,
)
from token_server.tokens import TokenRejected, verify_token
from tts_engine import TTSEngine

from ..config import AgentConfig
from ..observe.metrics import AgentMetrics
from ..session.turn_end import SmartTurnModel
from .config import DirectServerConfig
from .ice import configure_ice, filter_candidates
from .offer_check import OfferRejected, check_offer_sdp
from .peer import DirectPeer

__all__ = ["DirectServer", "DirectServerConfig", "SERVER_KEY", "make_app"]

log = logging.getLogger(__name__)

@dataclass
class _KeyPair:
    """The pair as token_server's KeyPair protocol spells it (plain attributes, not frozen)."""

    api_key: str
    api_secret: str = field(repr=False)


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


class DirectServer:
    """The registry of live peers and the HTTP handlers; one per process."""

    def __init__(self, cfg: DirectServerConfig, agent_cfg: AgentConfig, engine: TTSEngine, vad: lk_vad.VAD,
                 turn_model: SmartTurnModel | None = None) -> None:
        self.cfg = cfg
        self.agent_cfg = agent_cfg
        self.engine = engine
        self.vad = vad
        self.turn_model = turn_model
        self.peers: dict[str, DirectPeer] = {}
        self.metrics = AgentMetrics()  # GET /metrics: per-stage latency, sessions, engine load, underruns
        self.metrics.register_engine(engine.stats, engine.load)
        self._keys = _KeyPair(cfg.api_key, cfg.api_secret)
        self._restore_ice: Callable[[], None] | None = None
        self._limiter = RateLimiter(cfg.offer_rate_per_min, cfg.offer_rate_burst)
        self._reserved = 0  # offers past the peer-limit check whose peer is not in `peers` yet

    # ---- lifecycle (aiohttp signals) -----------------------------------------------------------

    async def on_startup(self, _app: web.Application) -> None:
        self._restore_ice = configure_ice(self.cfg.ice_host_addresses)

    async def on_shutdown(self, _app: web.Application) -> None:
        await self.close_all("server_shutdown")

    async def on_cleanup(self, _app: web.Application) -> None:
        if self._restore_ice is not None:
            self._restore_ice()
            self._restore_ice = None

    async def close_all(self, reason: str) -> None:
        await asyncio.gather(*(peer.close(reason) for peer in list(self.peers.values())))

    # ---- handlers ------------------------------------------------------------------------------

    async def offer(self, request: web.Request) -> web.Response:
        wait_s = self._limiter.retry_after(client_key(request))
        if wait_s is not None:
            return _error(429, "rate_limited", f"too many offers from this address; retry in {wait_s:.0f} s",
                          **retry_after_header(wait_s))
        claims = self._authorize(request)
        if isinstance(claims, web.Response):
            return claims
        # The slot is taken here, before the first await, so concurrent slow offers cannot all pass
        # the check; with no await between `finally` and `peers[...] =`, it passes to the peer.
        if len(self.peers) + self._reserved >= self.cfg.max_peers:
            return _error(503, "too_many_peers", f"all {self.cfg.max_peers} sessions are in use; try again later",
                          **{"Retry-After": "5"})
        if not self.engine.running:
            return _error(503, "engine_unavailable", "the TTS engine is not running; the agent is restarting",
                          **{"Retry-After": "10"})
        if self.engine.load() >= 1.0:
            return _error(503, "engine_busy", "every TTS stream slot is in use; try again later",
                          **{"Retry-After": "2"})
        self._reserved += 1
        try:
            offer = await self._read_offer(request)
        finally:
            self._reserved -= 1
        if isinstance(offer, web.Response):
            return offer
        return await self._answer(offer, claims)

    async def _answer(self, offer: RTCSessionDescription, claims: dict[str, Any]) -> web.Response:
        peer_id = secrets.token_hex(8)
        room = claims["video"]["room"]
        peer = DirectPeer(peer_id, engine=self.engine, vad=self.vad, agent_cfg=self.agent_cfg, cfg=self.cfg,
                          session_id=f"{room}-{peer_id}", identity=claims["sub"], on_closed=self._forget,
                          metrics=self.metrics, turn_model=self.turn_model)
        self.peers[peer_id] = peer  # counted against max_peers while the answer is being made
        try:
            answer = await peer.accept(offer)
        except Exception as exc:  # aiortc refuses what the checks let through (codecs, fingerprints, ...)
            await peer.close("bad_offer")
            log.info("peer %s: offer refused by aiortc: %s: %s", peer_id, type(exc).__name__, exc)
            return _error(400, "bad_offer", f"the offer cannot be used: {type(exc).__name__}: {exc}"[:300])
        except BaseException:
            await peer.close("answer_failed")
            raise
        log.info("peer %s (%s) answered; session %s", peer_id, claims["sub"], peer.session_id)
        return web.json_response({"type": answer.type, "sdp": answer.sdp, "peer_id": peer_id,
                                  "session_id": peer.session_id})

    async def delete_peer(self, request: web.Request) -> web.Response:
        claims = self._authorize(request)
        if isinstance(claims, web.Response):
            return claims
        peer = self.peers.get(request.match_info["peer_id"])
        if peer is None or peer.identity != claims["sub"]:  # someone else's peer looks like no peer
            return _error(404, "no_such_peer", "no live peer with that id for this identity")
        await peer.close("hangup")
        return web.Response(status=204)

    async def healthz(self, _request: web.Request) -> web.Response:
        stats = self.engine.stats()
        running = self.engine.running
        problems = [] if running else ["the TTS engine is not running (the process exits for its supervisor)"]
        return web.json_response({
            "status": "ok" if running else "unavailable", "problems": problems,
            "peers": len(self.peers), "max_peers": self.cfg.max_peers,
            "engine": {"running": running, "load": self.engine.load(), "active_streams": stats["active_streams"],
                       "max_streams": stats["max_streams"]}}, status=200 if running else 503)

    # ---- helpers -------------------------------------------------------------------------------

    def _authorize(self, request: web.Request) -> dict[str, Any] | web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="agent"'}
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "missing_token", "send 'Authorization: Bearer <token>' with a token from the "
                          "token server", **challenge)
        try:
            return verify_token(self._keys, token.strip())
        except TokenRejected as exc:
            return _error(401, f"token_{exc.reason}", f"token rejected: {exc}", **challenge)

    async def _read_offer(self, request: web.Request) -> RTCSessionDescription | web.Response:
        try:
            body = parse_json(await read_body(request, self.cfg.max_offer_bytes))
        except RequestError as exc:
            code = {408: "offer_too_slow", 413: "offer_too_large"}.get(exc.status, "bad_offer")
            return _error(exc.status, code, str(exc))
        if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
            return _error(400, "bad_offer", "the body must be {\"type\": \"offer\", \"sdp\": \"...\"}")
        sdp: str = body["sdp"]
        try:
            check_offer_sdp(sdp)
        except OfferRejected as exc:
            return _error(400, "bad_offer", str(exc))
        sdp, kept = filter_candidates(sdp, self.cfg.ice_host_addresses)
        if kept == 0:  # it may still connect through peer-reflexive candidates; worth a log line
            log.warning("offer has no candidate reachable from %s", ", ".join(self.cfg.ice_host_addresses))
        return RTCSessionDescription(sdp=sdp, type="offer")

    def _forget(self, peer: DirectPeer) -> None:
        self.peers.pop(peer.peer_id, None)


def _cors_middleware(allowed: tuple[str, ...]) -> Any:
    preflight = {"Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                 "Access-Control-Allow-Headers": "Authorization, Content-Type",
                 "Access-Control-Max-Age": "600"}

    @web.middleware
    async def cors(request: web.Request, handler: Any) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/") not in allowed:
            # browsers on other sites get nothing at all (not just an unreadable response)
            return _error(403, "origin_not_allowed", f"origin {origin} is not allowed (DIRECT_ALLOWED_ORIGINS)")
        if request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(status=204, headers=preflight)
        else:
            response = await handler(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    return cors


SERVER_KEY = web.AppKey("direct_server", DirectServer)


def make_app(cfg: DirectServerConfig, agent_cfg: AgentConfig, engine: TTSEngine, vad: lk_vad.VAD,
             turn_model: SmartTurnModel | None = None) -> web.Application:
    """The signalling app; `app[SERVER_KEY]` is the DirectServer (its `peers` are the live calls)."""
    server = DirectServer(cfg, agent_cfg, engine, vad, turn_model)
    app = web.Application(middlewares=[unexpected_errors(_error), _cors_middleware(cfg.allowed_origins)],
                          client_max_size=cfg.max_offer_bytes)
    app[SERVER_KEY] = server
    app.router.add_post("/api/offer", server.offer)
    app.router.add_delete("/api/peer/{peer_id}", server.delete_peer)
    app.router.add_get("/healthz", server.healthz)
    server.metrics.add_routes(app)
    app.on_startup.append(server.on_startup)
    app.on_shutdown.append(server.on_shutdown)
    app.on_cleanup.append(server.on_cleanup)
    return app
