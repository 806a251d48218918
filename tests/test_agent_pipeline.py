"""The full-duplex pipeline end to end on the CPU: real livekit AgentSession, real Silero VAD, the
tiny TTS engine, the fake Omni server speaking vLLM-Omni's protocol."""

from __future__ import annotations

import socket

import pytest
import torch

from testing.fake_omni import FakeOmni
from testing.harness import Conversation, agent_config, scripted, speech_wav

torch.set_num_threads(1)

REQUIRED_KEYS = ["session_id", "turn_id", "ts", "user_text", "agent_text", "vad_to_stt_ms", "stt_ms", "llm_ttft_ms",
                 "tts_ttfa_ms", "tts_first_to_publish_ms", "voice_to_voice_ms", "interrupted",
                 "cancel_to_silence_ms", "error"]
DURATIONS = ["vad_to_stt_ms", "stt_ms", "llm_ttft_ms", "tts_ttfa_ms", "tts_first_to_publish_ms", "voice_to_voice_ms",
             "cancel_to_silence_ms", "stt_to_llm_ms", "llm_to_tts_ms", "llm_total_ms"]






@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("speech")
    return {
        # no commas: espeak pauses at them and the VAD would split the utterance in two
        "hello": speech_wav("Hello there how are you today", d / "hello.wav"),
        "weather": speech_wav("What is the weather like tomorrow", d / "weather.wav", voice="en+f3"),
        "stop": speech_wav("Wait stop I have another question", d / "stop.wav", speed=180),
        "thanks": speech_wav("Thank you very much", d / "thanks.wav"),
    }


def assert_trace_sane(rec: dict) -> None:
    for key in REQUIRED_KEYS:
        assert key in rec, f"trace line lacks {key}: {rec}"
    for key in DURATIONS:
        if rec.get(key) is not None:
            assert rec[key] >= 0, f"{key} is negative: {rec}"
    if rec["voice_to_voice_ms"] is not None:
        assert rec["voice_to_voice_ms"] >= rec["stt_ms"]
        assert rec["voice_to_voice_ms"] >= rec["vad_to_stt_ms"]


async def test_one_turn_end_to_end(engine, vad, speech, tmp_path):
    omni = FakeOmni(transcripts=scripted("Hello there, how are you today?"), reply=lambda messages: "I am fine, thank you.")
    url = await omni.start()
    try:
        async with Conversation(engine, agent_config(url, tmp_path), vad) as conv:
            conv.mic.schedule(speech["hello"], at_s=0.3)
            await conv.wait_turns(1, timeout=30)
            rec = conv.turns[0]
            assert rec["user_text"] == "Hello there, how are you today?"
            assert rec["agent_text"] == "I am fine, thank you."
            assert rec["error"] is None and rec["interrupted"] is False
            for key in ["vad_to_stt_ms", "stt_ms", "llm_ttft_ms", "tts_ttfa_ms", "tts_first_to_publish_ms",
                        "voice_to_voice_ms"]:
                assert rec[key] is not None, f"{key} missing: {rec}"
            assert_trace_sane(rec)
            assert conv.speaker.frames_played > 10, "the agent's audio must have been played"
            assert conv.trace_file_records() == conv.turns
    finally:
        await omni.stop()


def _user_messages(request: dict) -> list[str]:
    return [m["content"] if isinstance(m["content"], str) else " ".join(p.get("text", "") for p in m["content"])
            for m in request["json"]["messages"] if m["role"] in ("user", "assistant")]


async def test_three_turns_carry_the_history(engine, vad, speech, tmp_path):
    said = ["Hello there, how are you today?", "What is the weather like tomorrow?", "Thank you very much."]
    omni = FakeOmni(transcripts=scripted(*said), reply=lambda messages: f"Reply number {sum(m['role'] == 'user' for m in messages)}.")
    url = await omni.start()
    try:
        async with Conversation(engine, agent_config(url, tmp_path), vad) as conv:
            for i, clip in enumerate(["hello", "weather", "thanks"]):
                conv.mic.append(speech[clip], gap_s=0.3)
                await conv.wait_turns(i + 1, timeout=30)
                await conv.wait_for(lambda: not conv.speaker.is_playing, 15, "the reply to finish playing")
            llm_requests = [r for r in omni.requests if r["json"] and r["audio"] is None]
            assert len(llm_requests) == 3
            third = _user_messages(llm_requests[2])
            assert third == [said[0], "Reply number 1.", said[1], "Reply number 2.", said[2]]
            assert llm_requests[2]["json"]["messages"][0]["role"] == "system"
            assert [t["agent_text"] for t in conv.turns] == ["Reply number 1.", "Reply number 2.", "Reply number 3."]
            for rec in conv.turns:
                assert_trace_sane(rec)
                assert rec["error"] is None
    finally:
        await omni.stop()


