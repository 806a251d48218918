"""Token server: LiveKit-compatible access tokens (also verified by the direct-mode agent), the
browser page from web/, and a health check. Never imports the TTS engine or the agent."""

from .app import make_app
from .config import ConfigError, TokenServerConfig
from .tokens import (
    IDENTITY_RE,
    ROOM_RE,
    TokenRejected,
    mint_token,
    validate_identity,
    validate_name,
    validate_room,
    verify_token,
)

__all__ = [
    "IDENTITY_RE",
    "ROOM_RE",
    "ConfigError",
    "TokenRejected",
    "TokenServerConfig",
    "make_app",
    "mint_token",
    "validate_identity",
    "validate_name",
    "validate_room",
    "verify_token",
]
