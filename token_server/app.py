"""The HTTP app: `POST /api/token`, `GET /healthz`, and the page from `web_dir` at `/`.

Every error is JSON `{"error": "..."}`: 400 bad input, 413 body too large, 403 foreign origin,
404 / 405 from routing. Responses never carry the API secret (only tokens signed with it)."""

from __future__ import annotations

import json
import logging
import secrets
import time
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from .config import TokenServerConfig
from .tokens import mint_token, validate_identity, validate_name, validate_room

logger = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("token_server_config", TokenServerConfig)
TOKEN_FIELDS = ("room", "identity", "name")
_NO_STORE_PATHS = ("/api/", "/healthz")


class RequestError(Exception):
    """A client mistake with its HTTP status; the message is shown to the client as is."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


async def _read_body(request: web.Request, limit: int) -> bytes:
    # Check the declared length first (no read at all), then count while streaming: a chunked
    # body has no Content-Length and must not be buffered past the limit either.
    too_large = RequestError(413, f"request body too large: the limit is {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, total = [], 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_fields(body: bytes) -> dict[str, object]:
    """The request's JSON object; an empty body means "all defaults"."""
    if not body.strip():
        return {}
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(400, "request body must be UTF-8 encoded JSON") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise RequestError(400, "request body must be a JSON object like {\"room\": \"...\", \"identity\": \"...\"}")
    unknown = sorted(set(data) - set(TOKEN_FIELDS))
    if unknown:
        raise RequestError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(TOKEN_FIELDS)}")
    # null counts as absent, so a form can send every field.
    return {k: v for k, v in data.items() if v is not None}


async def handle_token(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG_KEY]
    try:
        fields = _parse_fields(await _read_body(request, cfg.max_body_bytes))
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
    except (OSError, ValueError):  # e.g. an embedded NUL byte
        return not_found
    if not target.is_relative_to(base) or not target.is_file():
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


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
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
    app = web.Application(middlewares=[_guard], client_max_size=cfg.max_body_bytes)
    app[CONFIG_KEY] = cfg
    app.router.add_post("/api/token", handle_token)
    app.router.add_get("/healthz", handle_healthz)
    # Everything else under / is the page; /api/... is excluded so a wrong method there is a 405.
    app.router.add_get(r"/{path:(?!api/).*}", handle_static)
    app.on_response_prepare.append(_security_headers)
    if not (Path(cfg.web_dir) / "index.html").is_file():
        logger.warning("no index.html in %s: / answers 404 until the page is there", cfg.web_dir)
    return app
