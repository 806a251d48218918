"""The TTS plugin when a reply is cut before its first frame (a barge-in right after the LLM's first
words): livekit hears "cancelled" (status 499), not "no audio frames were pushed", so the turn is
traced as interrupted, not as a TTS failure."""

from __future__ import annotations

import torch

from agent.plugins.tts_plugin import EngineTTS, SynthesisTiming

torch.set_num_threads(1)


async def test_a_reply_cut_before_its_first_frame_is_not_an_error(engine):
    timings: list[SynthesisTiming] = []
    plugin = EngineTTS(engine, on_timing=timings.append,
                       on_stream_open=lambda timing: timing.engine_stream.cancel())  # cut at once
    stream = plugin.stream()
    stream.push_text("Sure, here is a long answer.")
    stream.end_input()
    frames = [event async for event in stream]
    await stream.aclose()
    assert frames == [] or all(event.frame.samples_per_channel == 0 for event in frames)
    assert timings and all(t.error is None for t in timings), [t.error for t in timings]
    assert engine.stats()["active_streams"] == 0
