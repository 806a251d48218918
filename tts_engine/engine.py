"""TTSEngine: one thread owns the model; callers open streams from any thread or event loop.

    with TTSEngine(EngineConfig(model="path/to/Qwen3-TTS-12Hz-0.6B-CustomVoice")) as engine:
        stream = engine.open_stream(speaker="ryan", language="english")
        stream.push_text("Hello there."); stream.end_text()
        for packet in stream: play(packet.pcm)          # or: async for packet in stream

Each stream has a priority class (plan.Priority): LIVE, the default of open_stream(), for a call's
reply; STREAMING for an API request sent as it decodes; WHOLE, the default of synthesize(), for a
whole file. The scheduler serves them in that order and keeps live calls ahead of playout; admission
keeps EngineConfig.live_reserve slots free for live calls.

The engine thread loops: admit newly opened streams -> executor.step() (take pushed text, plan_step
decides who advances, the stages run batched across streams, packets go to each stream's channel)
-> sleep only when the plan says there was nothing to do. Nothing here blocks a caller for longer
than a lock acquisition, except synthesize() which waits by design.

Who does what (imports point one way, tests/test_engine_architecture.py checks it): plan.py decides
a step, executor.py carries it out and alone writes the streams' channels from the engine side;
channel.py holds each stream's shared state behind its one lock, stream.py is the caller's face of
it; slots.py owns the free slots; runner.py (step functions) and graph_runner.py (CUDA graphs) do
the device work; frames.py holds the frame math.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
from typing import Any

import numpy as np
import torch

from .audio_packets import Packetizer
from .channel import StreamChannel
from .config import EngineConfig
from .cpu_precision import apply_engine_cpu_threads
from .errors import EngineClosed, InvalidTextError
from .executor import StepExecutor
from .frames import DECODER_RATE
from .graph_runner import StepRunner
from .model_loading import load_model
from .plan import Priority
from .prompt import resolve_voice
from .runner import ModelRunner
from .slots import SlotPool
from .stream import TTSStream
from .text_input import IncrementalTokenizer, SharedTokenizer
from .utterance import Utterance

log = logging.getLogger(__name__)


class TTSEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.cpu_threads = apply_engine_cpu_threads(config)  # before loading: packing uses the threads too
        self.loaded = load_model(config)
        self.text_tokenizer = SharedTokenizer(self.loaded.tokenizer)  # every thread's text goes through it
        self.runner = ModelRunner(self.loaded, config)
        self.slots = SlotPool(config.max_streams, reserve=config.live_reserve)
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._pending: list[Utterance] = []  # opened by callers, not yet seen by the engine thread
        self._ids = itertools.count(1)
        self._closed = False
        self._fatal: BaseException | None = None
        self.steps = StepRunner(self.runner, config.scheduler, config.use_cuda_graphs)
        self._capture_graphs()
        self.executor = StepExecutor(self.runner, self.steps, config.scheduler, self.slots)
        self._queue_prefix_warming()
        self._thread = threading.Thread(target=self._run, name="tts-engine", daemon=True)
        self._thread.start()

    # ---- public API ----------------------------------------------------------------------------

    @property
    def speakers(self) -> list[str]:
        return self.loaded.speakers

    @property
    def languages(self) -> list[str]:
        return self.loaded.languages

    @property
    def is_test_voice(self) -> bool:
        return self.loaded.is_test_voice

    def open_stream(self, speaker: str, language: str = "auto", max_frames: int | None = None,
                    seed: int | None = None, *, priority: Priority = Priority.LIVE) -> TTSStream:
        """Start an utterance whose text will arrive through push_text()/end_text().

        priority: LIVE for a call's reply (the default: the agent's streams are live), STREAMING for
        an API request whose audio goes out as it decodes, WHOLE for one whose caller wants the file.
        A non-live open raises EngineBusy while only the live reserve of slots is free."""
        stream, _channel = self._open(speaker, language, max_frames, seed, streaming=True, priority=priority)
        return stream

    def synthesize(self, text: str, speaker: str, language: str = "auto", max_frames: int | None = None,
                   seed: int | None = None, *, priority: Priority = Priority.WHOLE) -> tuple[np.ndarray, int]:
        """Whole text in, whole float32 waveform at 24 kHz out (the package's non-streaming mode)."""
        stream, channel = self._start_whole_text(text, speaker, language, max_frames, seed, priority)
        for _ in stream:
            pass
        channel.wait_closed()
        return channel.waveform(), DECODER_RATE

    async def asynthesize(self, text: str, speaker: str, language: str = "auto", max_frames: int | None = None,
                          seed: int | None = None, *,
                          priority: Priority = Priority.WHOLE) -> tuple[np.ndarray, int]:
        stream, channel = self._start_whole_text(text, speaker, language, max_frames, seed, priority)
        async for _ in stream:
            pass
        channel.wait_closed()
        return channel.waveform(), DECODER_RATE

    @property
    def running(self) -> bool:
        """True while the engine thread serves streams: False once closed or crashed (health checks)."""
        with self._lock:
            return not self._closed and self._fatal is None and self._thread.is_alive()

    def load(self) -> float:
        """0..1: the share of stream slots in use (what an agent worker reports for dispatch)."""
        return self.slots.load()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pending = len(self._pending)
        ex = self.executor
        underruns, running = dict(ex.underruns), ex.active_by_priority()
        # flat numbers per class, so a metrics exporter that takes the numeric keys sees them all
        by_class = {f"{p.name.lower()}_streams": running[p] for p in Priority}
        by_class.update({f"{p.name.lower()}_underruns": underruns[p] for p in (Priority.LIVE, Priority.STREAMING)})
        return {"active_streams": self.slots.in_use, "pending": pending, "max_streams": self.config.max_streams,
                "live_reserve_slots": self.slots.reserve, "running_utterances": ex.active_count(),
                "steps": ex.step_index, "packets": ex.packets, "underruns": sum(underruns.values()), **by_class,
                "cuda_graphs": self.steps.graph_count,
                "graph_replays": self.steps.graph_replays, "eager_fallbacks": self.steps.eager_fallbacks,
                "graph_capture_error": self.steps.capture_error, **self.runner.device_bytes()}

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._thread.join(timeout=30)

    def __enter__(self) -> TTSEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals -----------------------------------------------------------------------------

    def _wake(self) -> None:
        self._wakeup.set()

    def _capture_graphs(self) -> None:
        try:
            with torch.inference_mode():
                self.steps.capture()
        except Exception as exc:  # a capture problem must cost speed, never the service
            log.exception("CUDA graph capture failed: the engine runs eagerly")
            self.steps.fall_back_to_eager(f"{exc.__class__.__name__}: {exc}")

    def _queue_prefix_warming(self) -> None:
        """Background work: precompute the prompt prefix of every voice while the engine idles."""
        if self.runner.prefixes is None:
            return
        for speaker in self.speakers:
            for language in self.languages:
                voice = resolve_voice(self.loaded.talker_config, speaker, language, self.languages)
                self.executor.background.append(functools.partial(self.runner.warm_prefix, voice))

    def _start_whole_text(self, text: str, speaker: str, language: str, max_frames: int | None,
                          seed: int | None, priority: Priority) -> tuple[TTSStream, StreamChannel]:
        if not isinstance(text, str) or not text.strip():
            raise InvalidTextError("empty text: nothing to synthesize")
        if len(text) > self.config.max_text_chars:
            raise InvalidTextError(f"text has {len(text)} characters; the limit is {self.config.max_text_chars} "
                                   f"(EngineConfig.max_text_chars)")
        stream, channel = self._open(speaker, language, max_frames, seed, streaming=False, priority=priority)
        stream.push_text(text)
        stream.end_text()
        return stream, channel

    def _open(self, speaker: str, language: str, max_frames: int | None, seed: int | None,
              streaming: bool, priority: Priority) -> tuple[TTSStream, StreamChannel]:
        """A new stream and its channel; whole-text (not streaming) streams are offline synthesis."""
        voice = resolve_voice(self.loaded.talker_config, speaker, language, self.languages)
        if max_frames is not None and max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        if not isinstance(priority, Priority):
            raise TypeError(f"priority must be a tts_engine.Priority ({', '.join(p.name for p in Priority)}), "
                            f"got {priority!r}")
        with self._lock:
            if self._closed or self._fatal is not None:
                raise EngineClosed(f"the TTS engine is closed{f' ({self._fatal})' if self._fatal else ''}")
            stream_id = next(self._ids)
            # raises EngineBusy when every slot is held, or (not live) all that are free are the reserve
            slot = self.slots.take(stream_id, use_reserve=priority is Priority.LIVE)
            channel = StreamChannel(stream_id, self.config.max_text_chars, offline=not streaming)
            self._pending.append(Utterance(
                channel=channel, slot=slot, voice=voice, streaming=streaming,
                seed=self.config.seed if seed is None else seed, max_frames=max_frames,
                tokenizer=IncrementalTokenizer(self.text_tokenizer),
                packetizer=Packetizer(output_rate=self.config.output_sample_rate),
                frame_cap=self.config.frame_cap, priority=priority, offline=not streaming))
        self._wake()
        stream = TTSStream(channel, wake=self._wake, release=self.slots.release, decode=self.text_tokenizer.decode)
        return stream, channel

    def _run(self) -> None:
        if self.runner.device.type == "cuda":
            torch.cuda.set_device(self.runner.device)
        try:
            with torch.inference_mode():
                while True:
                    with self._lock:
                        closing = self._closed
                        new, self._pending = self._pending, []
                    self.executor.admit(new)
                    if closing:
                        break
                    self._wakeup.clear()
                    idle_for = self.executor.step()
                    if idle_for is not None:
                        self._wakeup.wait(timeout=idle_for)
        except BaseException as exc:  # the engine thread must never die silently
            log.exception("TTS engine thread crashed")
            with self._lock:
                self._fatal = exc
        finally:
            with self._lock:
                self._closed = True
                pending, self._pending = self._pending, []
            # streams opened meanwhile end the same way as the running ones: the executor ends them all
            self.executor.admit(pending)
            self.executor.abort_all(self._fatal or EngineClosed("the TTS engine was closed"))
