"""StreamChannel and SlotPool on their own: plain data in, plain data out - no engine, no model."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import numpy as np
import pytest

from tts_engine import EngineBusy, InvalidTextError, StreamError
from tts_engine.channel import StreamChannel
from tts_engine.frames import CODEBOOKS, PACKETS_PER_FRAME
from tts_engine.packets import AudioPacket
from tts_engine.slots import SlotPool

CODES = np.zeros(CODEBOOKS, dtype=np.int64)


def _frame(frame: int, ready_at: float) -> list[AudioPacket]:
    """The packets of codec frame `frame`, all ready at `ready_at`."""
    return [AudioPacket(pcm=np.zeros(480, dtype=np.int16), sample_rate=24000, seq=frame * PACKETS_PER_FRAME + i,
                        frame=frame, ready_at=ready_at) for i in range(PACKETS_PER_FRAME)]


def test_underrun_accounting():
    """Packets ready after first_packet + seq * 20 ms count as underruns (moved from test_scheduler:
    the ready times are data on the packets, so no clock needs patching)."""
    channel = StreamChannel(1, max_text_chars=100)
    # frame 0 at t0; frame 1 early; frame 2 (packets 8-11, deadlines +0.16..+0.22 s) ready at +0.5 s
    late = [channel.deliver(_frame(f, t), CODES, step=5 + f) for f, t in enumerate([100.0, 100.05, 100.5])]
    assert late == [0, 0, 4]
    st = channel.stats
    assert st.underruns == 4 and st.frames == 3
    assert st.first_packet_at == 100.0 and st.first_packet_step == 5


def test_offline_channel_has_no_playback_clock_and_keeps_the_waveform():
    channel = StreamChannel(1, max_text_chars=100, offline=True)
    audio = [np.full(1920, i, dtype=np.float32) for i in range(3)]
    late = [channel.deliver(_frame(f, 100.0 + f), CODES, step=f, audio=audio[f]) for f in range(3)]
    assert late == [0, 0, 0] and channel.stats.underruns == 0
    np.testing.assert_array_equal(channel.waveform(), np.concatenate(audio))
    assert StreamChannel(2, max_text_chars=100).waveform().shape == (0,)  # a live stream keeps none


def test_packets_come_out_in_order_then_the_end():
    channel = StreamChannel(1, max_text_chars=100)
    channel.deliver(_frame(0, 1.0), CODES, step=1)
    channel.deliver(_frame(1, 1.1), CODES, step=2)
    channel.finish("eos")
    assert [channel.get().seq for _ in range(8)] == list(range(8))
    for _ in range(2):  # the end stays the end
        with pytest.raises(StopIteration):
            channel.get()
    assert channel.stats.finish_reason == "eos" and channel.closed
    assert channel.codes().shape == (2, CODEBOOKS)


def test_cancel_wakes_a_blocked_reader_and_drops_what_was_not_read():
    channel = StreamChannel(1, max_text_chars=100)
    channel.deliver(_frame(0, 1.0), CODES, step=1)
    channel.get()
    ended = threading.Event()

    def reader():
        try:
            while True:
                channel.get()
        except StopIteration:
            ended.set()

    thread = threading.Thread(target=reader)
    thread.start()
    channel.cancel()
    thread.join(timeout=5)
    assert ended.is_set()
    assert channel.cancelled and channel.should_stop()
    # the frame the engine finishes after the cancel is counted but never queued, and not late
    assert channel.deliver(_frame(1, 9.0), CODES, step=2) == 0
    assert channel.stats.frames == 2
    channel.finish("eos")  # the engine's end: a cancelled stream says so
    assert channel.stats.finish_reason == "cancelled"
    with pytest.raises(StopIteration):
        channel.get()


def test_a_failed_stream_raises_but_a_cancelled_one_just_ends():
    failed = StreamChannel(1, max_text_chars=100)
    failed.fail(RuntimeError("boom"))
    with pytest.raises(StreamError, match="stream 1 failed: boom"):
        failed.get()
    assert failed.stats.finish_reason == "error" and failed.closed
    cancelled = StreamChannel(2, max_text_chars=100)
    cancelled.cancel()
    cancelled.fail(RuntimeError("engine closed"))
    with pytest.raises(StopIteration):
        cancelled.get()


def test_cancel_after_the_end_changes_nothing_but_drops_unread_audio():
    channel = StreamChannel(1, max_text_chars=100)
    channel.deliver(_frame(0, 1.0), CODES, step=1)
    channel.finish("frame_cap")
    channel.cancel()
    assert not channel.cancelled and channel.stats.finish_reason == "frame_cap"
    with pytest.raises(StopIteration):
        channel.get()


async def test_async_reader_is_woken_from_another_thread():
    channel = StreamChannel(1, max_text_chars=100)
    task = asyncio.create_task(channel.aget())
    await asyncio.sleep(0.01)
    assert not task.done()
    threading.Thread(target=channel.deliver, args=(_frame(0, 1.0), CODES, 1)).start()
    packet = await asyncio.wait_for(task, timeout=5)
    assert packet.seq == 0
    channel.cancel()
    with pytest.raises(StopAsyncIteration):
        await channel.aget()


def test_text_goes_in_once_and_the_limit_fails_the_stream():
    channel = StreamChannel(1, max_text_chars=10)
    channel.push_text("Hello")
    channel.push_text("\x00ok")  # cleaned on the way in
    assert channel.take_text() == (["Hello", " ok"], False)
    assert channel.take_text() == ([], False)
    with pytest.raises(InvalidTextError, match="longer than 10"):
        channel.push_text("more than that")
    assert channel.should_stop() and channel.stats.finish_reason == "error"
    with pytest.raises(StreamError, match="limit of 10 characters"):
        channel.get()
    ended = StreamChannel(2, max_text_chars=10)
    ended.end_text()
    assert ended.take_text() == ([], True)
    with pytest.raises(InvalidTextError, match="after end_text"):
        ended.push_text("x")


def test_stats_are_snapshots():
    channel = StreamChannel(1, max_text_chars=100)
    before = channel.stats
    channel.admitted(3)
    channel.stepped()
    after = channel.stats
    assert (before.admitted_step, before.steps) == (None, 0)
    assert (after.admitted_step, after.steps) == (3, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        after.steps = 5  # type: ignore[misc]


def test_slot_pool_releases_by_owner_exactly_once():
    pool = SlotPool(2)
    assert (pool.take(owner=1), pool.take(owner=2)) == (0, 1)
    assert pool.load() == 1.0
    with pytest.raises(EngineBusy, match=r"all 2 TTS stream slots are in use.*max_streams"):
        pool.take(owner=3)
    pool.release(1)
    pool.release(1)  # the caller's cancel and the engine's end both release: once counts
    assert pool.in_use == 1
    assert pool.take(owner=4) == 0  # stream 4 now holds the slot stream 1 had ...
    pool.release(1)  # ... so a late release by stream 1 must not free it
    assert pool.in_use == 2
    pool.release(2)
    pool.release(4)
    assert pool.load() == 0.0
