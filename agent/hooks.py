"""What the STT and LLM clients report, at the moment it happens, to whoever traces the turn."""

from __future__ import annotations

from typing import Protocol


class PipelineHooks(Protocol):
    def stt_finished(self, duration_ms: float | None, text: str, error: str | None = None,
                     queue_ms: float | None = None) -> None: ...

    def llm_started(self) -> None: ...

    def llm_queued(self, queue_ms: float) -> None: ...

    def llm_first_token(self) -> None: ...

    def llm_finished(self, error: str | None = None) -> None: ...