LONG_REPLY = ("Let me tell you a long story about the sea, the wind and the old lighthouse keeper who "
              "counted every wave that broke on the rocks below his window for forty years.")


async def test_barge_in_silences_cancels_and_the_next_turn_works(engine, vad, speech, tmp_path):
    omni = FakeOmni(transcripts=scripted("Hello there, how are you today?", "Wait, stop, I have another question."),
                    reply=lambda messages: LONG_REPLY if len(messages) <= 2 else "Sure, go ahead.",
                    llm_token_interval_s=0.12)  # the reply is still streaming when the user cuts in
    url = await omni.start()
    timings = []
    try:
        async with Conversation(engine, agent_config(url, tmp_path), vad) as conv:
            previous = conv.pipeline.tts.on_timing
            conv.pipeline.tts.on_timing = lambda t: (timings.append(t), previous(t))
            conv.mic.schedule(speech["hello"], at_s=0.3)
            await conv.wait_for(lambda: conv.speaker.frames_played > 25, 30, "the agent to be speaking")
            stop_span = conv.mic.schedule(speech["stop"], at_s=conv.mic.position_s + 0.1)
            await conv.wait_turns(2, timeout=40)
            first, second = conv.turns[0], conv.turns[1]
            barge = conv.pipeline.controller.history[0]
            # silenced by the first hot VAD window, before the VAD confirmed speech (the early pause) ...
            assert barge.paused_at is not None and barge.paused_at <= barge.detected_at
            # ... and silent within one frame of it, checked on what was actually played
            late_frames = [t for t, _ in conv.speaker.played if barge.paused_at + 0.032 < t < barge.paused_at + 1.0]
            assert late_frames == [], f"{len(late_frames)} frames played after the barge-in"
            assert first["interrupted"] is True and first["cancel_to_silence_ms"] is not None
            assert first["cancel_to_silence_ms"] <= 32
            assert first["barge_in_outcome"] == "cut"
            assert first["barge_in_paused_by"] in ("level", "vad", "start_of_speech")
            # the onset is backdated from the VAD's detection by the speech it needed (>= min_speech_s),
            # never to before the interrupting clip began (its first sample, on the same clock)
            assert barge.onset_at is not None and barge.onset_at >= stop_span.started_at - 0.02
            assert first["barge_in_detect_ms"] >= 0.05 * 1000 * 0.95
            # silence comes before the VAD's confirmation (plus at most the 20 ms frame in flight)
            assert 0 < first["onset_to_silence_ms"] <= first["barge_in_detect_ms"] + 20
            # END_OF_SPEECH waits min_silence_s (0.3 s here) of silence: that wait is reported, and
            # voice-to-voice includes it
            assert second["endpointing_ms"] >= 0.3 * 1000 * 0.95
            assert second["voice_to_voice_ms"] >= max(second["endpointing_ms"], second["stt_ms"])
            assert first["tts_ttfa_ms"] is not None and first["voice_to_voice_ms"] is not None
            assert len(first["agent_text"]) < len(LONG_REPLY), "only what was spoken enters the history"
            await omni.wait_for_disconnects(1, timeout=2.0)  # the LLM HTTP stream was closed
            assert timings[0].engine_stream.stats.finish_reason == "cancelled"
            assert second["user_text"] == "Wait, stop, I have another question."
            assert second["agent_text"] == "Sure, go ahead." and second["interrupted"] is False
            for rec in conv.turns:
                assert_trace_sane(rec)
            history = _user_messages([r for r in omni.requests if r["json"] and r["audio"] is None][-1])
            assert history[1] == first["agent_text"]  # the interrupted reply as far as it was spoken
    finally:
        await omni.stop()



def _fake(**kw) -> FakeOmni:
    return FakeOmni(transcripts=scripted("Hello there how are you today", "What is the weather like tomorrow"),
                    reply=lambda messages: "A short answer.", **kw)


async def _fault_then_recover(engine, vad, speech, tmp_path, omni: FakeOmni, expect_error: str,
                              port: int = 0, timeout_s: float = 3.0, before_turn_2=None) -> list[dict]:
    """Turn 1 hits the fault; turn 2, in the same session, must work. Returns the trace lines."""
    url = f"http://127.0.0.1:{port}/v1" if port else await omni.start()
    try:
        async with Conversation(engine, agent_config(url, tmp_path, timeout_s=timeout_s), vad) as conv:
            conv.mic.schedule(speech["hello"], at_s=0.3)
            await conv.wait_turns(1, timeout=30)
            failed = conv.turns[0]
            assert failed["error"] is not None and expect_error in failed["error"], failed
            await conv.wait_for(lambda: not conv.speaker.is_playing, 15, "silence after the failed turn")
            if before_turn_2 is not None:
                await before_turn_2()
            conv.mic.append(speech["weather"], gap_s=0.5)
            await conv.wait_for(lambda: any(t["error"] is None and t["agent_text"] for t in conv.turns[1:]), 30,
                                "a good turn after the fault")
            for rec in conv.turns:
                assert_trace_sane(rec)
            return conv.turns
    finally:
        await omni.stop()


