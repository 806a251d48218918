"""TTSStream: the caller's handle on one utterance.

Text goes in with push_text()/end_text() from any thread or task while audio is already coming out.
Packets come out through plain iteration (blocking) or `async for` (never blocks the event loop).
cancel() may be called from anywhere: pending packets are dropped and the stream's slot is free
for a new stream at once. The state lives in the stream's StreamChannel (this is its caller face);
the engine is reached only through three callables it hands over, so nothing here imports it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import numpy as np

from .channel import StreamChannel
from .packets import AudioPacket, StreamStats
from .word_timing import WordTiming, group_words, heard_words, time_words

__all__ = ["AudioPacket", "StreamStats", "TTSStream"]


class TTSStream:
    def __init__(self, channel: StreamChannel, wake: Callable[[], None], release: Callable[[int], None],
                 decode: Callable[[list[int]], str]) -> None:
        self._channel = channel
        self._wake = wake  # the engine thread looks at new text / a cancel now, not at its next timeout
        self._release = release  # frees the stream's slot (idempotent)
        self._decode = decode  # text tokens -> text
        # (tokens grouped, their words): a stream's words are read once per sent frame (the speech API's
        # word events), and each regrouping decodes every token under the lock the engine thread takes
        self._grouped: tuple[int, list[tuple[int, int, str]]] = (0, [])
        self.id = channel.id

    # ---- text input (any thread) ---------------------------------------------------------------

    def push_text(self, chunk: str) -> None:
        try:
            self._channel.push_text(chunk)
        finally:  # a push over the text limit fails the stream: the engine should see that soon too
            self._wake()

    def end_text(self) -> None:
        self._channel.end_text()
        self._wake()

    # ---- control -------------------------------------------------------------------------------

    def cancel(self, wait: bool = False, timeout: float | None = 5.0) -> None:
        """Stop at the next step boundary; drop undelivered audio; end iteration.

        wait=True blocks until the engine has let go of the stream (at most one step).
        """
        self._channel.cancel()
        # the slot is free for new streams now: the engine admits new work only between steps,
        # drops cancelled streams before it runs any stage, and a new prefill resets every per-slot state
        self._release(self.id)
        self._wake()
        if wait:
            self._channel.wait_closed(timeout)

    @property
    def cancelled(self) -> bool:
        return self._channel.cancelled

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._channel.wait_closed(timeout)

    @property
    def done(self) -> bool:
        return self._channel.closed

    @property
    def stats(self) -> StreamStats:
        """A snapshot of the stream's numbers (read it again for newer ones)."""
        return self._channel.stats

    @property
    def codes(self) -> np.ndarray:
        """The codec frames generated so far: int64 [frames, 16]."""
        return self._channel.codes()

    def word_timings(self) -> list[WordTiming]:
        """The words said so far, each with its start and end on the output timeline (seconds):
        read off the dual-track alignment (tts_engine/word_timing.py says how exact that is)."""
        stats, tokens = self._channel.stats, self._channel.tokens()
        if self._grouped[0] != len(tokens):  # tokens only grow: the same count is the same text
            self._grouped = (len(tokens), group_words(tokens, self._decode))
        return time_words(self._grouped[1], len(tokens), stats.frames, aligned=not self._channel.offline,
                          complete=stats.finish_reason is not None)

    def spoken_text(self, seconds_played: float) -> str:
        """The text of the words heard to their end in the first `seconds_played` seconds of audio
        (what an interrupted reply said, up to its last whole word)."""
        heard = heard_words(self.word_timings(), seconds_played)
        return self._decode(self._channel.tokens()[:heard[-1].end_token]).strip() if heard else ""

    # ---- output --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[AudioPacket]:
        return self

    def __next__(self) -> AudioPacket:
        return self._channel.get()

    def __aiter__(self) -> AsyncIterator[AudioPacket]:
        return self

    async def __anext__(self) -> AudioPacket:
        return await self._channel.aget()
