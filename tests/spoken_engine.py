"""A stand-in for the TTS engine whose voice is speech: espeak-ng says the reply.

Only for tests of what the agent does with its OWN voice coming back through the microphone (echo,
self-interruption). The tiny random-weight test voice is noise that Silero never takes for speech
(its speech probability stays under 0.02), so an echo test with it could not fail; a real Qwen3-TTS
checkpoint cannot be downloaded here. It implements the part of `TTSEngine`'s stream API that the
agent's TTS plugin uses (open_stream -> push_text / end_text / async iteration of 20 ms packets /
cancel / spoken_text), and speaks once the text has ended.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from livekit.agents.voice import io

from agent.session.turn_end import resample
from tts_engine.stream import AudioPacket

RATE = 24000
PACKET = RATE // 50  # 20 ms


def espeak_pcm(text: str, voice: str = "en+m3", speed: int = 170) -> np.ndarray:
    """int16 mono speech at 24 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "say.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True)
        pcm, rate = sf.read(str(wav), dtype="int16")
    return resample(pcm, rate, RATE)


@dataclass
class _Stats:
    finish_reason: str | None = None


@dataclass
class SpokenStream:
    id: int
    text: str = ""
    cancelled: bool = False
    stats: _Stats = field(default_factory=_Stats)
    _queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    _task: asyncio.Task | None = None

    @property
    def done(self) -> bool:
        return self.stats.finish_reason is not None

    def push_text(self, chunk: str) -> None:
        self.text += chunk

    def end_text(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._speak())

    async def _speak(self) -> None:
        pcm = await asyncio.to_thread(espeak_pcm, self.text)
        for seq, start in enumerate(range(0, len(pcm) - PACKET + 1, PACKET)):
            if self.cancelled:
                return
            self._queue.put_nowait(AudioPacket(pcm=pcm[start:start + PACKET], sample_rate=RATE, seq=seq,
                                               frame=seq // 4, ready_at=time.monotonic()))
        self.stats.finish_reason = "eos"
        self._queue.put_nowait(None)

    def cancel(self) -> None:
        if self.stats.finish_reason is None:
            self.cancelled = True
            self.stats.finish_reason = "cancelled"
            self._queue.put_nowait(None)

    def spoken_text(self, seconds_played: float) -> str:
        return self.text  # no alignment: the echo tests read no history

    def __aiter__(self) -> SpokenStream:
        return self

    async def __anext__(self) -> AudioPacket:
        packet = await self._queue.get()
        if packet is None:
            raise StopAsyncIteration
        return packet


@dataclass(frozen=True)
class _Config:
    output_sample_rate: int = RATE


@dataclass(frozen=True)
class _Loaded:
    name: str = "espeak-ng (test stand-in)"


class SpokenEngine:
    config = _Config()
    loaded = _Loaded()
    is_test_voice = False

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def open_stream(self, speaker: str, language: str = "auto") -> SpokenStream:
        return SpokenStream(id=next(self._ids))


class EchoPath:
    """What the agent plays comes back into the scripted microphone `delay_s` later at `gain`:
    a loudspeaker-to-microphone path (with whatever echo cancellation left of it)."""

    def __init__(self, mic, speaker: io.AudioOutput, gain: float, delay_s: float) -> None:
        self.mic = mic
        self.gain = gain
        self.delay_s = delay_s
        self.frames = 0
        speaker.add_frame_tap(self._played)

    def _played(self, frame) -> None:
        pcm = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) * self.gain
        self.mic.schedule(pcm.astype(np.int16), at_s=self.mic.position_s + self.delay_s, sample_rate=frame.sample_rate)
        self.frames += 1
