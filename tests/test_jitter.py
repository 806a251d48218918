"""The direct agent's pass-through audio jitter buffer: every newer packet is a frame at once."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from agent.direct.jitter import PassThroughAudioBuffer


def packet(seq: int, payload: bytes) -> RtpPacket:
    p = RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * 960)
    p._data = payload  # what aiortc's receiver sets (the depayloaded frame) before add()
    return p


def test_each_newer_packet_is_released_as_it_arrives():
    buffer = PassThroughAudioBuffer()
    released = [buffer.add(packet(seq, bytes([seq % 256])))[1] for seq in (10, 11, 13, 12, 13, 14)]
    # 12 came after 13 (late: dropped, Opus conceals it) and 13 twice (a repeat: dropped)
    assert [f.data if f else None for f in released] == [b"\x0a", b"\x0b", b"\x0d", None, None, b"\x0e"]
    assert [f.timestamp for f in released if f] == [9600, 10560, 12480, 13440]


def test_sequence_numbers_wrap_around():
    buffer = PassThroughAudioBuffer()
    frames = [buffer.add(packet(seq, b"x"))[1] for seq in (65534, 65535, 0, 1)]
    assert all(f is not None for f in frames)
    assert buffer.add(packet(65535, b"x"))[1] is None  # from before the wrap: old
