"""A per-session view of the shared Silero VAD that also tells one listener every event it emits.

The session only reacts to START_OF_SPEECH, which Silero sends after `min_speech_s` of speech
(two 32 ms windows at the default): the duplex controller wants the first window whose speech
probability rises, one window earlier, to silence the agent while the VAD is still confirming.
The wrapper forwards frames and events unchanged (same model, same state, same timing); it only
copies each event to the listener on the way out.

A session opens more than one stream over the same microphone (its turn detection, and the STT
adapter that cuts speech into segments); they see the same audio, so the listener hears one of
them - the oldest still open - and never the same window twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from livekit.agents import vad as lk_vad

log = logging.getLogger(__name__)

VADListener = Callable[[lk_vad.VADEvent], None]


class ObservedVAD(lk_vad.VAD):
    """Streams of `inner` whose events also go to `listener` (synchronously, in order)."""

    def __init__(self, inner: lk_vad.VAD, listener: VADListener) -> None:
        super().__init__(capabilities=inner.capabilities)
        self.inner = inner
        self.listener = listener
        self.observed: ObservedVADStream | None = None  # the one stream whose events the listener gets

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def provider(self) -> str:
        return self.inner.provider

    def stream(self) -> lk_vad.VADStream:
        stream = ObservedVADStream(self, self.inner.stream())
        if self.observed is None:
            self.observed = stream
        return stream

    def notify(self, stream: ObservedVADStream, event: lk_vad.VADEvent) -> None:
        if stream is not self.observed:
            return
        try:
            self.listener(event)
        except Exception:  # an observer's bug must not deafen the session
            log.exception("VAD listener failed on %s", event.type)

    def closed(self, stream: ObservedVADStream) -> None:
        if stream is self.observed:
            self.observed = None  # the next stream opened takes over


class ObservedVADStream(lk_vad.VADStream):
    def __init__(self, vad: ObservedVAD, inner: lk_vad.VADStream) -> None:
        self._observer = vad  # both set before the base class starts _main_task
        self._inner = inner
        super().__init__(vad)

    async def _main_task(self) -> None:
        forward = asyncio.create_task(self._forward_input(), name="observed-vad-input")
        try:
            async for event in self._inner:
                self._observer.notify(self, event)
                self._event_ch.send_nowait(event)
        finally:
            self._observer.closed(self)
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forward
            await self._inner.aclose()

    async def _forward_input(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, self._FlushSentinel):
                self._inner.flush()
            else:
                self._inner.push_frame(item)
        self._inner.end_input()
