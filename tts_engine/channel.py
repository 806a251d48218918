"""StreamChannel: everything one stream shares between its caller and the engine thread.

The channel holds the stream's only lock and is the only writer of its shared state: the text handed
in, the packets waiting to be read, the cancel flag, the stats, the error, and whether the stream is
closed. It has two faces:

- the caller face, used by `TTSStream` from any thread or event loop: push_text, end_text, cancel,
  get / aget (iteration), stats, cancelled, codes, tokens, waveform, wait_closed;
- the engine face, used only by the engine thread's executor: take_text, note_tokens, should_stop,
  admitted, stepped, deliver, finish, fail.

Every change wakes the readers: threads through the Condition, asyncio tasks through
`call_soon_threadsafe` on their own loop. Stats are a frozen snapshot replaced under the lock, so a
reader never sees a half-written update.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import deque

import numpy as np

from .errors import InvalidTextError, StreamError
from .frames import CODEBOOKS, PACKET_S
from .packets import AudioPacket, StreamStats
from .text_clean import clean_text

_END = object()  # the last item of the packet queue: iteration stops, or raises the stream's error


class StreamChannel:
    def __init__(self, stream_id: int, max_text_chars: int, offline: bool = False) -> None:
        self.id = stream_id
        # synthesize(): the float waveform is kept, and with no playback clock nothing is late
        self.offline = offline
        self._max_text_chars = max_text_chars
        self._cond = threading.Condition()
        self._stats = StreamStats(opened_at=time.monotonic())
        self._cancelled = False
        self._error: BaseException | None = None
        self._closed = threading.Event()  # set once the engine has let go of the stream
        self._text_chunks: list[str] = []  # pushed, not yet taken by the engine
        self._text_chars = 0
        self._text_ended = False
        self._tokens: list[int] = []  # text tokens the engine committed (for spoken_text)
        self._packets: deque[object] = deque()  # AudioPacket items, then _END
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._codes: list[np.ndarray] = []
        self._float_frames: list[np.ndarray] = []

    # ---- caller face: text in --------------------------------------------------------------------

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

    def end_text(self) -> None:
        with self._cond:
            self._text_ended = True

    # ---- caller face: control and state ----------------------------------------------------------

    def cancel(self) -> None:
        """Mark the stream cancelled (unless it already ended) and drop the audio not yet read."""
        with self._cond:
            if not self._cancelled and self._error is None and self._stats.finish_reason is None:
                self._cancelled = True
            self._packets.clear()
            self._packets.append(_END)
            self._notify_locked()

    @property
    def cancelled(self) -> bool:
        with self._cond:
            return self._cancelled

    @property
    def stats(self) -> StreamStats:
        with self._cond:
            return self._stats

    def codes(self) -> np.ndarray:
        """int64 [frames, CODEBOOKS]: the codec frames generated so far."""
        with self._cond:
            return np.stack(self._codes) if self._codes else np.zeros((0, CODEBOOKS), dtype=np.int64)

    def tokens(self) -> list[int]:
        with self._cond:
            return list(self._tokens)

    def waveform(self) -> np.ndarray:
        """float32 at the decoder rate: every frame so far (kept only for an offline channel)."""
        with self._cond:
            return np.concatenate(self._float_frames) if self._float_frames else np.zeros(0, dtype=np.float32)

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed.wait(timeout)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # ---- caller face: packets out ----------------------------------------------------------------

    def get(self) -> AudioPacket:
        """The next packet, blocking until there is one; StopIteration at the end."""
        with self._cond:
            while not self._packets:
                self._cond.wait()
            return self._pop_locked()

    async def aget(self) -> AudioPacket:
        """The next packet without blocking the event loop; StopAsyncIteration at the end."""
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if self._packets:
                    try:
                        return self._pop_locked()
                    except StopIteration:
                        raise StopAsyncIteration from None
                fut = loop.create_future()
                self._async_waiters.append((loop, fut))
            await fut

    def _pop_locked(self) -> AudioPacket:
        item = self._packets[0]
        if item is _END:  # left in place: every later read ends the same way
            if self._error is not None and not self._cancelled:
                raise StreamError(f"stream {self.id} failed: {self._error}") from self._error
            raise StopIteration
        self._packets.popleft()
        assert isinstance(item, AudioPacket)
        return item

    # ---- engine face -----------------------------------------------------------------------------

    def take_text(self) -> tuple[list[str], bool]:
        """The text chunks pushed since the last call, and whether the text is complete."""
        with self._cond:
            chunks, self._text_chunks = self._text_chunks, []
            return chunks, self._text_ended

    def note_tokens(self, tokens: list[int]) -> None:
        with self._cond:
            self._tokens.extend(tokens)

    def should_stop(self) -> bool:
        """The caller cancelled, or the stream already failed on the caller's side."""
        with self._cond:
            return self._cancelled or self._error is not None

    def admitted(self, step: int) -> None:
        with self._cond:
            self._stats = dataclasses.replace(self._stats, admitted_step=step)

    def stepped(self) -> None:
        with self._cond:
            self._stats = dataclasses.replace(self._stats, steps=self._stats.steps + 1)

    def deliver(self, packets: list[AudioPacket], codes: np.ndarray, step: int,
                audio: np.ndarray | None = None) -> int:
        """One decoded frame: its packets (all ready at the same moment), its codes, its float audio.

        Returns how many packets are late (underruns): a packet is late when it is ready after its
        playback deadline, assuming real-time playback from the first packet: first + seq * 20 ms.
        """
        with self._cond:
            self._codes.append(codes)
            if self.offline and audio is not None:
                self._float_frames.append(audio)
            st = self._stats
            if self._cancelled or self._error is not None:  # nobody reads these packets any more
                self._stats = dataclasses.replace(st, frames=st.frames + 1)
                return 0
            first = st.first_packet_at if st.first_packet_at is not None else packets[0].ready_at
            late = 0 if self.offline else sum(p.ready_at > first + p.seq * PACKET_S for p in packets)
            self._stats = dataclasses.replace(
                st, frames=st.frames + 1, first_packet_at=first, underruns=st.underruns + late,
                first_packet_step=step if st.first_packet_step is None else st.first_packet_step)
            self._packets.extend(packets)
            self._notify_locked()
            return late

    def finish(self, reason: str) -> None:
        """The engine is done with the stream ("eos", "frame_cap", "cancelled")."""
        with self._cond:
            if self._stats.finish_reason is None:
                self._stats = dataclasses.replace(self._stats,
                                                  finish_reason="cancelled" if self._cancelled else reason)
            self._packets.append(_END)
            self._notify_locked()
        self._closed.set()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self._fail_locked(error)
        self._closed.set()

    # ---- internals ------------------------------------------------------------------------------

    def _fail_locked(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            self._stats = dataclasses.replace(self._stats, finish_reason="error")
        self._packets.append(_END)
        self._notify_locked()

    def _notify_locked(self) -> None:
        self._cond.notify_all()
        for loop, fut in self._async_waiters:
            loop.call_soon_threadsafe(_resolve, fut)
        self._async_waiters.clear()


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
