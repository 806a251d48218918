"""What a caller says: espeak-ng sentences in several voices and speeds, made up front as 48 kHz
int16 clips (what a browser microphone sends), with where the speech starts and ends in each."""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .harness import speech_wav

RATE = 48000  # WebRTC's Opus rate: what a browser microphone sends
# Short sentences without commas: a comma is a pause the agent's VAD may take as the end of a turn.
SENTENCES = (
    "Hello there how are you today",
    "What is the weather going to be like tomorrow",
    "Tell me a short story about a cat",
    "Can you recommend a good book to read",
    "How far away is the moon from the earth",
    "I would like to plan a trip to the mountains",
    "What time does the train leave in the morning",
    "Please explain how a rainbow is made",
    "Why is the sky blue during the day",
    "Give me one idea for dinner tonight",
    "Thank you that was very helpful",
)
VOICES = ("en-us", "en+f3", "en+m3")
SPEEDS = (140, 155, 170, 190)
ONSET_LEVEL = 0.01 * 32768  # the first sample of an utterance above this is where its speech starts


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    speed: int
    pcm: np.ndarray  # int16 mono at RATE

    @property
    def seconds(self) -> float:
        return len(self.pcm) / RATE

    @property
    def speech_onset_s(self) -> float:
        """Where the speech starts in the clip (espeak-ng leaves a little silence before it)."""
        voiced = np.flatnonzero(np.abs(self.pcm) > ONSET_LEVEL)
        return float(voiced[0]) / RATE if voiced.size else 0.0

    @property
    def speech_end_s(self) -> float:
        """Where the speech ends in the clip: just after its last loud sample (silence follows)."""
        voiced = np.flatnonzero(np.abs(self.pcm) > ONSET_LEVEL)
        return float(voiced[-1] + 1) / RATE if voiced.size else self.seconds


def utterance(text: str, wav: Path, voice: str = "en-us", speed: int = 165) -> Utterance:
    """One utterance, synthesized into `wav` (kept)."""
    speech_wav(text, wav, voice=voice, speed=speed, rate=RATE)
    return Utterance(text, voice, speed, sf.read(str(wav), dtype="int16")[0])


def make_utterances(n: int, workdir: Path) -> list[Utterance]:
    """n utterances cycling through sentences, voices and speeds (each WAV synthesized once)."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"soak: {' and '.join(missing)} not found: the soak speaks with them; install with "
                         f"`sudo apt-get install {' '.join(missing)}` (scripts/test.sh does it as root)")
    workdir.mkdir(parents=True, exist_ok=True)
    cache: dict[tuple[str, str, int], Utterance] = {}
    combos = zip(itertools.cycle(SENTENCES), itertools.cycle(VOICES), itertools.cycle(SPEEDS))
    out = []
    for i, (text, voice, speed) in zip(range(n), combos, strict=False):
        key = (text, voice, speed)
        if key not in cache:
            cache[key] = utterance(text, workdir / f"utt{i:03d}.wav", voice=voice, speed=speed)
        out.append(cache[key])
    return out
