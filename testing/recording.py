"""A speaker stand-in for headless runs: the agent's paced output, recording what it played and when
(tests and offline runs inspect it). The real sink is agent/transport/audio_output.py's `PacedAudioOutput`."""

from __future__ import annotations

import io as _pyio
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
from livekit import rtc

from agent.transport.audio_output import PacedAudioOutput


class RecordingAudioOutput(PacedAudioOutput):
    """A PacedAudioOutput that also keeps every played frame with its play time (monotonic)."""

    def __init__(self, sample_rate: int = 24000, on_play: Callable[[rtc.AudioFrame], None] | None = None,
                 *, label: str = "RecordingAudioOutput", can_pause: bool = True) -> None:
        super().__init__(sample_rate, on_play, label=label, can_pause=can_pause)
        self.played: list[tuple[float, rtc.AudioFrame]] = []

    def _frame_played(self, frame: rtc.AudioFrame, played_at: float) -> None:
        self.played.append((played_at, frame))

    def clear_recording(self) -> None:
        self.played.clear()

    def played_audio(self, *, timeline: bool = False) -> np.ndarray:
        """Everything played, as int16 mono.

        timeline=False: the frames back to back. timeline=True: each frame placed at its play
        time relative to the first one, with silence where nothing played (pauses, gaps).
        """
        if not self.played:
            return np.zeros(0, dtype=np.int16)
        chunks = [np.frombuffer(f.data, dtype=np.int16) for _, f in self.played]
        if not timeline:
            return np.concatenate(chunks)
        t_first = self.played[0][0]
        starts = [round((t - t_first) * self._rate) for t, _ in self.played]
        out = np.zeros(max(s + len(c) for s, c in zip(starts, chunks, strict=True)), dtype=np.int16)
        for s, c in zip(starts, chunks, strict=True):
            out[s:s + len(c)] = c  # lateness jitter can overlap a neighbour by a few samples
        return out

    def wav_bytes(self, *, timeline: bool = False) -> bytes:
        buf = _pyio.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self._rate)
            w.writeframes(self.played_audio(timeline=timeline).tobytes())
        return buf.getvalue()

    def write_wav(self, path: str | Path, *, timeline: bool = False) -> Path:
        path = Path(path)
        path.write_bytes(self.wav_bytes(timeline=timeline))
        return path
