"""The agent hears its own voice and does not cut itself off; it still stops for the user.

A real AgentSession with real Silero and the real duplex controller, echo gate and paced output;
the agent's voice is espeak-ng speech (tests/spoken_engine.py: the tiny test voice is noise that
Silero ignores, which would make these tests pass for the wrong reason), and what it plays comes
back into the microphone like a loudspeaker's echo.
"""

from __future__ import annotations

import pytest
import torch
from spoken_engine import EchoPath, SpokenEngine

from agent.session.barge_in import BargeInOutcome
from agent.session.echo_gate import EchoGateConfig
from testing.fake_omni import FakeOmni
from testing.harness import Conversation, agent_config, scripted, speech_wav

torch.set_num_threads(1)

REPLY = "That is a good question and here is a short answer to it."
USER = ["Hello there how are you today", "What is the weather like tomorrow", "Tell me a short story about a cat",
        "Can you recommend a good book to read"]


@pytest.fixture(scope="module")
def user_clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    return [speech_wav(text, d / f"u{i}.wav", voice=("en-us", "en+f3")[i % 2]) for i, text in enumerate(USER)]


async def _talk(conv: Conversation, clips, turns: int) -> None:
    """`turns` user turns, each after the agent's reply (and its echo) has finished."""
    for i in range(turns):
        conv.mic.schedule(clips[i % len(clips)], at_s=conv.mic.position_s + 0.4)
        await conv.wait_turns(i + 1, timeout=40)
        await conv.wait_for(lambda: not conv.speaker.is_playing, 30, "the reply to finish playing")


# Echo levels: -26 dB is what a browser's echo cancellation typically leaves; -12 dB a speakerphone
# without any (the user, at the agent's own level, is still 6 dB above the gate there).
@pytest.mark.slow
@pytest.mark.parametrize("gain_db,turns", [(-26, 20), (-12, 6)])
async def test_the_agents_own_voice_in_the_microphone_never_interrupts_it(vad, user_clips, tmp_path,
                                                                           gain_db, turns):
    omni = FakeOmni(transcripts=scripted(*(USER * 10)), reply=lambda messages: REPLY)
    url = await omni.start()
    try:
        async with Conversation(SpokenEngine(), agent_config(url, tmp_path), vad) as conv:
            echo = EchoPath(conv.mic, conv.speaker, gain=10 ** (gain_db / 20), delay_s=0.06)
            await _talk(conv, user_clips, turns)
            controller, gate = conv.pipeline.controller, conv.pipeline.echo_gate
            assert echo.frames > 100 * turns, "the agent's voice must have come back into the microphone"
            assert gate is not None and gate.gated_frames > 50 * turns, "and been heard there"
            assert controller.history == [], f"the agent cut itself off: {controller.history}"
            assert controller.early_pauses == 0, "nor paused for its own echo"
            assert [t["interrupted"] for t in conv.turns] == [False] * turns
            assert all(t["agent_text"] == REPLY and t["error"] is None for t in conv.turns)
    finally:
        await omni.stop()


@pytest.mark.slow
async def test_without_the_echo_gate_the_same_echo_does_interrupt(vad, user_clips, tmp_path):
    """The control: the echo above is loud enough for Silero, so the gate is what keeps the agent going."""
    omni = FakeOmni(transcripts=scripted(*(USER * 10)), reply=lambda messages: REPLY)
    url = await omni.start()
    cfg = agent_config(url, tmp_path, echo=EchoGateConfig(enabled=False))
    try:
        async with Conversation(SpokenEngine(), cfg, vad) as conv:
            EchoPath(conv.mic, conv.speaker, gain=10 ** (-12 / 20), delay_s=0.06)
            conv.mic.schedule(user_clips[0], at_s=0.3)
            await conv.wait_for(lambda: conv.pipeline.controller.history or conv.pipeline.controller.early_pauses,
                                40, "the agent to react to its own echo")
    finally:
        await omni.stop()


async def test_user_talking_over_the_echoing_agent_still_cuts_it(vad, user_clips, tmp_path):
    omni = FakeOmni(transcripts=scripted(USER[0], USER[1]), reply=lambda messages: REPLY * 3)
    url = await omni.start()
    try:
        async with Conversation(SpokenEngine(), agent_config(url, tmp_path), vad) as conv:
            EchoPath(conv.mic, conv.speaker, gain=10 ** (-26 / 20), delay_s=0.06)
            conv.mic.schedule(user_clips[0], at_s=0.3)
            await conv.wait_for(lambda: conv.speaker.frames_played > 100, 40, "the agent to be speaking")
            conv.mic.schedule(user_clips[1], at_s=conv.mic.position_s + 0.02)
            await conv.wait_for(lambda: conv.pipeline.controller.history, 10, "the barge-in")
            barge = conv.pipeline.controller.history[0]
            assert barge.outcome is BargeInOutcome.CUT and barge.paused_at is not None
            # the cut turn's record is written when what was spoken of its reply reaches the chat history,
            # a moment after the cut (agent/observe/traces.py: TurnTracer.agent_message)
            await conv.wait_for(lambda: conv.turns, 10, "the interrupted turn's trace record")
            assert conv.turns[0]["interrupted"] is True
    finally:
        await omni.stop()
