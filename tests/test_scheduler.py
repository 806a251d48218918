"""GPU priority scheduler, batching and admission control, exercised on the CPU (eager path)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from engine_waits import wait_idle

from tts_engine import EngineBusy, EngineConfig, SchedulerConfig, TTSEngine
from tts_engine.graph_runner import StepRunner

TEXTS = [
    ("ryan", "english", "The first stream speaks a long sentence about the weather today."),
    ("vivian", "chinese", "你好，欢迎使用语音合成服务。今天天气很好。"),
    ("vivian", "english", "A third voice joins a little later."),
    ("ryan", "auto", "And the fourth one is short."),
    ("ryan", "chinese", "我们一起说话吧。"),
]


def _solo_codes(engine, speaker, language, text, frames):
    s = engine.open_stream(speaker=speaker, language=language, max_frames=frames)
    s.push_text(text)
    s.end_text()
    list(s)
    return s.codes


def test_batched_equals_unbatched_with_staggered_mixed_voices(greedy_engine):
    """5 streams, different lengths and voices, started at different times, batched together."""
    frames = [30, 18, 24, 9, 14]
    solo = [_solo_codes(greedy_engine, *TEXTS[i], frames[i]) for i in range(5)]
    streams = []
    for i, (speaker, language, text) in enumerate(TEXTS):
        s = greedy_engine.open_stream(speaker=speaker, language=language, max_frames=frames[i])
        s.push_text(text)
        s.end_text()
        streams.append(s)
        if i < 4:  # let earlier streams get ahead so later ones join a running batch
            next(iter(streams[0])) if i == 0 else time.sleep(0.03 * (i + 1))
    for s in streams:
        list(s)
    assert greedy_engine.stats()["steps"] > 0
    for i, s in enumerate(streams):
        np.testing.assert_array_equal(s.codes, solo[i], err_msg=f"stream {i} ({TEXTS[i][:2]}) differs batched")


def test_new_stream_first_packet_is_not_held_behind_long_streams(greedy_engine):
    long_ones = []
    for speaker, language, text in TEXTS[:4]:
        s = greedy_engine.open_stream(speaker=speaker, language=language, max_frames=400)
        s.push_text(text * 3)
        s.end_text()
        long_ones.append(s)
    for s in long_ones:
        next(iter(s))  # all four are producing
    new = greedy_engine.open_stream(speaker="vivian", language="english", max_frames=5)
    new.push_text("Urgent reply.")
    new.end_text()
    first = next(iter(new))
    assert first.seq == 0
    st = new.stats
    assert st.first_packet_step - st.admitted_step <= 1, (st.admitted_step, st.first_packet_step)
    for s in long_ones:
        s.cancel()
    list(new)
    wait_idle(greedy_engine)


def test_engine_busy_at_the_limit_and_cancel_frees_the_slot_immediately(tiny_checkpoint):
    with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=2)) as engine:
        a = engine.open_stream(speaker="ryan", language="english")
        engine.open_stream(speaker="ryan", language="english")
        assert engine.load() == 1.0
        with pytest.raises(EngineBusy, match=r"all 2 TTS stream slots are in use.*max_streams"):
            engine.open_stream(speaker="ryan", language="english")
        a.cancel()  # frees the slot for new work before the engine thread gets to it
        assert engine.load() == 0.5
        engine.open_stream(speaker="vivian", language="english").cancel()


def test_200_open_cancel_cycles_leave_nothing_behind(tiny_checkpoint):
    with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=4,
                                scheduler=SchedulerConfig(max_lead_s=None))) as engine:
        before = engine.stats()
        for i in range(200):
            s = engine.open_stream(speaker=["ryan", "vivian"][i % 2], language=["english", "chinese", "auto"][i % 3])
            if i % 3:
                s.push_text("Some words that get cut off. ")
            if i % 5 == 0:
                s.end_text()
            if i % 4 == 0 and i % 3:  # read a packet from some of the streams that got text
                next(iter(s), None)
            s.cancel(wait=i % 2 == 0)
        st = wait_idle(engine)
        assert engine.load() == 0.0
        assert st["active_streams"] == 0 and st["running_utterances"] == 0 and st["pending"] == 0
        assert st["kv_cache_bytes"] == before["kv_cache_bytes"]  # preallocated, never grows
        assert st["prefix_cache_entries"] <= len(engine.speakers) * len(engine.languages)
        # and the engine still works afterwards
        assert _solo_codes(engine, "ryan", "english", "Still alive.", 3).shape == (3, 16)


def test_lead_limit_keeps_generation_close_to_playback(tiny_checkpoint):
    """With a 0.3 s lead limit, 40 frames (3.2 s of audio) cannot be produced much faster than real time."""
    with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=2,
                                scheduler=SchedulerConfig(max_lead_s=0.3))) as engine:
        s = engine.open_stream(speaker="ryan", language="english", max_frames=40)
        s.push_text("A reply long enough to run well ahead of real time if nothing held it back. " * 2)
        s.end_text()
        packets = list(s)
    span = packets[-1].ready_at - packets[0].ready_at
    assert span >= 3.2 - 0.08 - 0.3 - 0.1, f"only {span:.2f} s: the engine ran ahead of playback"


def test_earliest_deadline_first_under_a_batch_limit(tiny_checkpoint):
    """max_batch=1: the stream with the least buffered audio is stepped first."""
    with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=3,
                                scheduler=SchedulerConfig(max_lead_s=None, max_batch=1))) as engine:
        ex = engine.executor
        a = engine.open_stream(speaker="ryan", language="english", max_frames=60)
        a.push_text("The early stream. " * 4)
        a.end_text()
        it = iter(a)
        for _ in range(40):
            next(it)  # a is ~10 frames in
        b = engine.open_stream(speaker="vivian", language="english", max_frames=60)
        b.push_text("The late stream. " * 4)
        b.end_text()
        next(iter(b))
        # from here on b has less audio buffered than a, so b is stepped until it catches up
        frames_a, frames_b = a.stats.frames, b.stats.frames
        time.sleep(0.3)
        gained_a, gained_b = a.stats.frames - frames_a, b.stats.frames - frames_b
        assert gained_b > gained_a, (gained_a, gained_b)
        assert ex.sched.max_batch == 1
        a.cancel()
        b.cancel()


def test_uncaptured_shape_falls_back_to_eager_with_a_log_line(greedy_engine, caplog):
    steps = StepRunner(greedy_engine.runner, greedy_engine.config.scheduler, use_graphs=False)
    steps.use_graphs = True  # pretend graphs are on, but none was captured for this shape
    with caplog.at_level(logging.WARNING, logger="tts_engine.graph_runner"):
        value = steps._run(("predict", 4), lambda: 42)
    assert value == 42
    assert steps.eager_fallbacks == 1
    assert "no CUDA graph for ('predict', 4)" in caplog.text


def test_prefix_cache_is_used_and_optional(tiny_checkpoint):
    text = "The prefix cache must not change a single code."
    with TTSEngine(EngineConfig(model=tiny_checkpoint, do_sample=False, max_streams=1,
                                scheduler=SchedulerConfig(max_lead_s=None))) as cached:
        first = _solo_codes(cached, "vivian", "english", text, 12)
        second = _solo_codes(cached, "vivian", "english", text, 12)
        assert cached.runner.prefixes.hits >= 1
    with TTSEngine(EngineConfig(model=tiny_checkpoint, do_sample=False, max_streams=1, prefix_cache=False,
                                scheduler=SchedulerConfig(max_lead_s=None))) as plain:
        uncached = _solo_codes(plain, "vivian", "english", text, 12)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, uncached)


@pytest.mark.parametrize("kwargs,match", [
    (dict(max_lead_s=0), "max_lead_s"),
    (dict(batch_buckets=(4, 2)), "increasing"),
    (dict(max_batch=64), "max_batch"),
])
def test_scheduler_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SchedulerConfig(**kwargs)


def test_a_finished_streams_slot_is_free_when_its_iterator_ends(tiny_checkpoint):
    """Opening the next stream right after the last packet must never hit EngineBusy."""
    with TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=1,
                                scheduler=SchedulerConfig(max_lead_s=None))) as engine:
        for i in range(30):
            assert _solo_codes(engine, "ryan", "english", f"Turn {i}.", 1).shape == (1, 16)
