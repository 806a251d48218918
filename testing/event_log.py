"""What both callers (direct_client.py, livekit_client.py) share: the agent's events in arrival
order, the times agent audio was heard, what was said on the caller's capture clock, and waiting."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .utterances import Utterance

T = TypeVar("T")
VOICED_RMS = 0.01  # incoming frames louder than this carry agent audio (the wire is silent otherwise)


@dataclass
class Said:
    """One utterance as the client said it, on its monotonic clock.

    A microphone hands a frame to the wire when the frame has been captured: the frame carrying an
    utterance's first samples leaves `frame_s` after the first of them was "heard". So its capture
    clock starts at `first_frame_at - frame_s`, and the speech onset and end are that plus where
    they lie in the clip - what a person's mouth did, not when the client queued the clip."""

    utt: Utterance
    pushed_at: float  # when the client queued it
    frame_s: float  # the microphone's frame duration
    first_frame_at: float | None = None  # when the frame with its first samples left (set by the mic)

    @property
    def capture_start(self) -> float:
        sent = self.first_frame_at if self.first_frame_at is not None else self.pushed_at
        return sent - self.frame_s

    @property
    def onset(self) -> float:
        return self.capture_start + self.utt.speech_onset_s

    @property
    def speech_end(self) -> float:
        return self.capture_start + self.utt.speech_end_s

    @property
    def sent_until(self) -> float:
        """Its last frame has left by then."""
        return self.capture_start + self.utt.seconds + self.frame_s

    @property
    def wait_until(self) -> float:
        """When the whole clip will have been sent, as known when it was queued (for waiting on)."""
        return self.pushed_at + self.utt.seconds


@dataclass
class Message:
    at: float  # time.monotonic() when it arrived
    data: dict[str, Any]


class EventLog:
    """The agent's events in arrival order, the times agent audio was heard, and waiting on either.
    A client appends with `_on_message` / `_on_audio_frame`."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.voiced_at: list[float] = []  # arrival times of incoming frames that carry agent audio
        self.frames_in = 0
        # the listener's own receive (jitter) buffer, read from WebRTC's stats at the hang-up where the
        # client has one to read (LiveKit): {"mean_ms", "target_ms", "minimum_ms"}, else None
        self.receive_buffer: dict[str, float] | None = None
        self._changed = asyncio.Event()

    def session_id(self) -> str | None:
        sessions = self.of_type("session")
        return sessions[0].data.get("session_id") if sessions else None

    def of_type(self, kind: str, since: int = 0) -> list[Message]:
        return [m for m in self.messages[since:] if m.data.get("type") == kind]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The events themselves (of one type, or all), in arrival order."""
        return [m.data for m in (self.messages if kind is None else self.of_type(kind))]

    def agent_state(self) -> str | None:
        states = self.of_type("agent_state")
        return states[-1].data.get("state") if states else None

    async def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """The predicate's first truthy value, re-checked on every message; None on timeout."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.25))
            except TimeoutError:
                pass
        return value

    def _on_message(self, raw: str | bytes) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            data = {"type": "unparsable", "raw": str(raw)[:200]}
        self.messages.append(Message(time.monotonic(), data if isinstance(data, dict) else {"type": "?"}))
        self._changed.set()

    def _on_audio_frame(self, pcm: np.ndarray) -> None:
        """One incoming frame of agent audio, as float in [-1, 1]."""
        self.frames_in += 1
        if pcm.size and float(np.sqrt(np.mean(pcm * pcm))) > VOICED_RMS:
            self.voiced_at.append(time.monotonic())


async def poll_until(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout_s: float) -> T:
    """Probe every 0.25 s until done(result) or the timeout; the last result either way. Both
    clients' leak checks wait like this for the agent's teardown after the hang-up."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if done(result) or time.monotonic() >= deadline:
            return result
        await asyncio.sleep(0.25)
