"""The token server's configuration: one frozen dataclass validated on construction; environment
variables are read only in `from_env` (the edge). The API secret lives here and nowhere else: it is
never logged, never put in a response, and `repr()` hides it."""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from .env import COMMA_LIST, INTEGER, NUMBER, PATH, ConfigError, EnvSpec, Var, given

logger = logging.getLogger(__name__)

DEFAULT_AGENT_OFFER_URL = "http://127.0.0.1:8081/api/offer"
MIN_TTL_S, MAX_TTL_S = 60, 86400
MIN_SECRET_LEN = 32  # HS256 keys shorter than the 256-bit digest are guessable offline from one token
_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]{0,48}")  # + a 16-char suffix stays within the 64-char room rule
_AGENT_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _default_web_dir() -> Path:
    # The repo's web/ folder next to this package, independent of the current directory.
    return Path(__file__).resolve().parent.parent / "web"


def _check_origin(origin: str) -> None:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise ConfigError(f"allowed_origins entries must look like 'http://host:port' (no path, no '*'), "
                          f"got {origin!r}")


@dataclass(frozen=True)
class TokenServerConfig:
    api_key: str
    api_secret: str = field(repr=False)
    livekit_url: str | None = None  # None = direct mode: the page talks WebRTC to the agent itself
    agent_offer_url: str = DEFAULT_AGENT_OFFER_URL  # direct mode: where the page POSTs its SDP offer
    agent_name: str | None = None  # LiveKit named-agent dispatch; None = automatic dispatch
    token_ttl_s: int = 3600
    host: str = "127.0.0.1"
    port: int = 8080
    web_dir: Path = field(default_factory=_default_web_dir)
    max_body_bytes: int = 4096
    default_room_prefix: str = "voice-"
    # Origins other than the page's own that may call /api/token from a browser, e.g. a page served
    # by another process on another port during development. Same-origin calls need no entry. The
    # direct-mode agent's signalling server (another port) does its own CORS for the offer POST.
    allowed_origins: tuple[str, ...] = ()
    # /api/token per client address: a burst, then this many a minute (429 + Retry-After beyond)
    rate_limit_per_min: float = 60.0
    rate_limit_burst: int = 20

    def __post_init__(self) -> None:
        if not self.api_key or not self.api_key.strip():
            raise ConfigError("api_key (LIVEKIT_API_KEY) is required")
        if not self.api_secret:
            raise ConfigError("api_secret (LIVEKIT_API_SECRET) is required")
        if len(self.api_secret) < MIN_SECRET_LEN:
            logger.warning("api_secret is %d characters; use at least %d random characters outside local dev",
                           len(self.api_secret), MIN_SECRET_LEN)
        if self.livekit_url is not None and urlsplit(self.livekit_url).scheme not in ("ws", "wss", "http", "https"):
            raise ConfigError("livekit_url (LIVEKIT_URL) must be a ws://, wss://, http:// or https:// URL")
        if urlsplit(self.agent_offer_url).scheme not in ("http", "https") or not urlsplit(self.agent_offer_url).netloc:
            raise ConfigError("agent_offer_url (AGENT_OFFER_URL) must be an http:// or https:// URL")
        if self.agent_name is not None and not _AGENT_NAME_RE.fullmatch(self.agent_name):
            raise ConfigError("agent_name (AGENT_NAME) must be 1-64 characters of A-Z a-z 0-9 _ . -")
        if not isinstance(self.token_ttl_s, int) or not MIN_TTL_S <= self.token_ttl_s <= MAX_TTL_S:
            raise ConfigError(f"token_ttl_s (TOKEN_TTL_S) must be an integer in {MIN_TTL_S}..{MAX_TTL_S} seconds")
        if not self.host:
            raise ConfigError("host (TOKEN_SERVER_HOST) must not be empty")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError("port (TOKEN_SERVER_PORT) must be an integer in 0..65535")
        if not 64 <= self.max_body_bytes <= 1 << 20:
            raise ConfigError("max_body_bytes must be in 64..1048576")
        if not self.rate_limit_per_min > 0 or not isinstance(self.rate_limit_burst, int) or self.rate_limit_burst < 1:
            raise ConfigError("rate_limit_per_min (TOKEN_RATE_LIMIT_PER_MIN) must be > 0 and rate_limit_burst "
                              "(TOKEN_RATE_LIMIT_BURST) an integer >= 1")
        if not _PREFIX_RE.fullmatch(self.default_room_prefix):
            raise ConfigError("default_room_prefix must be 0-48 characters of A-Z a-z 0-9 _ -")
        # Accept any path-like / iterable from callers; store the canonical immutable types.
        object.__setattr__(self, "web_dir", Path(self.web_dir))
        object.__setattr__(self, "allowed_origins", tuple(o.rstrip("/") for o in self.allowed_origins))
        for origin in self.allowed_origins:
            _check_origin(origin)

    @property
    def mode(self) -> Literal["livekit", "direct"]:
        return "livekit" if self.livekit_url else "direct"

    @property
    def client_url(self) -> str:
        """What the page connects to: the LiveKit server, or the agent's offer endpoint."""
        return self.livekit_url or self.agent_offer_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, allow_dev_keys: bool = False) -> TokenServerConfig:
        """Read the settings from `env` (default os.environ): TOKEN_ENV below; empty values count as unset.

        With `allow_dev_keys=True`, direct mode and neither key nor secret set, a random pair is
        generated for this process only (logged as a warning): good for trying the page, useless for
        an agent, which must be given the same pair."""
        e = os.environ if env is None else env
        key, secret = given(e, "LIVEKIT_API_KEY"), given(e, "LIVEKIT_API_SECRET")
        livekit_url = given(e, "LIVEKIT_URL")
        if key is None and secret is None and livekit_url is None and allow_dev_keys:
            key, secret = f"dev-{secrets.token_hex(4)}", secrets.token_urlsafe(32)
            logger.warning("LIVEKIT_API_KEY/LIVEKIT_API_SECRET not set: using a random dev key pair (key %s) "
                           "for this process only; an agent cannot verify these tokens", key)
        if key is None or secret is None:
            raise ConfigError("LIVEKIT_API_KEY and LIVEKIT_API_SECRET must both be set (the same pair the "
                              "LiveKit server or the direct-mode agent uses to verify tokens)")
        return TOKEN_ENV.build(e, api_key=key, api_secret=secret)


TOKEN_ENV = EnvSpec(TokenServerConfig, (
    Var("LIVEKIT_API_KEY", "api_key"), Var("LIVEKIT_API_SECRET", "api_secret"), Var("LIVEKIT_URL", "livekit_url"),
    Var("AGENT_OFFER_URL", "agent_offer_url"), Var("AGENT_NAME", "agent_name"),
    Var("TOKEN_TTL_S", "token_ttl_s", INTEGER), Var("TOKEN_SERVER_HOST", "host"),
    Var("TOKEN_SERVER_PORT", "port", INTEGER), Var("WEB_DIR", "web_dir", PATH),
    Var("TOKEN_SERVER_ALLOWED_ORIGINS", "allowed_origins", COMMA_LIST),
    Var("TOKEN_RATE_LIMIT_PER_MIN", "rate_limit_per_min", NUMBER),
    Var("TOKEN_RATE_LIMIT_BURST", "rate_limit_burst", INTEGER)))
