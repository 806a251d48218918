"""Streaming replies from an Omni (or any OpenAI-compatible) chat server, as a livekit `llm.LLM`.

Interruption == cancellation: on barge-in livekit cancels `LLMStream._task`; the `async with` on
the openai stream then closes the HTTP response so the server stops generating at once.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import openai
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
    llm,
    utils,
)

from .hooks import PipelineHooks
from .omni_config import LLMConfig, OmniConfig
from .omni_wire import (
    is_text_chunk,
    make_client,
    queue_wait_ms,
    text_delta,
    to_api_error,
    truncated_stream_error,
)

logger = logging.getLogger(__name__)

_SYSTEM_ROLES = ("system", "developer")


# ------------------------------------------------------------------------------ request history


def content_text(content: Any) -> str:
    """The text of an OpenAI message content (a string, a list of parts, or None)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    # chars / 4 is close enough for English with BPE tokenizers; no tokenizer is loaded here.
    return sum(math.ceil(len(content_text(m.get("content"))) / 4) for m in messages)


def first_kept_turn(n_turns: int, max_turns: int) -> int:
    """Index of the oldest turn a request carries when the conversation has n_turns.

    Dropping one turn per new turn would change the request's first turn every time, and the
    server's prefix cache (vLLM's automatic prefix caching, llama.cpp's prompt cache) could reuse
    nothing but the system prompt. So turns are dropped in blocks of half the limit: the start of
    the history moves once per max_turns // 2 turns, and every request in between extends the
    previous one. A request carries between max_turns - block + 1 and max_turns turns.
    """
    if n_turns <= max_turns:
        return 0
    block = max(1, max_turns // 2)
    return -(-(n_turns - max_turns) // block) * block  # excess rounded up to whole blocks


def build_messages(
    chat_ctx: llm.ChatContext, config: LLMConfig, *, plain_string_content: bool = False
) -> list[dict[str, Any]]:
    """OpenAI messages for one request: one system message first, then the newest turns that fit.

    A turn is a user message plus everything up to the next user message, so dropping whole
    turns keeps the history starting on a user message (some chat templates demand it).
    """
    raw, _ = chat_ctx.to_provider_format("openai")

    # Qwen-style chat templates reject a system message anywhere but first, so every system
    # (or livekit "developer") message is merged into one leading message.
    system_texts = [content_text(m.get("content")) for m in raw if m.get("role") in _SYSTEM_ROLES]
    system_text = "\n\n".join(t for t in system_texts if t) or config.system_prompt
    head = [{"role": "system", "content": system_text}] if system_text else []

    turns: list[list[dict[str, Any]]] = []
    for msg in raw:
        if msg.get("role") in _SYSTEM_ROLES:
            continue
        if msg.get("role") == "user" or not turns:
            turns.append([])
        turns[-1].append(msg)

    kept = turns[first_kept_turn(len(turns), config.history_max_turns) :]
    # The newest turn stays even when it alone is over budget: answering without the user's
    # words would be worse than an over-long request.
    while len(kept) > 1 and estimate_tokens(head + [m for t in kept for m in t]) > config.history_max_tokens:
        kept = kept[1:]
    if len(kept) < len(turns):
        logger.debug("history: kept %d of %d turns", len(kept), len(turns))

    messages = head + [m for t in kept for m in t]
    if plain_string_content:
        messages = [_flatten(m) for m in messages]
    return messages


def _flatten(msg: dict[str, Any]) -> dict[str, Any]:
    # llama.cpp-style servers answer 422 to list-valued system content and 500 to text-part lists.
    if isinstance(msg.get("content"), list):
        return {**msg, "content": content_text(msg["content"])}
    return msg


# -------------------------------------------------------------------------------------- the LLM


class OmniLLM(llm.LLM):
    """`last_ttft_ms`: time from sending the latest request to its first non-empty text delta
    (None until one arrives), for the per-turn tracer."""

    def __init__(
        self,
        omni: OmniConfig,
        config: LLMConfig | None = None,
        *,
        client: openai.AsyncOpenAI | None = None,
        hooks: PipelineHooks | None = None,
    ) -> None:
        super().__init__()
        self.hooks = hooks
        self._omni = omni
        self._cfg = config or LLMConfig()
        self._client = client or make_client(omni)
        self._owns_client = client is None
        self._warned_tools = False
        self.last_ttft_ms: float | None = None

    @property
    def config(self) -> LLMConfig:
        return self._cfg

    @property
    def omni_config(self) -> OmniConfig:
        return self._omni

    @property
    def client(self) -> openai.AsyncOpenAI:
        return self._client

    @property
    def model(self) -> str:
        return self._omni.model

    @property
    def provider(self) -> str:
        return "vllm-omni" if self._cfg.send_modalities else "openai-compatible"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> OmniLLMStream:
        if tools and not self._warned_tools:
            self._warned_tools = True
            logger.warning("OmniLLM does not implement tool calls; %d tools are ignored", len(tools))
        extra = dict(extra_kwargs) if utils.is_given(extra_kwargs) else {}
        return OmniLLMStream(
            self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options, extra=extra
        )

    async def _prewarm_impl(self) -> None:
        # A cheap request leaves a keep-alive connection in the pool before the first turn.
        await self._client.models.list()

    async def aclose(self) -> None:
        await super().aclose()
        if self._owns_client:
            await self._client.close()


class OmniLLMStream(llm.LLMStream):
    _llm: OmniLLM

    def __init__(
        self,
        llm_: OmniLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
        extra: dict[str, Any],
    ) -> None:
        super().__init__(llm_, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._extra = extra
        # Never retry once text went out: the retry would speak the reply's start a second time.
        # A cut stream then surfaces as an error instead of a duplicated or truncated answer.
        self._retry_on_chunk_sent = False
        self.ttft_ms: float | None = None

    def _request_kwargs(self) -> dict[str, Any]:
        cfg, omni = self._llm.config, self._llm.omni_config
        kwargs: dict[str, Any] = {
            "model": omni.model,
            "messages": build_messages(self._chat_ctx, cfg, plain_string_content=omni.plain_string_content),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": cfg.max_tokens,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
        }
        if cfg.seed is not None:
            kwargs["seed"] = cfg.seed
        if cfg.send_modalities:
            kwargs["modalities"] = ["text"]  # else vLLM-Omni also streams base64 audio
        extra_body = {**cfg.extra_body, **self._extra}
        if extra_body:
            kwargs["extra_body"] = extra_body
        return kwargs

    async def _run(self) -> None:
        omni = self._llm.omni_config
        url = f"{omni.api_base}/chat/completions"
        kwargs = self._request_kwargs()
        finished = False
        stage = "request"
        self._llm.last_ttft_ms = None  # a request that yields no text must not report the previous one's
        t0 = time.perf_counter()
        hooks = self._llm.hooks
        if hooks is not None:
            hooks.llm_started(self)
        try:
            stream = await self._llm.client.chat.completions.create(**kwargs)
            stage = "stream"
            queue_ms = queue_wait_ms(stream.response.headers)
            if hooks is not None and queue_ms is not None:
                hooks.llm_queued(self, queue_ms)
            async with stream:
                async for chunk in stream:
                    text, done = text_delta(chunk)
                    finished = finished or done
                    if text:
                        if self.ttft_ms is None:
                            self.ttft_ms = (time.perf_counter() - t0) * 1000.0
                            self._llm.last_ttft_ms = self.ttft_ms
                            if hooks is not None:
                                hooks.llm_first_token(self)
                        delta = llm.ChoiceDelta(role="assistant", content=text)
                        self._event_ch.send_nowait(llm.ChatChunk(id=chunk.id, delta=delta))
                    if chunk.usage is not None and is_text_chunk(chunk):
                        self._event_ch.send_nowait(llm.ChatChunk(id=chunk.id, usage=_usage(chunk.usage)))
        except openai.OpenAIError as e:
            error = to_api_error(e, url=url, timeout_s=omni.request_timeout_s, stage=stage)
            if hooks is not None:
                hooks.llm_finished(self, str(error))
            raise error from e
        if not finished:
            error = truncated_stream_error(url)
            if hooks is not None:
                hooks.llm_finished(self, str(error))
            raise error
        if hooks is not None:
            hooks.llm_finished(self, None)


def _usage(u: Any) -> llm.CompletionUsage:
    return llm.CompletionUsage(
        completion_tokens=u.completion_tokens or 0,
        prompt_tokens=u.prompt_tokens or 0,
        total_tokens=u.total_tokens or 0,
    )
