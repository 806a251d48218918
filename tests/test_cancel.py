"""cancel(): stops at the next step boundary, drops undelivered audio, frees the slot."""

from __future__ import annotations

import asyncio
import threading
import time

from engine_waits import wait_idle


def test_cancel_mid_stream_ends_iteration_and_frees_state(greedy_engine):
    stream = greedy_engine.open_stream(speaker="ryan", language="english", max_frames=500)
    stream.push_text("A long reply that the user will interrupt after the first packet. " * 3)
    stream.end_text()
    it = iter(stream)
    next(it)
    stream.cancel(wait=True)
    steps_at_cancel = stream.stats.steps
    frames_at_cancel = stream.stats.frames
    assert list(it) == []  # undelivered packets are dropped, iteration ends
    time.sleep(0.2)
    assert stream.stats.steps == steps_at_cancel, "no step may run after cancel(wait=True) returns"
    assert stream.stats.frames == frames_at_cancel
    assert stream.stats.finish_reason == "cancelled"
    wait_idle(greedy_engine)
    assert greedy_engine.load() == 0.0


def test_cancel_from_another_thread_while_consumer_blocks(greedy_engine):
    stream = greedy_engine.open_stream(speaker="vivian", language="english", max_frames=500)
    stream.push_text("Waiting for more text ")  # never ended: the consumer blocks on the iterator
    got = []
    consumer = threading.Thread(target=lambda: got.extend(stream))
    consumer.start()
    time.sleep(0.3)
    threading.Thread(target=stream.cancel).start()
    consumer.join(timeout=10)
    assert not consumer.is_alive(), "cancel must wake a blocked consumer"
    assert stream.wait_closed(10)
    wait_idle(greedy_engine)


async def test_cancel_from_asyncio_task(greedy_engine):
    stream = greedy_engine.open_stream(speaker="ryan", language="english", max_frames=500)
    stream.push_text("An asyncio consumer gets cut off by a barge in. " * 3)
    stream.end_text()

    async def consume():
        return [p async for p in stream]

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    stream.cancel()
    packets = await asyncio.wait_for(task, timeout=10)
    assert len(packets) < 4 * 500
    assert await asyncio.to_thread(stream.wait_closed, 10)
    await asyncio.to_thread(wait_idle, greedy_engine)


def test_cancel_before_any_text_and_double_cancel(greedy_engine):
    stream = greedy_engine.open_stream(speaker="ryan", language="english")
    stream.cancel(wait=True)
    stream.cancel(wait=True)
    assert list(stream) == []
    assert stream.done
    wait_idle(greedy_engine)
