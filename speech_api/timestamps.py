"""Word timestamps on the wire: one event per word once its audio has been sent.

The engine reads the words off its dual-track alignment (TTSStream.word_timings: a word starts at the
80 ms frame that read its first text token and ends where the next word starts). A word is sent
when it is final (the next word has begun, or the audio ended) and the audio up to its end has left:
a client never gets a word ahead of the sound. Times are seconds of the audio this response sends
(divided by `speed` when the audio was sped up or slowed down).

Events: `{"type": <event type>, "word": "Hello,", "start_s": 0.0, "end_s": 0.32}`; the WebSocket
uses "word", SSE "speech.audio.word".
"""

from __future__ import annotations

from typing import Any, Protocol

from tts_engine import TTSStream
from tts_engine.frames import FRAME_S

TIMESTAMP_CHOICES = ("word", "none")


class FrameObserver(Protocol):
    def on_frame(self, frames_sent: int) -> list[dict[str, Any]]:
        """Events to send after the audio of `frames_sent` frames went out (again once it ended)."""
        ...

    def on_done(self) -> dict[str, Any]:
        """Fields for the utterance's end event."""
        ...


class NoTimestamps:
    """No extra events (a client that asked for none)."""

    def on_frame(self, frames_sent: int) -> list[dict[str, Any]]:
        return []

    def on_done(self) -> dict[str, Any]:
        return {}


class WordTimestamps:
    def __init__(self, stream: TTSStream, event_type: str = "word", speed: float = 1.0) -> None:
        self.stream = stream
        self.event_type = event_type
        self.speed = speed
        self.sent = 0  # words sent so far

    def on_frame(self, frames_sent: int) -> list[dict[str, Any]]:
        words = self.stream.word_timings()
        heard_until = frames_sent * FRAME_S + 1e-6
        events = []
        while self.sent < len(words) and words[self.sent].final and words[self.sent].end_s <= heard_until:
            w = words[self.sent]
            events.append({"type": self.event_type, "word": w.word, "start_s": round(w.start_s / self.speed, 4),
                           "end_s": round(w.end_s / self.speed, 4)})
            self.sent += 1
        return events

    def on_done(self) -> dict[str, Any]:
        return {"words": self.sent}


def observer_for(stream: TTSStream, timestamps: str, event_type: str, speed: float = 1.0) -> FrameObserver:
    return WordTimestamps(stream, event_type, speed) if timestamps == "word" else NoTimestamps()
