"""The wire both Omni clients speak: one OpenAI-compatible dialect to the same server.

Client construction (no retries of its own: livekit's framework retries), modality filtering of
streamed chunks (vLLM-Omni tags each with its `modality`), the server's queue-wait header, and the
translation of openai SDK errors into the livekit errors the framework's retry logic expects.
"""

from __future__ import annotations

from collections.abc import Mapping

import openai
from livekit.agents import APIConnectionError, APIError, APIStatusError, APITimeoutError
from openai.types.chat import ChatCompletionChunk

from .omni_config import OmniConfig

# what a queueing server in front of the models says about a request's wait (scripts/backends/omni_router.py)
QUEUE_WAIT_HEADER = "X-Queue-Wait-Ms"


def make_client(config: OmniConfig) -> openai.AsyncOpenAI:
    # max_retries=0: livekit's STT.recognize / LLMStream._main_task already retry; retrying here
    # too would multiply the wait before an error reaches the user.
    return openai.AsyncOpenAI(
        base_url=config.api_base,
        api_key=config.api_key,
        max_retries=0,
        timeout=config.request_timeout_s,
    )


def is_text_chunk(chunk: ChatCompletionChunk) -> bool:
    """vLLM-Omni tags every chunk with a top-level `modality`; an "audio" chunk carries a whole
    base64 WAV in delta.content and must never be read as text. Servers without the tag
    (llama.cpp, plain vLLM) send text only."""
    return (chunk.model_extra or {}).get("modality") in (None, "text")


def queue_wait_ms(headers: Mapping[str, str]) -> float | None:
    """How long the server says the request queued (the CPU stand-ins' router sends it), or None."""
    try:
        return round(float(headers[QUEUE_WAIT_HEADER]), 1)
    except (KeyError, ValueError):
        return None


def text_delta(chunk: ChatCompletionChunk) -> tuple[str, bool]:
    """(text, finished) of one streamed chunk; ("", False) for non-text modalities."""
    if not is_text_chunk(chunk):
        return "", False
    text = "".join(c.delta.content or "" for c in chunk.choices if c.delta is not None)
    finished = any(c.finish_reason for c in chunk.choices)
    return text, finished


def to_api_error(exc: openai.OpenAIError, *, url: str, timeout_s: float, stage: str) -> APIError:
    """Translate an openai SDK error into the livekit error the framework's retry logic expects.

    `stage` says how far the request got ("request", "stream"), so a log line tells a refused
    connection apart from a reply cut off halfway.
    """
    if isinstance(exc, openai.APITimeoutError):
        return APITimeoutError(f"{url}: no data for {timeout_s:g} s during {stage} (timed out)")
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = body.get("message") or exc.message
        return APIStatusError(
            f"{url} answered HTTP {exc.status_code}: {detail}",
            status_code=exc.status_code,
            request_id=exc.request_id,
            body=exc.body,
        )
    if isinstance(exc, openai.APIConnectionError):
        # livekit's APIConnectionError.__str__ appends the root cause (ConnectError, ...) itself.
        if stage == "stream":
            return APIConnectionError(f"{url}: connection lost mid-stream")
        return APIConnectionError(f"{url}: no response (connection refused, reset or closed)")
    if isinstance(exc, openai.APIError):
        # An error event inside a 200 SSE stream (vLLM sends `data: {"error": {...}}`).
        body = exc.body if isinstance(exc.body, dict) else {}
        code = body.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        return APIStatusError(
            f"{url} reported an error mid-stream: {exc.message}", status_code=status, body=exc.body
        )
    return APIConnectionError(f"{url}: {type(exc).__name__}: {exc}")


def truncated_stream_error(url: str) -> APIConnectionError:
    # Both vLLM and llama.cpp end every stream with a finish_reason; without one the reply was cut
    # short (connection closed early, or an unsupported modality gave empty `choices`).
    return APIConnectionError(f"{url}: stream ended without a finish_reason (reply truncated)")
