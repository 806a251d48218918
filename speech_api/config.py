"""The speech API's settings: one frozen dataclass validated on construction. Environment variables
are read only in `from_env` (the edge) through SPEECH_ENV, and only for what is set: every default
is written once, here, in the field list."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from token_server.env import COMMA_LIST, FLAG, INTEGER, NUMBER, PATH, ConfigError, EnvSpec, Var

MIN_KEY_CHARS = 16  # shorter keys can be guessed by anyone who can reach the port
_KEY_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces or commas (the env list separator)
_MODEL_RE = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SpeechApiConfig:
    # the agent processes (python -m agent, python -m agent.direct) serve the API beside their calls,
    # on the engine the calls use, only when this is on; `python -m speech_api` serves it regardless
    enabled: bool = False
    # where the app is served (its own port, also inside the agent process)
    host: str = "127.0.0.1"
    port: int = 8880
    # Bearer keys; none = no auth, allowed only on a loopback host (a server elsewhere refuses to start)
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    api_keys_file: Path | None = None  # more keys, one a line (# comments): read once, on construction
    # streams (HTTP requests and WebSocket connections) one key may hold at once: 429 beyond
    max_streams_per_key: int = 4
    # names `model` may take; all of them are the one loaded checkpoint (the first is the listed id)
    models: tuple[str, ...] = ("qwen3-tts", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
    default_language: str = "auto"  # when a request names none (`language` is this API's extension)
    max_body_bytes: int = 64 * 1024  # a 4000-character input as JSON \u escapes fits (413 beyond)
    # a client that takes no audio for this long loses its stream (its engine slot is freed)
    write_timeout_s: float = 30.0
    # a WebSocket that sends nothing this long while the server waits for its text is closed
    ws_idle_timeout_s: float = 60.0
    ws_max_message_bytes: int = 64 * 1024
    retry_after_busy_s: int = 1  # Retry-After of 503 engine_busy (a slot frees when any stream ends)
    retry_after_key_s: int = 1  # Retry-After of 429 (one of the key's own streams must end)
    # `instructions`: the CustomVoice engine has no style control; False = 400, True = ignored (logged)
    ignore_instructions: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_keys", tuple(self.api_keys))
        if self.api_keys_file is not None:
            object.__setattr__(self, "api_keys", self.api_keys + _read_keys(Path(self.api_keys_file)))
        object.__setattr__(self, "models", tuple(self.models))
        if not self.host:
            raise ConfigError("host (SPEECH_API_HOST) must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port (SPEECH_API_PORT) must be in 0..65535, got {self.port}")
        for key in self.api_keys:
            if not _KEY_RE.fullmatch(key) or len(key) < MIN_KEY_CHARS:
                raise ConfigError(f"every API key (SPEECH_API_KEYS) must be {MIN_KEY_CHARS}+ printable ASCII "
                                  f"characters without spaces or commas, e.g. `openssl rand -hex 24`")
        if not self.api_keys and not is_loopback(self.host):
            raise ConfigError(f"refusing to serve on {self.host} without API keys: set SPEECH_API_KEYS (or "
                              f"SPEECH_API_KEYS_FILE), or bind to 127.0.0.1 (SPEECH_API_HOST)")
        if not 1 <= self.max_streams_per_key <= 10_000:
            raise ConfigError("max_streams_per_key (SPEECH_API_MAX_STREAMS_PER_KEY) must be in 1..10000")
        if not self.models or not all(_MODEL_RE.fullmatch(m) for m in self.models):
            raise ConfigError("models (SPEECH_API_MODELS) needs 1+ names of A-Z a-z 0-9 _ . : / -")
        if not self.default_language:
            raise ConfigError("default_language (SPEECH_API_DEFAULT_LANGUAGE) must not be empty")
        if not 1024 <= self.max_body_bytes <= 16 << 20:
            raise ConfigError("max_body_bytes (SPEECH_API_MAX_BODY_BYTES) must be in 1024..16777216")
        if not 1024 <= self.ws_max_message_bytes <= 16 << 20:
            raise ConfigError("ws_max_message_bytes (SPEECH_API_WS_MAX_MESSAGE_BYTES) must be in 1024..16777216")
        if min(self.write_timeout_s, self.ws_idle_timeout_s) <= 0:
            raise ConfigError("write_timeout_s and ws_idle_timeout_s (SPEECH_API_WRITE_TIMEOUT_S, "
                              "SPEECH_API_WS_IDLE_TIMEOUT_S) must be > 0")
        if min(self.retry_after_busy_s, self.retry_after_key_s) < 1:
            raise ConfigError("Retry-After values (SPEECH_API_RETRY_AFTER_BUSY_S, SPEECH_API_RETRY_AFTER_KEY_S) "
                              "must be >= 1 s")

    @property
    def auth_required(self) -> bool:
        return bool(self.api_keys)

    @property
    def auth_summary(self) -> str:
        """For the start-up log line (never the keys)."""
        return f"on, {len(self.api_keys)} key(s)" if self.api_keys else "off: loopback only"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SpeechApiConfig:
        """Settings from `env` (default os.environ): SPEECH_ENV below; unset or blank variables keep
        the field's default."""
        return SPEECH_ENV.build(os.environ if env is None else env)

    @classmethod
    def for_agent(cls, env: Mapping[str, str] | None = None) -> SpeechApiConfig | None:
        """The agent's edge: the settings when SPEECH_API_ENABLED is on, else None without reading the
        others, so a half-made API configuration never stops a voice agent that does not serve it."""
        env = os.environ if env is None else env
        return SPEECH_ENV.build(env) if SPEECH_ENV.value(env, "enabled") else None


def _read_keys(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"api_keys_file (SPEECH_API_KEYS_FILE) {str(path)!r} cannot be read: {exc}") from None
    return tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))


SPEECH_ENV = EnvSpec(SpeechApiConfig, (
    Var("SPEECH_API_ENABLED", "enabled", FLAG), Var("SPEECH_API_HOST", "host"), Var("SPEECH_API_PORT", "port", INTEGER),
    Var("SPEECH_API_KEYS", "api_keys", COMMA_LIST), Var("SPEECH_API_KEYS_FILE", "api_keys_file", PATH),
    Var("SPEECH_API_MAX_STREAMS_PER_KEY", "max_streams_per_key", INTEGER),
    Var("SPEECH_API_MODELS", "models", COMMA_LIST), Var("SPEECH_API_DEFAULT_LANGUAGE", "default_language"),
    Var("SPEECH_API_MAX_BODY_BYTES", "max_body_bytes", INTEGER),
    Var("SPEECH_API_WRITE_TIMEOUT_S", "write_timeout_s", NUMBER),
    Var("SPEECH_API_WS_IDLE_TIMEOUT_S", "ws_idle_timeout_s", NUMBER),
    Var("SPEECH_API_WS_MAX_MESSAGE_BYTES", "ws_max_message_bytes", INTEGER),
    Var("SPEECH_API_RETRY_AFTER_BUSY_S", "retry_after_busy_s", INTEGER),
    Var("SPEECH_API_RETRY_AFTER_KEY_S", "retry_after_key_s", INTEGER),
    Var("SPEECH_API_IGNORE_INSTRUCTIONS", "ignore_instructions", FLAG)))
