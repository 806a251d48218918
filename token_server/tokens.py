"""LiveKit-compatible access tokens: HS256 JWTs with exactly livekit-api's claim layout, so the
LiveKit server, `livekit.api.TokenVerifier` and the direct-mode agent (via `verify_token`) all
accept the same token.

Input rules (checked before minting, and by the HTTP layer for 400 messages):
- room: 1-64 of ``A-Z a-z 0-9 _ -``: safe in URLs, logs and file names (traces are per room).
- identity: 1-64 of ``A-Z a-z 0-9 _ - . @``: the room rule plus '.' and '@' so e-mail-like or
  dotted ids work; still nothing that needs escaping.
- name (display name, optional): 1-128 printable characters (any script; no control characters).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Protocol

import jwt

from .config import TokenServerConfig

logger = logging.getLogger(__name__)

ROOM_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
IDENTITY_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MAX_NAME_LEN = 128
DEFAULT_LEEWAY_S = 60.0  # the same clock-skew allowance as livekit.api.TokenVerifier


class KeyPair(Protocol):
    """Anything holding the API key pair (TokenServerConfig, or the agent's own config)."""

    api_key: str
    api_secret: str


class TokenRejected(Exception):
    """A token failed verification. `reason` is one of: expired, not_yet_valid, bad_signature,
    wrong_issuer, malformed, missing_grants. Messages never include the token or the secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def validate_room(room: object) -> str:
    if not isinstance(room, str):
        raise ValueError("room must be a string")
    if not ROOM_RE.fullmatch(room):
        raise ValueError("room must be 1-64 characters of A-Z a-z 0-9 _ -")
    return room


def validate_identity(identity: object) -> str:
    if not isinstance(identity, str):
        raise ValueError("identity must be a string")
    if not IDENTITY_RE.fullmatch(identity):
        raise ValueError("identity must be 1-64 characters of A-Z a-z 0-9 _ - . @")
    return identity


def validate_name(name: object) -> str:
    if not isinstance(name, str):
        raise ValueError("name must be a string")
    if not 1 <= len(name) <= MAX_NAME_LEN or not name.isprintable():
        raise ValueError(f"name must be 1-{MAX_NAME_LEN} printable characters (no control characters)")
    return name


def mint_token(cfg: TokenServerConfig, *, room: str, identity: str, name: str | None = None,
               now: float | None = None) -> str:
    """An access token to join `room` as `identity`, valid from `now` (unix seconds, default: the
    current time) for `cfg.token_ttl_s` seconds. Raises ValueError for invalid inputs."""
    validate_room(room)
    validate_identity(identity)
    if name is not None:
        validate_name(name)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": cfg.api_key,
        "sub": identity,
        "nbf": issued,
        "exp": issued + cfg.token_ttl_s,
        "video": {"roomJoin": True, "room": room, "canPublish": True, "canSubscribe": True,
                  "canPublishData": True},
    }
    if name is not None:
        claims["name"] = name
    if cfg.agent_name is not None:
        # Explicit dispatch: the LiveKit server starts this named agent when the room is created.
        claims["roomConfig"] = {"agents": [{"agentName": cfg.agent_name}]}
    return jwt.encode(claims, cfg.api_secret, algorithm="HS256")


def verify_token(cfg: KeyPair, token: str, *, leeway_s: float = DEFAULT_LEEWAY_S) -> dict[str, Any]:
    """The claims of a valid token minted with `cfg`'s key pair that grants joining a room with
    publish and subscribe rights (what a voice call needs). Raises TokenRejected otherwise."""
    if not isinstance(token, str) or not token:
        raise TokenRejected("malformed", "token is missing or not a string")
    try:
        claims = jwt.decode(token, key=cfg.api_secret, algorithms=["HS256"], issuer=cfg.api_key,
                            leeway=leeway_s, options={"require": ["exp", "nbf", "iss", "sub"]})
    except jwt.ExpiredSignatureError:
        raise TokenRejected("expired", "token has expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenRejected("not_yet_valid", "token is not valid yet (nbf in the future)") from None
    except jwt.InvalidSignatureError:
        raise TokenRejected("bad_signature", "token signature does not match the API secret") from None
    except jwt.InvalidIssuerError:
        raise TokenRejected("wrong_issuer", "token was issued for a different API key") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected("malformed", f"token lacks the required '{exc.claim}' claim") from None
    except jwt.InvalidTokenError as exc:  # undecodable, wrong algorithm, non-numeric exp, ...
        raise TokenRejected("malformed", f"token is malformed ({type(exc).__name__})") from None
    _check_grants(claims)
    return claims


def _check_grants(claims: dict[str, Any]) -> None:
    sub, video = claims.get("sub"), claims.get("video")
    if not isinstance(sub, str) or not sub:
        raise TokenRejected("missing_grants", "token has no identity (sub)")
    if not isinstance(video, dict) or video.get("roomJoin") is not True:
        raise TokenRejected("missing_grants", "token does not grant roomJoin")
    room = video.get("room")
    if not isinstance(room, str) or not ROOM_RE.fullmatch(room):
        raise TokenRejected("missing_grants", "token does not name a valid room")
    # LiveKit treats an absent canPublish/canSubscribe as allowed: only an explicit False denies.
    for grant in ("canPublish", "canSubscribe"):
        if video.get(grant) is False:
            raise TokenRejected("missing_grants", f"token denies {grant}")
