"""Adaptive endpointing: a local end-of-turn model decides how long the agent waits after a pause.

With the VAD alone, the agent must wait out any pause long enough that a person who only draws
breath mid-sentence is not cut off (`VADConfig.min_silence_s`, 0.35 s), and every turn pays it.
With the turn model, Silero ends a segment after a short pause (`TurnConfig.smart_turn_min_silence_s`,
0.2 s); livekit then asks this module's detector how likely the turn is over: Smart Turn v3.2 (a
Whisper-encoder classifier, 8.7 MB ONNX, CPU, ~40 ms) listens to the last 8 s of the user's audio
and answers. Likely -> the agent answers after `endpointing_min_delay_s`; unlikely -> livekit waits
`smart_turn_max_delay_s` longer for the user to go on (speech resuming cancels the wait).

The model file is installed by scripts/install_turn_model.sh (from the pipecat-ai wheel on PyPI);
without it the agent keeps VAD-only endpointing and says so.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import vad as lk_vad

log = logging.getLogger(__name__)

MODEL_RATE = 16000
MODEL_WINDOW_S = 8  # the model hears the last 8 s (left-padded with silence when shorter)


def resample(pcm: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample int16 mono with livekit's native (soxr) resampler, flushing its tail."""
    resampler = rtc.AudioResampler(input_rate=rate_in, output_rate=rate_out, num_channels=1,
                                   quality=rtc.AudioResamplerQuality.HIGH)
    frame = rtc.AudioFrame(data=pcm.tobytes(), sample_rate=rate_in, num_channels=1,
                           samples_per_channel=len(pcm))
    out = [*resampler.push(frame), *resampler.flush()]
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out]).astype(np.int16)


class SmartTurnModel:
    """Smart Turn v3.x: 16 kHz mono float audio -> probability that the speaker has finished."""

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort
        from transformers import WhisperFeatureExtractor

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Smart Turn model not found at {path}: run scripts/install_turn_model.sh "
                                    "(or set AGENT_END_OF_TURN=vad)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one short inference per pause; the TTS engine needs the cores
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self._features = WhisperFeatureExtractor(chunk_length=MODEL_WINDOW_S)
        self.path = path

    def __call__(self, audio: np.ndarray) -> float:
        n = MODEL_RATE * MODEL_WINDOW_S
        audio = np.asarray(audio, dtype=np.float32)[-n:]
        audio = np.pad(audio, (n - len(audio), 0))
        features = self._features(audio, sampling_rate=MODEL_RATE, padding="max_length", max_length=n,
                                  truncation=True, do_normalize=True, return_tensors="np").input_features
        (logits,) = self._session.run(None, {"input_features": features.astype(np.float32)})
        return float(np.asarray(logits).reshape(-1)[0])


class TurnAudio:
    """The user's last `MODEL_WINDOW_S` seconds at 16 kHz, fed window by window from the session's
    VAD events (agent/session/vad_tap.py); `at_end_of_speech()` is that audio as it was when the VAD last
    ended a segment (what the model must judge: speech up to the pause, not what came after)."""

    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self._samples = 0
        self._at_end: np.ndarray | None = None
        self._lock = threading.Lock()  # fed on the event loop, read from the inference thread

    def on_vad_event(self, ev: lk_vad.VADEvent) -> None:
        if ev.type == lk_vad.VADEventType.INFERENCE_DONE:
            for frame in ev.frames:
                pcm = np.frombuffer(frame.data, dtype=np.int16)
                if frame.sample_rate != MODEL_RATE:
                    pcm = resample(pcm, frame.sample_rate, MODEL_RATE)
                self._append(pcm.astype(np.float32) / 32768.0)
        elif ev.type == lk_vad.VADEventType.END_OF_SPEECH:
            with self._lock:
                self._at_end = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

    def _append(self, pcm: np.ndarray) -> None:
        with self._lock:
            self._chunks.append(pcm)
            self._samples += len(pcm)
            while self._samples - len(self._chunks[0]) >= MODEL_RATE * MODEL_WINDOW_S:
                self._samples -= len(self._chunks.popleft())

    def at_end_of_speech(self) -> np.ndarray | None:
        with self._lock:
            return self._at_end


class SmartTurnDetector:
    """livekit's turn-detector interface (agents/voice/turn.py `_TurnDetector`) over Smart Turn:
    the text it is handed is ignored; the model listens to the session's own audio."""

    def __init__(self, model: SmartTurnModel, audio: TurnAudio, threshold: float,
                 on_prediction: Callable[[float], None] | None = None) -> None:
        self._model = model
        self._audio = audio
        self._threshold = threshold
        self._on_prediction = on_prediction  # the tracer: each turn's verdict goes into its trace
        self.predictions: list[float] = []  # every probability it gave

    @property
    def model(self) -> str:
        return self._model.path.name

    @property
    def provider(self) -> str:
        return "local"

    async def unlikely_threshold(self, language: Any) -> float | None:
        return self._threshold

    async def supports_language(self, language: Any) -> bool:
        return True  # an audio model: prosody, not a language's words

    async def predict_end_of_turn(self, chat_ctx: Any, *, timeout: float | None = None) -> float:
        audio = self._audio.at_end_of_speech()
        if audio is None or not len(audio):
            return 1.0  # nothing heard through the VAD (a typed turn, say): do not hold the reply back
        probability = await asyncio.to_thread(self._model, audio)
        self.predictions.append(probability)
        if self._on_prediction is not None:
            self._on_prediction(probability)
        log.debug("end of turn probability %.3f", probability)
        return probability
