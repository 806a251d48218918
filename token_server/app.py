"""The HTTP app: `POST /api/token`, `GET /healthz`, and the page from `web_dir` at `/`.

Every error is JSON `{"error": "..."}`: 400 bad input, 403 foreign origin, 404 / 405 from routing,
408 body too slow, 413 body too large, 429 rate limited (with Retry-After), and 500 naming only a
request id (the log has the rest) for anything unexpected. Responses never carry the API secret
(only tokens signed with it). The page gets a Content-Security-Policy that lets it reach only this
server and the one `client_url` the tokens point at."""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from .config import TokenServerConfig
from .http_guard import (
    RateLimiter,
    RequestError,
    client_key,
    parse_json,
    read_body,
    retry_after_header,
    unexpected_errors,
)
from .tokens import mint_token, validate_identity, validate_name, validate_room

logger = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("token_server_config", TokenServerConfig)
LIMITER_KEY = web.AppKey("token_rate_limiter", RateLimiter)
CSP_KEY = web.AppKey("content_security_policy", str)
TOKEN_FIELDS = ("room", "identity", "name")
_NO_STORE_PATHS = ("/api/", "/healthz")


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _parse_fields(body: bytes) -> dict[str, object]:
    """The request's JSON object; an empty body means "all defaults"."""
    if not body.strip():
        return {}
    data = parse_json(body)
    if not isinstance(data, dict):
        raise RequestError(400, "request body must be a JSON object like {\"room\": \"...\", \"identity\": \"...\"}")
    unknown = sorted(set(data) - set(TOKEN_FIELDS))
    if unknown:
        raise RequestError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(TOKEN_FIELDS)}")
    # null counts as absent, so a form can send every field.
    return {k: v for k, v in data.items() if v is not None}


async def handle_token(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG_KEY]
    wait_s = request.app[LIMITER_KEY].retry_after(client_key(request))
    if wait_s is not None:
        return json_error(429, f"too many token requests from this address; retry in {wait_s:.0f} s",
                          retry_after_header(wait_s))
    try:
        fields = _parse_fields(await read_body(request, cfg.max_body_bytes))
        room = validate_room(fields["room"]) if "room" in fields else (
            f"{cfg.default_room_prefix}{secrets.token_hex(8)}")
        identity = validate_identity(fields["identity"]) if "identity" in fields else f"user-{secrets.token_hex(6)}"
        name = validate_name(fields["name"]) if "name" in fields else None
    except RequestError as exc:
        return json_error(exc.status, str(exc))
    except ValueError as exc:  # the validators' messages name the field and the rule
        return json_error(400, str(exc))
    now = int(time.time())
    token = mint_token(cfg, room=room, identity=identity, name=name, now=now)
    logger.info("token issued: mode=%s room=%s identity=%s", cfg.mode, room, identity)
    return web.json_response({"token": token, "url": cfg.client_url, "mode": cfg.mode, "room": room,
                              "identity": identity, "expires_at": now + cfg.token_ttl_s})


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "mode": request.app[CONFIG_KEY].mode})


async def handle_static(request: web.Request) -> web.StreamResponse:
    root = request.app[CONFIG_KEY].web_dir
    rel = request.match_info["path"]
    if rel == "":
        index = root / "index.html"
        if not index.is_file():
            return json_error(404, "the web page is missing: no index.html in the server's web directory (WEB_DIR)")
        return web.FileResponse(index)
    not_found = json_error(404, f"not found: /{rel}")
    # Dot-files (.git, .env) are never served; no directory listings (a directory is a 404).
    if any(part.startswith(".") for part in PurePosixPath(rel).parts):
        return not_found
    try:
        base = root.resolve()
        target = (base / rel).resolve()
        servable = target.is_relative_to(base) and target.is_file()
    except (OSError, ValueError):  # an embedded NUL byte, a name longer than the file system allows
        return not_found
    if not servable:
        return not_found
    return web.FileResponse(target)


def _is_same_origin(origin: str, host: str | None) -> bool:
    # Compare authorities only: behind a TLS-terminating proxy the scheme seen here differs.
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Origin policy for the API, CORS for configured origins, JSON bodies for routing errors."""
    cfg = request.app[CONFIG_KEY]
    origin = request.headers.get("Origin")
    cross = origin is not None and not _is_same_origin(origin, request.host)
    if cross and request.path.startswith("/api/"):
        if origin not in cfg.allowed_origins:
            # A browser on a foreign page must not obtain tokens for this deployment.
            return json_error(403, "cross-origin request from an origin that is not allowed "
                                   "(add it to TOKEN_SERVER_ALLOWED_ORIGINS)")
        cors = {"Access-Control-Allow-Origin": origin or "", "Vary": "Origin"}
        if request.method == "OPTIONS":
            return web.Response(status=204, headers={
                **cors, "Access-Control-Allow-Methods": "POST", "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "600"})
    else:
        cors = {}
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # routing: unknown path (404), wrong method (405)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        message = f"not found: {request.path}" if exc.status == 404 else f"{exc.reason} ({request.method} {request.path})"
        response = json_error(exc.status, message, headers)
    response.headers.update(cors)
    return response


def content_security_policy(cfg: TokenServerConfig) -> str:
    """Scripts, styles and fetches from this origin only, plus the agent's offer endpoint or the
    LiveKit server (whose client speaks both WebSocket and HTTP to it)."""
    parts = urlsplit(cfg.client_url)
    secure = parts.scheme in ("https", "wss")
    peers = [f"{scheme}://{parts.netloc}" for scheme in (("https", "wss") if secure else ("http", "ws"))]
    if cfg.livekit_url and parts.hostname and parts.hostname.endswith(".livekit.cloud"):
        peers += ["https://*.livekit.cloud", "wss://*.livekit.cloud"]  # LiveKit Cloud's regional failover
    return "; ".join((
        "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
        f"connect-src 'self' {' '.join(peers)}", "media-src 'self' blob: mediastream:", "worker-src 'self' blob:",
        "object-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"))


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = request.app[CSP_KEY]
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    if request.path.startswith(_NO_STORE_PATHS):
        # A token must not sit in a browser or proxy cache.
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    else:
        response.headers.setdefault("Cache-Control", "no-cache")  # revalidate: page edits show at once


def make_app(cfg: TokenServerConfig) -> web.Application:
    last_resort = unexpected_errors(lambda status, _code, message: json_error(status, message))
    app = web.Application(middlewares=[last_resort, _guard], client_max_size=cfg.max_body_bytes)
    app[CONFIG_KEY] = cfg
    app[LIMITER_KEY] = RateLimiter(cfg.rate_limit_per_min, cfg.rate_limit_burst)
    app[CSP_KEY] = content_security_policy(cfg)
    app.router.add_post("/api/token", handle_token)
    app.router.add_get("/healthz", handle_healthz)
    # Everything else under / is the page; /api/... is excluded so a wrong method there is a 405.
    app.router.add_get(r"/{path:(?!api/).*}", handle_static)
    app.on_response_prepare.append(_security_headers)
    if not (Path(cfg.web_dir) / "index.html").is_file():
        logger.warning("no index.html in %s: / answers 404 until the page is there", cfg.web_dir)
    return app
