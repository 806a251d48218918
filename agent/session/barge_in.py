"""Barge-in as one typed contract: what a barge-in is, how it can end, and the policy that decides.

The duplex controller (agent/session/duplex.py) is the only code that acts on a barge-in: it alone pauses,
resumes and clears the output and cancels engine streams. Transports never decide; they react to
the output's typed playback events (agent/transport/audio_output.py: PlaybackEvent). Traces, metrics and the
page receive the outcome's string value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

# BargeIn.paused_by when no early pause came first: the VAD's start of speech silenced the reply
PAUSED_AT_START_OF_SPEECH = "start_of_speech"


class BargeInOutcome(enum.Enum):
    PENDING = "pending"  # speech started over the reply; the policy has not decided yet
    CUT = "cut"  # the reply was stopped: its queued audio dropped, its LLM and TTS cancelled
    FALSE_RESUMED = "false_resumed"  # too short to count: the reply played on from where it paused
    FALSE_DROPPED = "false_dropped"  # too short to count, and the policy cut the reply anyway


class BargeInPolicy(Protocol):
    """How much speech over a reply stops it, and what too little speech does."""

    @property
    def min_speech_s(self) -> float:
        """Speech needed before the reply is cut (0: cut on the VAD's start of speech)."""
        ...

    def on_short_speech(self) -> BargeInOutcome:
        """The user stopped before `min_speech_s`: FALSE_RESUMED or FALSE_DROPPED."""
        ...


@dataclass(frozen=True)
class ImmediateCut:
    """Any speech over the reply stops it at once."""

    min_speech_s: float = 0.0

    def on_short_speech(self) -> BargeInOutcome:
        return BargeInOutcome.CUT  # never asked: there is no minimum to fall short of


@dataclass(frozen=True)
class MinimumSpeech:
    """Backchannel tolerance: "mm-hm" under `min_speech_s` lets the reply play on."""

    min_speech_s: float

    def on_short_speech(self) -> BargeInOutcome:
        return BargeInOutcome.FALSE_RESUMED


@dataclass(frozen=True)
class MinimumSpeechNoResume:
    """Speech under `min_speech_s` makes no user turn, but the reply stays stopped."""

    min_speech_s: float

    def on_short_speech(self) -> BargeInOutcome:
        return BargeInOutcome.FALSE_DROPPED


@dataclass
class BargeIn:
    """One barge-in, in time.monotonic seconds."""

    detected_at: float  # the VAD's START_OF_SPEECH reached the controller
    silent_at: float  # when no more agent audio could be heard (end of the frame in flight)
    while_state: str
    onset_at: float | None = None  # when the user's speech really began (the VAD backdates its start)
    paused_at: float | None = None  # the output was silenced (an early pause, or at detection)
    # what silenced it first: "level" (a loud microphone frame), "vad" (a hot VAD window: both early
    # pauses) or PAUSED_AT_START_OF_SPEECH (the VAD's confirmation itself)
    paused_by: str = PAUSED_AT_START_OF_SPEECH
    outcome: BargeInOutcome = BargeInOutcome.PENDING
    cut_at: float | None = None
    # what was being said when the user cut in: a cut stops exactly these, never a reply that
    # started later (e.g. livekit answering the interrupting words before our VAD saw their end)
    speech: Any = None  # livekit SpeechHandle
    engine_streams: list = field(default_factory=list)

    @property
    def cancel_to_silence_ms(self) -> float:
        """Detection -> silence on our side: only the drain of the frame already handed over."""
        return max(0.0, (self.silent_at - self.detected_at) * 1000)

    @property
    def onset_to_silence_ms(self) -> float | None:
        """The user's speech onset -> no more agent audio leaving the agent (the wire and the
        listener's jitter buffer come on top: scripts/bench_duplex.py measures those at the listener)."""
        return None if self.onset_at is None else max(0.0, (self.silent_at - self.onset_at) * 1000)

    @property
    def detect_ms(self) -> float | None:
        """The user's speech onset -> the VAD's START_OF_SPEECH (min_speech_s, windows, inference)."""
        return None if self.onset_at is None else max(0.0, (self.detected_at - self.onset_at) * 1000)

    def clock(self) -> dict[str, float]:
        """Its moments on the monotonic clock: barge_in_onset (the true speech onset), _paused, _detected,
        _cut, _silent."""
        stamps = {"barge_in_onset": self.onset_at, "barge_in_paused": self.paused_at,
                  "barge_in_detected": self.detected_at, "barge_in_cut": self.cut_at, "barge_in_silent": self.silent_at}
        return {k: v for k, v in stamps.items() if v is not None}
