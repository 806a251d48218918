"""Settings for talking to an Omni (vLLM-Omni / OpenAI-compatible) server: one dataclass per concern.

`OmniConfig` says where the server is and how speech is sent to it; `LLMConfig` says how replies are
sampled and how much history each request carries. Both are frozen and validated on construction,
so a bad value fails at start-up instead of on the first user turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

STT_STYLES = ("chat_audio", "transcriptions")

# Language code -> name used in the default transcription prompt (Qwen cookbook wording).
_LANGUAGE_NAMES = {
    "en": "English",
    "zh": "Chinese",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
    "ja": "Japanese",
    "ko": "Korean",
    "ar": "Arabic",
    "nl": "Dutch",
}

# Request fields the clients own; letting extra_body override them would silently break streaming.
_RESERVED_BODY_KEYS = frozenset({"model", "messages", "stream", "stream_options"})

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant in a live spoken conversation. "
    "Answer in one to three short sentences of plain spoken English. "
    "Never use markdown, lists, emoji or code; spell out numbers and symbols as they are said. "
    "If you did not understand the user, ask them briefly to repeat."
)


def default_transcription_prompt(language: str) -> str:
    """The instruction sent next to the audio in the chat_audio style, e.g. for "en":
    "Transcribe the English audio into text." (the Qwen3-Omni cookbook prompt)."""
    name = _LANGUAGE_NAMES.get(language.split("-")[0].lower())
    return f"Transcribe the {name} audio into text." if name else "Transcribe the audio into text."


@dataclass(frozen=True)
class OmniConfig:
    """Where the Omni server is and how user speech is turned into text.

    base_url: server root or its OpenAI base ("http://host:8091" or "http://host:8091/v1").
    stt_style: "chat_audio" sends the audio as a chat-completions content part (vLLM-Omni serving
        Qwen3-Omni); "transcriptions" posts multipart to /v1/audio/transcriptions (plain vLLM,
        Qwen3-ASR, whisper servers).
    stt_prompt: instruction for chat_audio; None derives it from stt_language. In the
        transcriptions style it is only sent (as Whisper's `prompt`) when set explicitly.
    request_timeout_s: connect timeout and longest silence between bytes of a response; a
        streamed reply may take longer in total as long as tokens keep coming.
    plain_string_content: send every message's content as a plain string (llama.cpp-style servers
        answer 422/500 to content lists).
    """

    base_url: str
    api_key: str = "EMPTY"
    model: str = "Qwen/Qwen3-Omni-30B-A3B-Instruct"
    stt_style: Literal["chat_audio", "transcriptions"] = "chat_audio"
    stt_model: str | None = None
    stt_language: str = "en"
    stt_prompt: str | None = None
    request_timeout_s: float = 15.0
    plain_string_content: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.strip():
            raise ValueError("OmniConfig.base_url must be a non-empty URL such as http://127.0.0.1:8091/v1")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"OmniConfig.base_url must start with http:// or https://, got {self.base_url!r}"
            )
        if not self.api_key:
            raise ValueError("OmniConfig.api_key must be non-empty (vLLM accepts any value, e.g. 'EMPTY')")
        if not self.model:
            raise ValueError("OmniConfig.model must be non-empty")
        if self.stt_style not in STT_STYLES:
            raise ValueError(f"OmniConfig.stt_style must be one of {STT_STYLES}, got {self.stt_style!r}")
        if self.stt_model is not None and not self.stt_model:
            raise ValueError("OmniConfig.stt_model must be None (use model) or a non-empty name")
        if not self.stt_language:
            raise ValueError("OmniConfig.stt_language must be a language code such as 'en'")
        if self.stt_prompt is not None and not self.stt_prompt.strip():
            raise ValueError("OmniConfig.stt_prompt must be None (derived) or non-empty")
        if not self.request_timeout_s > 0:
            raise ValueError(f"OmniConfig.request_timeout_s must be > 0, got {self.request_timeout_s}")

    @property
    def api_base(self) -> str:
        """The OpenAI-style base URL, always ending in /v1 (what the openai client wants)."""
        root = self.base_url.rstrip("/")
        return root if root.endswith("/v1") else f"{root}/v1"

    @property
    def stt_model_name(self) -> str:
        return self.stt_model or self.model

    def transcription_prompt(self, language: str | None = None) -> str:
        return self.stt_prompt or default_transcription_prompt(language or self.stt_language)


@dataclass(frozen=True)
class LLMConfig:
    """How replies are sampled and how much conversation each request carries.

    history_max_turns: a turn is one user message plus the replies that follow it; the oldest
        turns are dropped first, half the limit at a time so that consecutive requests share their
        prefix (the server's prefix cache). The system prompt and the newest user turn are always kept.
    history_max_tokens: budget for the whole request (system prompt included), estimated as
        characters / 4; oldest turns are dropped until it fits (the newest turn is kept even if
        it alone is over budget).
    send_modalities: send `modalities: ["text"]` (vLLM-Omni would otherwise also synthesise audio
        and stream it base64 inside the text stream). Servers without Omni ignore or reject it.
    extra_body: extra request fields, e.g. {"sampling_params_list": [...]} for per-stage control.
    """

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tokens: int = 200
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int | None = None
    history_max_turns: int = 12
    history_max_tokens: int = 3000
    send_modalities: bool = True
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.system_prompt, str):
            raise ValueError("LLMConfig.system_prompt must be a string ('' sends none)")
        if self.max_tokens <= 0:
            raise ValueError(f"LLMConfig.max_tokens must be > 0, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"LLMConfig.temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"LLMConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"LLMConfig.seed must be None or an int >= 0, got {self.seed!r}")
        if self.history_max_turns < 1:
            raise ValueError(f"LLMConfig.history_max_turns must be >= 1, got {self.history_max_turns}")
        if self.history_max_tokens <= 0:
            raise ValueError(f"LLMConfig.history_max_tokens must be > 0, got {self.history_max_tokens}")
        if not isinstance(self.extra_body, dict):
            raise ValueError("LLMConfig.extra_body must be a dict")
        clash = _RESERVED_BODY_KEYS & self.extra_body.keys()
        if clash:
            raise ValueError(f"LLMConfig.extra_body must not set {sorted(clash)}: the client owns them")
