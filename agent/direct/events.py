"""The "agent-events" data channel: the session's events to the page as JSON, and the page's bye.

The PAGE creates the channel (label "agent-events", ordered, reliable) before it makes its offer,
so the offer carries the SCTP section and the answer needs no renegotiation (non-trickle). Events
raised before the channel opens (the session's first state changes) are held, up to a bound, and
sent when it opens. Message schema: agent/direct/README.md.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel

logger = logging.getLogger(__name__)

CHANNEL_LABEL = "agent-events"
MAX_PENDING = 100  # events held until the channel opens; older ones are dropped first
MAX_BUFFERED_BYTES = 1 << 20  # a page that stops reading loses events rather than growing our memory


class EventChannel:
    def __init__(self, on_bye: Callable[[], object] | None = None) -> None:
        self._channel: RTCDataChannel | None = None
        self._pending: deque[str] = deque(maxlen=MAX_PENDING)
        self._on_bye = on_bye
        self.sent = 0
        self.dropped = 0

    @property
    def is_open(self) -> bool:
        return self._channel is not None and self._channel.readyState == "open"

    def attach(self, channel: RTCDataChannel) -> bool:
        """Adopt the page's channel if it is ours; returns whether it was."""
        if channel.label != CHANNEL_LABEL:
            logger.info("ignoring data channel %r (only %r is used)", channel.label, CHANNEL_LABEL)
            return False
        self._channel = channel
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)
        return True

    def send(self, kind: str, data: dict[str, Any]) -> None:
        """`{"type": kind, **data}`; VoicePipeline's on_event signature."""
        message = json.dumps({"type": kind, **data}, default=str)
        if not self.is_open:
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
            self._pending.append(message)
            return
        self._send(message)

    def _send(self, message: str) -> None:
        assert self._channel is not None
        if self._channel.bufferedAmount > MAX_BUFFERED_BYTES:
            self.dropped += 1
            return
        self._channel.send(message)
        self.sent += 1

    def _flush(self) -> None:
        while self._pending and self.is_open:
            self._send(self._pending.popleft())

    def _on_message(self, message: str | bytes) -> None:
        try:
            data = json.loads(message)
        except ValueError:
            logger.debug("ignoring a non-JSON data channel message")
            return
        if isinstance(data, dict) and data.get("type") == "bye" and self._on_bye is not None:
            self._on_bye()
