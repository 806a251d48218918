"""`POST /v1/audio/speech` bodies (OpenAI's schema) and WebSocket `start` messages, validated field by
field: every refusal is a 400 (404 for an unknown model) naming the field and what is valid.

Fields: model, input, voice (a name or {"id": name}, case-insensitive), response_format, speed,
instructions, stream_format as OpenAI defines them, plus `language` (this API's extension: one of
the checkpoint's languages; default SpeechApiConfig.default_language). null counts as absent; any
other field is refused, as OpenAI refuses unknown arguments."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from .audio import FORMATS, MAX_SPEED, MIN_SPEED
from .config import SpeechApiConfig
from .errors import ApiError, bad_field
from .timestamps import TIMESTAMP_CHOICES

log = logging.getLogger(__name__)

SPEECH_FIELDS = ("model", "input", "voice", "response_format", "speed", "instructions", "stream_format", "language",
                 "timestamps")
STREAM_FORMATS = ("audio", "sse")


@dataclass(frozen=True)
class Catalog:
    """What the loaded engine offers (read once when the app is made)."""

    speakers: tuple[str, ...]
    languages: tuple[str, ...]
    max_text_chars: int


@dataclass(frozen=True)
class SpeechRequest:
    input: str
    voice: str
    language: str
    response_format: str = "mp3"  # OpenAI's defaults
    speed: float = 1.0
    stream_format: str = "audio"
    timestamps: str = "none"  # "word": word events in the SSE stream (ours; OpenAI has none)


def _present(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _string(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_field(name, f"'{name}' must be a string, got {type(value).__name__}", "invalid_type")
    return value


def _choice(data: dict[str, Any], name: str, valid: tuple[str, ...]) -> str | None:
    value = _string(data, name)
    if value is not None and value not in valid:
        raise bad_field(name, f"'{name}' must be one of {', '.join(valid)}; got {value[:64]!r}")
    return value


def voice_and_language(data: dict[str, Any], catalog: Catalog, cfg: SpeechApiConfig) -> tuple[str, str]:
    voice = data.get("voice")
    if isinstance(voice, dict) and set(voice) == {"id"}:
        voice = voice["id"]  # OpenAI's custom-voice reference: {"id": "..."}
    if not isinstance(voice, str) or not voice:
        raise bad_field("voice", f"'voice' is required: a name (or {{\"id\": name}}) of one of "
                                 f"{', '.join(catalog.speakers)}", "missing_voice" if voice is None else "invalid_type")
    if voice.lower() not in catalog.speakers:
        raise bad_field("voice", f"unknown voice {voice[:64]!r}; this server's voices are "
                                 f"{', '.join(catalog.speakers)} (GET /v1/audio/voices)", "unknown_voice")
    language = _string(data, "language")
    language = cfg.default_language if language is None else language
    if language.lower() not in catalog.languages:
        raise bad_field("language", f"unsupported language {language[:64]!r}; supported: "
                                    f"{', '.join(catalog.languages)}", "unknown_language")
    return voice.lower(), language.lower()


def check_model(data: dict[str, Any], cfg: SpeechApiConfig) -> None:
    model = _string(data, "model")
    if model is None:
        raise bad_field("model", f"'model' is required, e.g. {cfg.models[0]!r}", "missing_model")
    if model not in cfg.models:
        raise ApiError(404, f"the model {model[:64]!r} does not exist; this server serves {', '.join(cfg.models)} "
                            f"(one Qwen3-TTS checkpoint under each name)", "model_not_found", "model")


def check_input(text: str | None, catalog: Catalog) -> str:
    if text is None:
        raise bad_field("input", "'input' is required: the text to speak", "missing_input")
    if not text.strip():
        raise bad_field("input", "'input' is empty: there is nothing to speak", "empty_input")
    if len(text) > catalog.max_text_chars:
        raise bad_field("input", f"'input' has {len(text)} characters; the limit is {catalog.max_text_chars}",
                        "input_too_long")
    return text


def _speed(data: dict[str, Any]) -> float | None:
    speed = data.get("speed")
    if speed is None:
        return None
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not math.isfinite(speed):
        raise bad_field("speed", f"'speed' must be a number from {MIN_SPEED} to {MAX_SPEED}", "invalid_type")
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise bad_field("speed", f"'speed' must be from {MIN_SPEED} to {MAX_SPEED}; got {speed}")
    return float(speed)


def parse_speech_request(data: Any, catalog: Catalog, cfg: SpeechApiConfig) -> SpeechRequest:
    if not isinstance(data, dict):
        raise bad_field(None, "the body must be a JSON object like {\"model\": ..., \"input\": ..., \"voice\": ...}",
                        "invalid_body")
    data = _present(data)
    unknown = sorted(set(data) - set(SPEECH_FIELDS))
    if unknown:
        raise bad_field(unknown[0], f"unrecognized request argument(s): {', '.join(u[:64] for u in unknown)}; "
                                    f"accepted: {', '.join(SPEECH_FIELDS)}", "unknown_parameter")
    check_model(data, cfg)
    text = check_input(_string(data, "input"), catalog)
    voice, language = voice_and_language(data, catalog, cfg)
    instructions = _string(data, "instructions")
    if instructions and instructions.strip():
        if not cfg.ignore_instructions:
            raise bad_field("instructions", "'instructions' are not supported: the Qwen3-TTS CustomVoice engine "
                                            "behind this API has no style control (leave the field out)",
                            "unsupported_parameter")
        log.info("instructions ignored (SPEECH_API_IGNORE_INSTRUCTIONS=1): %d characters", len(instructions))
    options = {"response_format": _choice(data, "response_format", FORMATS), "speed": _speed(data),
               "stream_format": _choice(data, "stream_format", STREAM_FORMATS),
               "timestamps": _choice(data, "timestamps", TIMESTAMP_CHOICES)}
    if options["timestamps"] == "word" and options["stream_format"] != "sse":
        raise bad_field("timestamps", "word timestamps come as events of an SSE stream: add \"stream_format\": \"sse\"",
                        "unsupported_parameter")
    return SpeechRequest(input=text, voice=voice, language=language,
                         **{k: v for k, v in options.items() if v is not None})  # type: ignore[arg-type]
