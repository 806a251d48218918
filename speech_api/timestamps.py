"""The hook for per-frame events on the WebSocket (issue 14 item 2 puts word timestamps here).

`SpeechService.frame_observer(stream, start_message)` makes one observer per utterance. After each
binary audio frame is sent, the events `on_frame(frames_sent)` returns go out as JSON (e.g.
{"type": "word", "word": ..., "start_s": ..., "end_s": ...}), and `on_done()` adds fields to the
utterance's "done" event. A start message may carry options for it once they exist (the start
message's fields are checked in ws.py: add them to START_FIELDS there)."""

from __future__ import annotations

from typing import Any, Protocol

from tts_engine import TTSStream


class FrameObserver(Protocol):
    def on_frame(self, frames_sent: int) -> list[dict[str, Any]]: ...

    def on_done(self) -> dict[str, Any]: ...


class NoTimestamps:
    """The default observer: no extra events."""

    def __init__(self, _stream: TTSStream, _start: dict[str, Any]) -> None:
        pass

    def on_frame(self, frames_sent: int) -> list[dict[str, Any]]:
        return []

    def on_done(self) -> dict[str, Any]:
        return {}
