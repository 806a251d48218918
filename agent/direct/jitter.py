"""How many packets the agent's aiortc receiver holds before it hands audio on.

aiortc's audio receiver keeps 4 packets ahead of the one it releases (prefetch=4: 80-100 ms at
20 ms packets), and even at prefetch 1 its buffer releases a packet only when the next one arrives
(it cannot tell otherwise that a frame is complete, which matters for video). Both are paid by
every word the user says: a barge-in is detected that much later, and voice-to-voice is that much
longer. Direct mode talks to a browser over loopback or a LAN, where packets arrive in order, and
an Opus packet is a whole frame, so by default (`DIRECT_JITTER_PREFETCH=0`) the receiver passes
each packet on the moment it arrives (`PassThroughAudioBuffer`: a late or repeated packet is
dropped, and Opus's own concealment covers the gap); 1..8 keep aiortc's buffer with that prefetch.

aiortc has no public setting for this: the receiver's buffer is replaced before its first packet.
A change of aiortc's private layout makes this raise: the tests fail, and a running server logs a
warning and keeps aiortc's 80 ms rather than refuse the call.
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.utils import uint16_add

AIORTC_AUDIO_CAPACITY = 16  # aiortc's own capacity for audio (packets; a power of two)
_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"  # aiortc 1.16's name-mangled receiver attribute
_HALF_SEQUENCE_SPACE = 0x8000  # RTP sequence numbers wrap at 2**16: a "newer" packet is < half ahead


class PassThroughAudioBuffer(JitterBuffer):
    """aiortc's jitter-buffer interface, holding nothing: each newer audio packet is its own frame."""

    def __init__(self) -> None:
        super().__init__(capacity=AIORTC_AUDIO_CAPACITY, prefetch=0)
        self._last_sequence: int | None = None

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last_sequence is not None:
            ahead = uint16_add(seq, -self._last_sequence)
            if ahead == 0 or ahead >= _HALF_SEQUENCE_SPACE:  # a repeat, or older than one already played
                return False, None
        self._last_sequence = seq
        # the receiver has put the depayloaded payload in packet._data (what aiortc's own buffer joins)
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)


def set_audio_prefetch(receiver: Any, prefetch: int) -> None:
    """Make `receiver` (an RTCRtpReceiver for audio, before media flows) hold `prefetch` packets
    (0: none - `PassThroughAudioBuffer`)."""
    current = getattr(receiver, _BUFFER_ATTR, None)
    if not isinstance(current, JitterBuffer):
        raise RuntimeError(f"aiortc's RTCRtpReceiver no longer has {_BUFFER_ATTR}: update agent/direct/jitter.py "
                           "for this aiortc version (or set DIRECT_JITTER_PREFETCH=4, aiortc's own value)")
    buffer = PassThroughAudioBuffer() if prefetch == 0 else JitterBuffer(capacity=AIORTC_AUDIO_CAPACITY,
                                                                         prefetch=prefetch)
    setattr(receiver, _BUFFER_ATTR, buffer)


def set_track_prefetch(pc: Any, track: Any, prefetch: int) -> None:
    """set_audio_prefetch on the receiver of `track`, an incoming track of the RTCPeerConnection `pc`."""
    for receiver in pc.getReceivers():
        if receiver.track is track:
            set_audio_prefetch(receiver, prefetch)


def audio_prefetch(receiver: Any) -> int:
    """The prefetch `receiver` uses now (for tests and logs)."""
    return getattr(receiver, _BUFFER_ATTR)._prefetch
