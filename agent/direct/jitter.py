"""How many packets the agent's aiortc receiver holds before it hands audio on.

aiortc's audio receiver keeps 4 packets ahead of the one it releases (prefetch=4: 80-100 ms at
20 ms packets): protection against reordering on the open internet, paid by every word the user
says - a barge-in is detected that much later, and voice-to-voice is that much longer. Direct mode
talks to a browser over loopback or a LAN, where packets arrive in order, so it holds fewer
(`DIRECT_JITTER_PREFETCH`, default 1: one packet, the least aiortc's buffer can hold - it releases a
frame once the next one has begun). aiortc has no public setting for this; the receiver's buffer is
replaced before its first packet. A change of aiortc's private layout makes this raise: the tests
fail, and a running server logs a warning and keeps aiortc's 80 ms rather than refuse the call.
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterBuffer

AIORTC_AUDIO_CAPACITY = 16  # aiortc's own capacity for audio (packets; a power of two)
_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"  # aiortc 1.16's name-mangled receiver attribute


def set_audio_prefetch(receiver: Any, prefetch: int) -> None:
    """Make `receiver` (an RTCRtpReceiver for audio, before media flows) hold `prefetch` packets."""
    current = getattr(receiver, _BUFFER_ATTR, None)
    if not isinstance(current, JitterBuffer):
        raise RuntimeError(f"aiortc's RTCRtpReceiver no longer has {_BUFFER_ATTR}: update agent/direct/jitter.py "
                           "for this aiortc version (or set DIRECT_JITTER_PREFETCH=4, aiortc's own value)")
    setattr(receiver, _BUFFER_ATTR, JitterBuffer(capacity=AIORTC_AUDIO_CAPACITY, prefetch=prefetch))


def set_track_prefetch(pc: Any, track: Any, prefetch: int) -> None:
    """set_audio_prefetch on the receiver of `track`, an incoming track of the RTCPeerConnection `pc`."""
    for receiver in pc.getReceivers():
        if receiver.track is track:
            set_audio_prefetch(receiver, prefetch)


def audio_prefetch(receiver: Any) -> int:
    """The prefetch `receiver` uses now (for tests and logs)."""
    return getattr(receiver, _BUFFER_ATTR)._prefetch
