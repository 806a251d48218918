"""Speech-to-text through an Omni server, as a non-streaming livekit `stt.STT`.

AgentSession wraps a non-streaming STT in `stt.StreamAdapter(stt, vad)` and calls `recognize()`
once per VAD end of speech, so one utterance = one HTTP request here. The framework owns retries
(`conn_options.max_retry`); the HTTP client never retries on its own (omni_wire.make_client).
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any, cast

import openai
from livekit.agents import NOT_GIVEN, APIConnectOptions, NotGivenOr, stt, utils

from .hooks import PipelineHooks
from .omni_config import OmniConfig
from .omni_wire import make_client, queue_wait_ms, text_delta, to_api_error, truncated_stream_error

logger = logging.getLogger(__name__)


class OmniSTT(stt.STT):
    """One HTTP request per utterance; each request's wall time and queue wait go to the hooks
    (the per-turn tracer); `last_request_ms` is the latest one's, set after failures too."""

    def __init__(self, config: OmniConfig, *, client: openai.AsyncOpenAI | None = None,
                 hooks: PipelineHooks | None = None) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.hooks = hooks
        self._cfg = config
        self._client = client or make_client(config)
        self._owns_client = client is None
        self.last_request_ms: float | None = None

    @property
    def config(self) -> OmniConfig:
        return self._cfg

    @property
    def model(self) -> str:
        return self._cfg.stt_model_name

    @property
    def provider(self) -> str:
        return "vllm-omni" if self._cfg.stt_style == "chat_audio" else "openai-compatible"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.close()

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        # conn_options only drive the framework's retries; the HTTP timeout is request_timeout_s.
        lang = str(language) if utils.is_given(language) and language else self._cfg.stt_language
        if isinstance(buffer, list) and not buffer:
            return _final("", lang)
        wav = utils.merge_frames(buffer).to_wav_bytes()

        t0 = time.perf_counter()
        text, error = "", None
        # local, not instance state: recognitions of overlapping utterances run concurrently
        queue_ms: float | None = None  # this request's wait at a busy server, if it said
        try:
            if self._cfg.stt_style == "chat_audio":
                text, queue_ms = await self._chat_audio(wav, lang)
            else:
                text, queue_ms = await self._transcriptions(wav, lang)
        except Exception as exc:
            error = str(exc) or exc.__class__.__name__
            raise
        finally:
            request_ms = (time.perf_counter() - t0) * 1000.0
            self.last_request_ms = request_ms
            if self.hooks is not None:
                self.hooks.stt_finished(request_ms, text.strip(), error, queue_ms)
        logger.debug("transcribed %d WAV bytes in %.0f ms: %r", len(wav), request_ms, text)
        return _final(text.strip(), lang)

    async def _chat_audio(self, wav: bytes, language: str) -> tuple[str, float | None]:
        """The transcript and the server's queue wait (X-Queue-Wait-Ms), if it sent one."""
        url = f"{self._cfg.api_base}/chat/completions"
        data_uri = "data:audio/wav;base64," + base64.b64encode(wav).decode("ascii")
        content = [
            {"type": "audio_url", "audio_url": {"url": data_uri}},
            {"type": "text", "text": self._cfg.transcription_prompt(language)},
        ]
        parts: list[str] = []
        finished = False
        queue_ms: float | None = None
        stage = "request"
        try:
            stream: Any = await self._client.chat.completions.create(  # an AsyncStream (stream=True)
                model=self._cfg.stt_model_name,
                messages=cast(Any, [{"role": "user", "content": content}]),
                stream=True,
                modalities=["text"],
                temperature=0.0,  # a transcript should not vary between identical requests
            )
            stage = "stream"
            queue_ms = queue_wait_ms(stream.response.headers)
            # `async with` closes the HTTP response if this task is cancelled mid-read.
            async with stream:
                async for chunk in stream:
                    text, done = text_delta(chunk)
                    parts.append(text)
                    finished = finished or done
        except openai.OpenAIError as e:
            raise to_api_error(e, url=url, timeout_s=self._cfg.request_timeout_s, stage=stage) from e
        if not finished:
            raise truncated_stream_error(url)
        return "".join(parts), queue_ms

    async def _transcriptions(self, wav: bytes, language: str) -> tuple[str, float | None]:
        url = f"{self._cfg.api_base}/audio/transcriptions"
        extra = {"prompt": self._cfg.stt_prompt} if self._cfg.stt_prompt else {}
        try:
            raw: Any = await self._client.audio.transcriptions.with_raw_response.create(  # type: ignore[call-overload]
                file=("audio.wav", wav, "audio/wav"),
                model=self._cfg.stt_model_name,
                language=language.split("-")[0],  # Whisper-style servers want ISO-639-1
                response_format="json",
                **extra,
            )
            queue_ms = queue_wait_ms(raw.headers)
            resp: Any = raw.parse()
        except openai.OpenAIError as e:
            raise to_api_error(e, url=url, timeout_s=self._cfg.request_timeout_s, stage="request") from e
        return resp.text or "", queue_ms


def _final(text: str, language: str) -> stt.SpeechEvent:
    # An empty FINAL_TRANSCRIPT is how "nothing was said" is reported: StreamAdapter drops it
    # and no user turn is created.
    return stt.SpeechEvent(
        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
        request_id=utils.shortuuid(),
        alternatives=[stt.SpeechData(language=cast(Any, language), text=text)],
    )
