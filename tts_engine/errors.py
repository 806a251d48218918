"""Errors the engine raises to its callers. Each message says what was wrong and what is valid."""

from __future__ import annotations


class TTSEngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class UnsupportedModelError(TTSEngineError):
    """The checkpoint is of a kind the engine cannot run (yet), or is missing."""


class UnknownSpeakerError(TTSEngineError, ValueError):
    """The requested speaker is not one of the checkpoint's built-in voices."""


class UnknownLanguageError(TTSEngineError, ValueError):
    """The requested language is not supported by the checkpoint."""


class InvalidTextError(TTSEngineError, ValueError):
    """Text that cannot be synthesized: empty, or longer than the configured limit."""


class EngineBusy(TTSEngineError):
    """Every stream slot is taken; the caller should retry later or route elsewhere."""


class EngineClosed(TTSEngineError):
    """The engine was closed (or its thread died); it takes no new work."""


class StreamError(TTSEngineError):
    """A stream failed inside the engine; the message carries the cause. Other streams go on."""
