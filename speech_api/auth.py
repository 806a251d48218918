"""Bearer API keys and the per-key stream limit.

A key is compared in constant time against every configured key. With no keys configured (allowed
only on a loopback host, see config.py) every request is the one caller "local". The limit counts
HTTP speech streams and WebSocket connections a key holds at once; the count is taken before the
first await of a request, so concurrent requests cannot pass it together."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from .errors import ApiError

ANONYMOUS = "local"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="speech_api"'}


class KeyAuth:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(k.encode() for k in keys)

    def caller(self, request: web.Request) -> str:
        """The caller's identity for limits and logs (never the key itself), or 401."""
        if not self._keys:
            return ANONYMOUS
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", "missing_api_key",
                           headers=_CHALLENGE)
        given = token.encode("utf-8", "replace")
        matched = False
        for key in self._keys:  # every key is compared: the time taken does not say which one matched
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise ApiError(401, "invalid API key", "invalid_api_key", headers=_CHALLENGE)
        return "key-" + hashlib.sha256(given).hexdigest()[:12]


class KeySlots:
    """At most `limit` streams per caller at once."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self._held: dict[str, int] = {}

    def in_use(self, caller: str) -> int:
        return self._held.get(caller, 0)

    @contextmanager
    def hold(self, caller: str) -> Iterator[None]:
        if self._held.get(caller, 0) >= self.limit:
            raise ApiError(429, f"this API key already has {self.limit} streams open (the per-key limit); "
                                f"retry when one ends", "concurrency_limit_exceeded",
                           headers={"Retry-After": str(self.retry_after_s)})
        self._held[caller] = self._held.get(caller, 0) + 1
        try:
            yield
        finally:
            left = self._held[caller] - 1
            if left:
                self._held[caller] = left
            else:
                del self._held[caller]
