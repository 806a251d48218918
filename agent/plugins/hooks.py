"""What the STT and LLM clients report, at the moment it happens, to whoever traces the turn.

The LLM reports name their `generation` (one object per request): a reply can be superseded by the
next one while it is still queued (the user went on talking), and each report must land on the turn
whose reply it is."""

from __future__ import annotations

from typing import Protocol


class PipelineHooks(Protocol):
    def stt_finished(self, duration_ms: float | None, text: str, error: str | None = None,
                     queue_ms: float | None = None) -> None: ...

    def llm_started(self, generation: object) -> None: ...

    def llm_queued(self, generation: object, queue_ms: float) -> None: ...

    def llm_first_token(self, generation: object) -> None: ...

    def llm_finished(self, generation: object, error: str | None = None) -> None: ...