async def test_stt_500_is_traced_and_the_session_survives(engine, vad, speech, tmp_path):
    omni = _fake()
    omni.fail_next("status_500", count=2, target="stt")  # the one framework retry fails too
    await _fault_then_recover(engine, vad, speech, tmp_path, omni, "stt:")


async def test_stt_timeout_is_traced_and_the_session_survives(engine, vad, speech, tmp_path):
    omni = _fake(timeout_sleep_s=5.0)
    omni.fail_next("timeout", count=2, target="stt")
    await _fault_then_recover(engine, vad, speech, tmp_path, omni, "stt:", timeout_s=0.8)


async def test_connection_refused_then_the_server_comes_up(engine, vad, speech, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    omni = _fake()
    # the first turn's requests are refused; the server starts before the second turn
    await _fault_then_recover(engine, vad, speech, tmp_path, omni, "stt:", port=port,
                              before_turn_2=lambda: omni.start(port))


async def test_llm_disconnect_mid_stream_is_traced_and_the_session_survives(engine, vad, speech, tmp_path):
    omni = FakeOmni(transcripts=scripted("Hello there how are you today", "What is the weather like tomorrow"),
                    reply=lambda messages: "Here is an answer that breaks off in the middle of a sentence.")
    omni.fail_next("disconnect_mid_stream", target="llm")  # not retried: a retry would repeat speech
    turns = await _fault_then_recover(engine, vad, speech, tmp_path, omni, "llm:")
    assert omni.aborts == 1
    assert turns[0]["agent_text"] != "Here is an answer that breaks off in the middle of a sentence."


async def test_tts_engine_error_is_traced_and_the_session_survives(engine, vad, speech, tmp_path):
    failures = {"left": 1}  # engine errors are not retried: audio may already have gone out
    real_predict = engine.runner.predict_fn

    def broken_predict(slots):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("injected device fault")
        return real_predict(slots)

    engine.runner.predict_fn = broken_predict
    try:
        await _fault_then_recover(engine, vad, speech, tmp_path, _fake(), "tts:")
    finally:
        del engine.runner.predict_fn
    assert engine.stats()["active_streams"] == 0


@pytest.mark.parametrize("policy,outcome", [("resume", "false_resumed"), ("drop", "false_dropped")])
async def test_short_backchannel_is_tolerated_by_policy(engine, vad, speech, tmp_path, policy, outcome):
    """With 0.8 s of speech needed to barge in, a short 'yes' pauses the agent and then resumes
    it (or, with the 'drop' policy, ends the reply)."""
    from agent.session.duplex import DuplexConfig
    yes = speech_wav("yes", tmp_path / "yes.wav")
    omni = FakeOmni(transcripts=scripted("Hello there how are you today", "yes"),
                    reply=lambda messages: LONG_REPLY if len(messages) <= 2 else "Okay.")
    url = await omni.start()
    cfg = agent_config(url, tmp_path, duplex=DuplexConfig(barge_in_min_speech_s=0.8, false_interruption=policy))
    try:
        async with Conversation(engine, cfg, vad) as conv:
            conv.mic.schedule(speech["hello"], at_s=0.3)
            await conv.wait_for(lambda: conv.speaker.frames_played > 25, 30, "the agent to be speaking")
            conv.mic.schedule(yes, at_s=conv.mic.position_s + 0.05)
            await conv.wait_for(lambda: conv.pipeline.controller.history, 15, "the backchannel to be resolved")
            barge = conv.pipeline.controller.history[0]
            assert barge.outcome.value == outcome
            await conv.wait_turns(1, timeout=40)
            first = conv.turns[0]
            assert first["barge_in_outcome"] == outcome
            if policy == "resume":
                assert first["interrupted"] is False and first["agent_text"] == LONG_REPLY
                # it really paused: no frame was played between detection and the end of the backchannel
                resumed_at = next(t for t, state in conv.pipeline.controller.transitions
                                  if t > barge.detected_at and state.value == "speaking")
                gap = [t for t, _ in conv.speaker.played if barge.detected_at + 0.032 < t < resumed_at]
                assert gap == []
            else:
                assert first["interrupted"] is True and len(first["agent_text"]) < len(LONG_REPLY)
            assert_trace_sane(first)
    finally:
        await omni.stop()
