"""Defences both of the project's HTTP servers use (the token server and the direct-mode agent's
signalling server): bodies read with a size and a time limit, JSON parsed without letting a
hostile document raise anything but a 400, a per-client rate limit, and a last-resort middleware
that turns any unexpected exception into a logged request id instead of a traceback.

Header read timeout: aiohttp closes a connection whose request does not arrive within its
keep-alive timeout (armed at connection start, and not reset by a trickle of header bytes), so
`KEEPALIVE_TIMEOUT_S` passed to the runner is the deadline for a request's headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)

KEEPALIVE_TIMEOUT_S = 15.0  # idle connection / request headers deadline (aiohttp's own is 3630 s)
BODY_TIMEOUT_S = 10.0  # the whole body must arrive within this


class RequestError(Exception):
    """A request that cannot be used: its HTTP status (400, 408, 413, ...) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: web.Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The body, or RequestError: 413 past `limit` bytes (declared or streamed), 408 when it takes
    longer than `timeout_s` (default BODY_TIMEOUT_S)."""
    timeout_s = BODY_TIMEOUT_S if timeout_s is None else timeout_s
    too_large = RequestError(413, f"request body too large: the limit is {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, total = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_any():
                total += len(chunk)
                if total > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"the request body did not arrive within {timeout_s:.0f} s") from None
    except web.RequestPayloadError as exc:  # a body its Content-Encoding cannot decode, a broken chunk
        cause = exc.__cause__ or exc
        raise RequestError(400, f"the request body cannot be read: {str(cause).splitlines()[0][:200]}") from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """JSON from UTF-8 bytes (whatever charset a client declares: JSON is UTF-8, RFC 8259)."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(400, "the body must be UTF-8 encoded JSON") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise RequestError(400, "the JSON is nested too deeply") from None
    except ValueError as exc:  # what else json refuses, e.g. an integer of over 4300 digits
        raise RequestError(400, f"the JSON cannot be read: {str(exc)[:120]}") from None


class RateLimiter:
    """A token bucket per client: `burst` requests at once, refilled at `per_minute`. Remembers at
    most `max_clients` (least recently seen forgotten first), so it cannot be grown without bound."""

    def __init__(self, per_minute: float, burst: int, *, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("a rate limit needs per_minute > 0 and burst >= 1")
        self.rate = per_minute / 60.0
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def retry_after(self, key: str) -> float | None:
        """Take one request's worth for `key`: None if allowed, else seconds until it would be."""
        now = self.clock()
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / self.rate


def client_key(request: web.Request) -> str:
    """Who is asking: the peer address (a proxy in front would need its forwarded header trusted)."""
    return request.remote or "unknown"


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds + 0.5)))}


def unexpected_errors(render: Callable[[int, str, str], web.StreamResponse]) -> Any:
    """Middleware: an exception no handler expected is logged with a request id, and the client gets
    `render(500, code, message)` naming only that id. aiohttp's own HTTP errors pass through."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise  # the client went away: nobody to answer
        except Exception:
            request_id = secrets.token_hex(6)
            log.exception("request %s %s %s failed unexpectedly", request_id, request.method, request.path)
            return render(500, "internal_error", f"unexpected server error (request id {request_id})")

    return middleware
