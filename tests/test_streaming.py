"""Streaming output and streaming text input through the public API."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from tts_engine import EngineConfig, TTSEngine
from tts_engine.frames import FRAME_S


def test_packets_are_20ms_int16_four_per_frame(greedy_engine):
    stream = greedy_engine.open_stream(speaker="ryan", language="english", max_frames=6)
    stream.push_text("Hello world.")
    stream.end_text()
    packets = list(stream)
    assert len(packets) == 24
    assert all(p.pcm.dtype == np.int16 and p.pcm.shape == (480,) and p.sample_rate == 24000 for p in packets)
    assert [p.seq for p in packets] == list(range(24))
    assert [p.frame for p in packets] == [i // 4 for i in range(24)]
    codes = stream.codes
    assert codes.shape == (6, 16) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 2048
    assert stream.stats.finish_reason == "frame_cap"
    assert any(np.abs(p.pcm).max() > 100 for p in packets), "audio must not be silent"


def test_each_frame_is_delivered_as_soon_as_it_decodes(greedy_engine):
    """Packets of frame k are handed over before frame k+1 exists (no chunking)."""
    stream = greedy_engine.open_stream(speaker="vivian", language="english", max_frames=8)
    stream.push_text("One frame at a time, please.")
    stream.end_text()
    packets = list(stream)
    ready = {}
    for p in packets:
        ready.setdefault(p.frame, set()).add(p.ready_at)
    assert all(len(times) == 1 for times in ready.values())  # the 4 packets of a frame go together
    times = [next(iter(ready[f])) for f in range(8)]
    assert all(a < b for a, b in zip(times, times[1:], strict=False)), "each frame is delivered at its own time"


def test_audio_starts_before_end_text(greedy_engine):
    stream = greedy_engine.open_stream(speaker="ryan", language="english", max_frames=200)
    stream.push_text("This sentence is long enough to start speaking before the rest arrives ")
    first = next(iter(stream))  # blocks until the first packet: end_text() has not been called
    assert first.frame == 0 and first.seq == 0
    stream.push_text("and here is the end.")
    stream.end_text()
    rest = list(stream)
    assert len(rest) + 1 == 4 * stream.codes.shape[0]


def test_talker_waits_for_text_instead_of_running_ahead(greedy_engine):
    stream = greedy_engine.open_stream(speaker="ryan", language="english", max_frames=200)
    stream.push_text("Two words then")  # 'then' may still grow: held back until more text comes
    committed = len(greedy_engine.text_tokenizer.encode("Two words"))  # the engine thread tokenizes too
    # frame f needs text token f+1, so exactly `committed` frames can be made before the talker waits
    deadline = time.monotonic() + 20
    while stream.codes.shape[0] < committed and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    frames_while_waiting = stream.codes.shape[0]
    assert frames_while_waiting == committed, "without more text the talker must stop and wait"
    stream.end_text()
    list(stream)
    assert stream.codes.shape[0] > frames_while_waiting


async def test_async_iteration_does_not_block_the_loop(greedy_engine):
    stream = greedy_engine.open_stream(speaker="vivian", language="chinese", max_frames=5)
    stream.push_text("你好，世界。")
    stream.end_text()
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    packets = [p async for p in stream]
    task.cancel()
    assert len(packets) == 20
    assert ticks > 3, "the event loop kept running while packets were awaited"


@pytest.mark.parametrize("rate,samples", [(16000, 320), (48000, 960)])
def test_other_output_rates(tiny_checkpoint, rate, samples):
    with TTSEngine(EngineConfig(model=tiny_checkpoint, do_sample=False, max_streams=1,
                                output_sample_rate=rate)) as engine:
        stream = engine.open_stream(speaker="ryan", language="english", max_frames=3)
        stream.push_text("Hi there.")
        stream.end_text()
        packets = list(stream)
    assert len(packets) == 12
    assert all(p.pcm.shape == (samples,) and p.sample_rate == rate for p in packets)


def test_streams_from_several_threads(greedy_engine):
    results = {}

    def speak(i):
        stream = greedy_engine.open_stream(speaker="ryan", language="english", max_frames=4 + i)
        stream.push_text(f"Thread number {i} speaking.")
        stream.end_text()
        results[i] = len(list(stream))

    threads = [threading.Thread(target=speak, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {i: 4 * (4 + i) for i in range(4)}


def test_frame_cap_follows_text_length(greedy_engine):
    """The tiny model never emits EOS: the cap derived from the text length must stop it."""
    cap = greedy_engine.config.frame_cap
    stream = greedy_engine.open_stream(speaker="ryan", language="english")
    stream.push_text("Hi.")
    stream.end_text()
    list(stream)
    tokens = len(greedy_engine.text_tokenizer.encode("Hi."))
    assert stream.codes.shape[0] == cap.cap(tokens)
    assert stream.stats.finish_reason == "frame_cap"


def test_word_timings_follow_the_dual_track_alignment(greedy_engine):
    text = "The talker reads one text token per frame while it speaks."
    stream = greedy_engine.open_stream(speaker="ryan", language="english", max_frames=40)
    stream.push_text(text)
    stream.end_text()
    packets = list(stream)
    tokens = greedy_engine.text_tokenizer.encode(text)
    words = stream.word_timings()
    assert [w.word for w in words] == text.split()  # one per word, punctuation on its word
    # a word starts at the frame that read its first token (frame k carries text token k) ...
    assert [w.start_s for w in words] == pytest.approx([w.first_token * FRAME_S for w in words])
    assert words[0].start_s == 0.0 and all(w.final for w in words)
    # ... and ends where the next one starts: monotonic, no gaps, the last one ends with the audio
    assert all(a.end_s == b.start_s and a.start_s < a.end_s for a, b in zip(words, words[1:], strict=False))
    audio_s = sum(len(p.pcm) for p in packets) / packets[0].sample_rate
    assert words[-1].end_s == pytest.approx(audio_s)
    assert [greedy_engine.text_tokenizer.decode(tokens[w.first_token:w.end_token]).strip() for w in words] == text.split()


def test_spoken_text_is_the_words_heard_to_their_end(greedy_engine):
    text = "The talker reads one text token per frame while it speaks."
    stream = greedy_engine.open_stream(speaker="ryan", language="english", max_frames=40)
    stream.push_text(text)
    stream.end_text()
    list(stream)
    words = stream.word_timings()
    assert stream.spoken_text(0.0) == "" and stream.spoken_text(words[0].end_s - 0.01) == ""
    assert stream.spoken_text(words[0].end_s) == words[0].word
    third = words[2]
    assert stream.spoken_text(third.end_s) == " ".join(w.word for w in words[:3])
    # a word cut in its middle was not heard as a word
    assert stream.spoken_text((third.start_s + third.end_s) / 2) == " ".join(w.word for w in words[:2])
    assert text.startswith(stream.spoken_text(5 * FRAME_S))
    assert stream.spoken_text(1000.0) == text

