"""Direct mode's settings: one frozen dataclass, validated on construction; environment variables
are read only in `from_env` (the edge), as DIRECT_ENV says. README.md in this folder lists every variable."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from token_server.env import COMMA_LIST, INTEGER, NUMBER, EnvSpec, Var

DEFAULT_ORIGINS = ("http://127.0.0.1:8080", "http://localhost:8080")  # the token server's page


@dataclass(frozen=True)
class DirectServerConfig:
    api_key: str  # the token server's key pair: offers must carry a token it minted
    api_secret: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8081
    # addresses ICE offers to browsers; LAN use adds this machine's LAN address
    ice_host_addresses: tuple[str, ...] = ("127.0.0.1",)
    # pages (served by the token server on another port) that may call the API from a browser
    allowed_origins: tuple[str, ...] = DEFAULT_ORIGINS
    max_peers: int = 4
    disconnect_grace_s: float = 5.0  # "disconnected" this long (no recovery) ends the session
    connect_timeout_s: float = 20.0  # answered but never connected: give the slot back
    media_timeout_s: float = 15.0  # connected but no audio from the peer this long: it is gone
    max_offer_bytes: int = 64 * 1024
    # /api/offer per client address: a burst, then this many a minute (429 + Retry-After beyond)
    offer_rate_per_min: float = 30.0
    offer_rate_burst: int = 10
    # packets aiortc's receiver holds before it hands the user's audio on (agent/direct/jitter.py):
    # aiortc's own 4 cost 80 ms on every barge-in and turn; 0 (none) suits loopback and LANs
    jitter_prefetch: int = 0

    def __post_init__(self) -> None:
        if not self.api_key or not self.api_secret:
            raise ValueError("api_key and api_secret (LIVEKIT_API_KEY / LIVEKIT_API_SECRET) are required "
                             "to verify the token server's tokens")
        object.__setattr__(self, "ice_host_addresses", tuple(self.ice_host_addresses))
        object.__setattr__(self, "allowed_origins", tuple(o.rstrip("/") for o in self.allowed_origins))
        if not self.ice_host_addresses:
            raise ValueError("ice_host_addresses (DIRECT_ICE_HOSTS) needs at least one address")
        for address in self.ice_host_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"ice_host_addresses (DIRECT_ICE_HOSTS): {address!r} is not an IP address") from None
        for origin in self.allowed_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ValueError(f"allowed_origins (DIRECT_ALLOWED_ORIGINS) entries look like "
                                 f"'http://host:port', got {origin!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError("port (DIRECT_PORT) must be in 0..65535")
        if self.max_peers < 1:
            raise ValueError("max_peers (DIRECT_MAX_PEERS) must be >= 1")
        if self.offer_rate_per_min <= 0 or self.offer_rate_burst < 1:
            raise ValueError("offer_rate_per_min (DIRECT_OFFER_RATE_PER_MIN) must be > 0 and offer_rate_burst "
                             "(DIRECT_OFFER_RATE_BURST) >= 1")
        if not 0 <= self.jitter_prefetch <= 8:
            raise ValueError("jitter_prefetch (DIRECT_JITTER_PREFETCH) must be in 0..8 packets")
        if min(self.disconnect_grace_s, self.connect_timeout_s, self.media_timeout_s) <= 0:
            raise ValueError("peer timeouts must be > 0 seconds")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DirectServerConfig:
        return DIRECT_ENV.build(os.environ if env is None else env)


_KEY_PAIR = "the token server's key pair: offers must carry a token it minted"
DIRECT_ENV = EnvSpec(DirectServerConfig, (
    Var("LIVEKIT_API_KEY", "api_key", hint=_KEY_PAIR), Var("LIVEKIT_API_SECRET", "api_secret", hint=_KEY_PAIR),
    Var("DIRECT_HOST", "host"), Var("DIRECT_PORT", "port", INTEGER),
    Var("DIRECT_ICE_HOSTS", "ice_host_addresses", COMMA_LIST),
    Var("DIRECT_ALLOWED_ORIGINS", "allowed_origins", COMMA_LIST), Var("DIRECT_MAX_PEERS", "max_peers", INTEGER),
    Var("DIRECT_DISCONNECT_GRACE_S", "disconnect_grace_s", NUMBER),
    Var("DIRECT_CONNECT_TIMEOUT_S", "connect_timeout_s", NUMBER),
    Var("DIRECT_MEDIA_TIMEOUT_S", "media_timeout_s", NUMBER),
    Var("DIRECT_OFFER_RATE_PER_MIN", "offer_rate_per_min", NUMBER),
    Var("DIRECT_OFFER_RATE_BURST", "offer_rate_burst", INTEGER),
    Var("DIRECT_JITTER_PREFETCH", "jitter_prefetch", INTEGER)))
