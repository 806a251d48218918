"""livekit-agents TTS plugin over the in-process streaming engine.

LLM text goes into the engine stream the moment it arrives (the engine holds back at most an
unfinished word); every 20 ms packet goes to the emitter the moment the engine delivers it. All
sessions of a worker share ONE TTSEngine (one model copy on the GPU): the engine is passed in, never
created here. Interruption is task cancellation: cancelling _run cancels the engine stream, which
frees its slot at once and drops its undelivered audio.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectOptions,
    APIError,
    APIStatusError,
    tts,
    utils,
)

from tts_engine import EngineBusy, TTSEngine, TTSEngineError, TTSStream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoiceOptions:
    """Which built-in voice speaks. Copied per synthesis so later changes never alter a running one."""

    speaker: str = "ryan"
    language: str = "english"


@dataclass
class SynthesisTiming:
    """What one synthesis measured (time.monotonic seconds). `on_timing` gets it twice: at the
    first audio packet (so latency lands on the turn being answered, even if it is cut later) and
    when the synthesis ends (finished_at set; error set if it failed)."""

    synthesis_id: str = ""
    first_text_at: float | None = None
    first_audio_at: float | None = None  # first packet ready in the engine
    finished_at: float | None = None
    text: str = ""
    packets: int = 0
    engine_stream: TTSStream | None = None
    error: str | None = None

    @property
    def ttfa_ms(self) -> float | None:
        if self.first_text_at is None or self.first_audio_at is None:
            return None
        return (self.first_audio_at - self.first_text_at) * 1000


class EngineTTS(tts.TTS):
    def __init__(self, engine: TTSEngine, voice: VoiceOptions | None = None,
                 on_timing: Callable[[SynthesisTiming], None] | None = None,
                 on_stream_open: Callable[[SynthesisTiming], None] | None = None) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=True),
                         sample_rate=engine.config.output_sample_rate, num_channels=1)
        self.engine = engine
        self.voice = voice or VoiceOptions()
        self.on_timing = on_timing  # the tracer's hook: called once per synthesis, also when cancelled
        self.on_stream_open = on_stream_open  # the duplex controller's hook: the live engine stream
        self.active_streams: set[EngineSynthesizeStream] = set()

    @property
    def model(self) -> str:
        return self.engine.loaded.name

    @property
    def provider(self) -> str:
        return "in-process-qwen3-tts"

    def update_voice(self, voice: VoiceOptions) -> None:
        self.voice = voice

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> EngineSynthesizeStream:
        return EngineSynthesizeStream(tts=self, conn_options=conn_options)

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
                   ) -> tts.ChunkedStream:
        return self._synthesize_with_stream(text, conn_options=conn_options)


class EngineSynthesizeStream(tts.SynthesizeStream):
    _tts: EngineTTS
    engine_stream: TTSStream | None = None  # the live engine stream (the duplex controller cancels it)

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        plugin = self._tts
        voice = plugin.voice  # snapshot: a voice change mid-reply applies to the next reply
        timing = SynthesisTiming(synthesis_id=utils.shortuuid())
        output_emitter.initialize(request_id=utils.shortuuid(), sample_rate=plugin.sample_rate, num_channels=1,
                                  mime_type="audio/pcm", frame_size_ms=20, stream=True)
        output_emitter.start_segment(segment_id=utils.shortuuid())
        engine_stream: TTSStream | None = None
        plugin.active_streams.add(self)

        def open_engine_stream() -> TTSStream:
            try:
                stream = plugin.engine.open_stream(speaker=voice.speaker, language=voice.language)
            except EngineBusy as exc:
                raise APIStatusError(str(exc), status_code=503, retryable=True) from exc
            except TTSEngineError as exc:
                raise APIError(f"TTS engine refused the request: {exc}", retryable=False) from exc
            timing.engine_stream = stream
            self.engine_stream = stream
            if plugin.on_stream_open is not None:
                plugin.on_stream_open(timing)
            return stream

        async def forward_text(stream_ready: asyncio.Future) -> None:
            nonlocal engine_stream
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    break  # one reply = one segment; the LLM is done
                if not item:
                    continue
                if engine_stream is None:
                    engine_stream = open_engine_stream()
                    timing.first_text_at = time.monotonic()
                    self._mark_started()
                    stream_ready.set_result(engine_stream)
                engine_stream.push_text(item)
                timing.text += item
            if engine_stream is None:
                stream_ready.set_result(None)  # no text at all: nothing to say
            else:
                engine_stream.end_text()

        async def forward_audio(stream_ready: asyncio.Future) -> None:
            stream = await stream_ready
            if stream is None:
                return
            async for packet in stream:
                if timing.first_audio_at is None:
                    timing.first_audio_at = packet.ready_at
                    if plugin.on_timing is not None:
                        plugin.on_timing(timing)
                timing.packets += 1
                frame = rtc.AudioFrame(data=packet.tobytes(), sample_rate=packet.sample_rate, num_channels=1,
                                       samples_per_channel=len(packet.pcm))
                output_emitter.push_frame(frame)

        stream_ready: asyncio.Future = asyncio.get_running_loop().create_future()
        tasks = [asyncio.create_task(forward_text(stream_ready), name="tts-forward-text"),
                 asyncio.create_task(forward_audio(stream_ready), name="tts-forward-audio")]
        try:
            await asyncio.gather(*tasks)
            if timing.text.strip() and timing.packets == 0:
                # `cancelled`, not stats.finish_reason: the engine thread records the reason at its
                # next step, which may come after iteration here has already ended
                if engine_stream is not None and engine_stream.cancelled:
                    # a barge-in before the first frame: nothing to say is the right outcome, and 499
                    # is how livekit is told so (else it reports "no audio frames were pushed")
                    raise APIStatusError("cancelled before the first audio frame", status_code=499,
                                         retryable=False)
                reason = engine_stream.stats.finish_reason if engine_stream is not None else "no engine stream"
                log.warning("synthesis of %r ended without audio (engine stream: %s)", timing.text, reason)
            output_emitter.end_segment()
        except TTSEngineError as exc:
            timing.error = str(exc)
            raise APIError(f"TTS engine stream failed: {exc}", retryable=False) from exc
        except APIError as exc:
            if not (isinstance(exc, APIStatusError) and exc.status_code == 499):  # 499: cut, not failed
                timing.error = str(exc)
            raise
        finally:
            await utils.aio.cancel_and_wait(*tasks)
            if engine_stream is not None and not engine_stream.done:
                engine_stream.cancel()  # barge-in or error: stop the engine at its next step
            plugin.active_streams.discard(self)
            timing.finished_at = time.monotonic()
            if plugin.on_timing is not None:
                plugin.on_timing(timing)
