"""TTSStream: the caller's handle on one utterance.

Text goes in with push_text()/end_text() from any thread or task while audio is already coming out.
Packets come out through plain iteration (blocking) or `async for` (never blocks the event loop): the
engine thread appends packets and wakes waiters, threads through a Condition and asyncio tasks
through `call_soon_threadsafe`. cancel() may be called from anywhere; pending packets are dropped.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidTextError, StreamError
from .text_clean import clean_text

if TYPE_CHECKING:
    from .engine import TTSEngine


@dataclass(frozen=True)
class AudioPacket:
    """20 ms of mono int16 PCM, ready the moment its codec frame decoded."""

    pcm: np.ndarray  # int16 [samples]
    sample_rate: int
    seq: int  # packet index in the stream
    frame: int  # codec frame it came from
    ready_at: float  # time.monotonic() when the engine delivered it

    def tobytes(self) -> bytes:
        return self.pcm.tobytes()


@dataclass
class StreamStats:
    opened_at: float = field(default_factory=time.monotonic)
    first_packet_at: float | None = None
    frames: int = 0
    steps: int = 0  # engine phases (prefill / predict / talk) this stream took part in
    finish_reason: str | None = None  # "eos", "frame_cap", "cancelled", "error"
    admitted_step: int | None = None  # engine step that first saw the stream
    first_packet_step: int | None = None  # engine step that delivered its first packet
    underruns: int = 0  # packets ready after their real-time playback deadline


class TTSStream:
    _END = object()

    def __init__(self, engine: TTSEngine, stream_id: int, max_text_chars: int) -> None:
        self._engine = engine
        self.id = stream_id
        self._max_text_chars = max_text_chars
        self._cond = threading.Condition()
        self._packets: deque = deque()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._codes: list[np.ndarray] = []
        self._float_frames: list[np.ndarray] = []  # filled only for synthesize()
        self._error: BaseException | None = None
        self._closed = threading.Event()  # engine released the stream's slot
        self.cancelled = False
        self.stats = StreamStats()
        # text handed over to the engine thread (guarded by _cond)
        self._text_chunks: list[str] = []
        self._text_chars = 0
        self._text_ended = False
        self._text_tokens: list[int] = []  # tokens the engine has committed (for spoken_text)

    # ---- text input (any thread) ---------------------------------------------------------------

    def push_text(self, chunk: str) -> None:
        if not isinstance(chunk, str):
            raise TypeError(f"push_text takes str, got {type(chunk).__name__}")
        chunk = clean_text(chunk)  # no code point an LLM stream can carry reaches the tokenizer raw
        with self._cond:
            if self._text_ended:
                raise InvalidTextError("push_text after end_text")
            if self._text_chars + len(chunk) > self._max_text_chars:
                self._fail_locked(InvalidTextError(
                    f"text longer than the limit of {self._max_text_chars} characters (EngineConfig.max_text_chars)"))
                raise InvalidTextError(f"text longer than {self._max_text_chars} characters")
            self._text_chunks.append(chunk)
            self._text_chars += len(chunk)
        self._engine._wake()

    def end_text(self) -> None:
        with self._cond:
            self._text_ended = True
        self._engine._wake()

    def _take_text(self) -> tuple[list[str], bool]:
        """Engine thread: new text chunks and whether the text is complete."""
        with self._cond:
            chunks, self._text_chunks = self._text_chunks, []
            return chunks, self._text_ended

    # ---- control -------------------------------------------------------------------------------

    def cancel(self, wait: bool = False, timeout: float | None = 5.0) -> None:
        """Stop at the next step boundary; drop undelivered audio; end iteration.

        wait=True blocks until the engine has released the stream's slot (at most one step).
        """
        with self._cond:
            if not self.cancelled and self._error is None and self.stats.finish_reason is None:
                self.cancelled = True
            self._packets.clear()
            self._packets.append(self._END)
            self._notify_locked()
        # the slot is free for new streams now: the engine admits new work only between steps,
        # after this stream's in-flight step, and a new prefill resets every per-slot state
        self._engine._release_stream(self.id)
        self._engine._wake()
        if wait:
            self._closed.wait(timeout)

    def _should_stop(self) -> bool:
        """Engine thread: the caller cancelled, or the stream already failed on the caller's side."""
        return self.cancelled or self._error is not None

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed.wait(timeout)

    @property
    def done(self) -> bool:
        return self._closed.is_set()

    def spoken_text(self, frames_played: int) -> str:
        """The text spoken by the first `frames_played` frames (what an interrupted reply said).

        In dual-track streaming the talker reads text token k at frame k and says it within a frame
        or two, so the first `frames_played` tokens are what was heard: an estimate at token
        granularity, not a forced alignment."""
        with self._cond:
            tokens = self._text_tokens[:max(0, frames_played)]
        return self._engine.text_tokenizer.decode(tokens).strip() if tokens else ""

    def _note_tokens(self, tokens: list[int]) -> None:
        with self._cond:
            self._text_tokens.extend(tokens)

    @property
    def codes(self) -> np.ndarray:
        """The codec frames generated so far: int64 [frames, 16]."""
        with self._cond:
            return np.stack(self._codes) if self._codes else np.zeros((0, 16), dtype=np.int64)

    # ---- engine side ---------------------------------------------------------------------------

    def _deliver(self, packets: list[AudioPacket], codes: np.ndarray) -> None:
        with self._cond:
            self._codes.append(codes)
            self.stats.frames += 1
            if self.cancelled:
                return
            if self.stats.first_packet_at is None and packets:
                self.stats.first_packet_at = packets[0].ready_at
            self._packets.extend(packets)
            self._notify_locked()

    def _finish(self, reason: str) -> None:
        with self._cond:
            if self.stats.finish_reason is None:
                self.stats.finish_reason = "cancelled" if self.cancelled else reason
            self._packets.append(self._END)
            self._notify_locked()
        self._closed.set()

    def _fail_locked(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            self.stats.finish_reason = "error"
        self._packets.append(self._END)
        self._notify_locked()

    def _fail(self, error: BaseException) -> None:
        with self._cond:
            self._fail_locked(error)
        self._closed.set()

    def _notify_locked(self) -> None:
        self._cond.notify_all()
        for loop, fut in self._async_waiters:
            loop.call_soon_threadsafe(_resolve, fut)
        self._async_waiters.clear()

    # ---- output --------------------------------------------------------------------------------

    def _pop_locked(self) -> AudioPacket | None:
        item = self._packets[0]
        if item is self._END:
            if self._error is not None and not self.cancelled:
                raise StreamError(f"stream {self.id} failed: {self._error}") from self._error
            raise StopIteration
        return self._packets.popleft()

    def __iter__(self) -> Iterator[AudioPacket]:
        return self

    def __next__(self) -> AudioPacket:
        with self._cond:
            while not self._packets:
                self._cond.wait()
            packet = self._pop_locked()
            assert packet is not None
            return packet

    def __aiter__(self) -> AsyncIterator[AudioPacket]:
        return self

    async def __anext__(self) -> AudioPacket:
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if self._packets:
                    try:
                        packet = self._pop_locked()
                    except StopIteration:
                        raise StopAsyncIteration from None
                    assert packet is not None
                    return packet
                fut = loop.create_future()
                self._async_waiters.append((loop, fut))
            await fut


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
