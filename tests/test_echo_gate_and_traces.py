"""Echo gate decisions and the tracer's rules (unit level: the end-to-end tests cover the wiring)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice import io

from agent.observe.traces import TraceWriter, TurnTracer
from agent.session.barge_in import BargeInOutcome
from agent.session.echo_gate import LEVEL_BLOCK_S, EchoGate, EchoGateConfig, block_rms, frame_rms
from testing.soak_report import trace_problems


def _frame(level: float, samples: int = 320, rate: int = 16000) -> rtc.AudioFrame:
    tone = (level * np.sqrt(2) * np.sin(np.arange(samples) * 0.3) * 32767).astype(np.int16)
    return rtc.AudioFrame(data=tone.tobytes(), sample_rate=rate, num_channels=1, samples_per_channel=samples)


class _Mic(io.AudioInput):
    def __init__(self, frames):
        super().__init__(label="mic")
        self._frames = list(frames)

    async def __anext__(self):
        if not self._frames:
            raise StopAsyncIteration
        return self._frames.pop(0)


def test_block_levels_show_an_onset_in_the_frames_last_5_ms_that_the_frames_mean_hides():
    onset = _frame(0.02)
    samples = np.frombuffer(onset.data, dtype=np.int16).copy()
    samples[:240] = 0  # 15 ms of silence, then 5 ms of speech at -34 dBFS
    late = rtc.AudioFrame(data=samples.tobytes(), sample_rate=16000, num_channels=1, samples_per_channel=320)
    assert frame_rms(late) < 0.01  # the whole frame's RMS stays under -40 dBFS
    assert block_rms(late) == pytest.approx([0, 0, 0, 0.02], abs=0.002)
    # a frame that does not divide into whole blocks keeps its remainder as a last, shorter block
    odd = rtc.AudioFrame(data=np.full(100, 3277, np.int16).tobytes(), sample_rate=16000, num_channels=1,
                         samples_per_channel=100)
    assert block_rms(odd) == pytest.approx([0.1, 0.1], rel=0.01)


async def test_echo_is_gated_only_while_the_agent_plays():
    gate = EchoGate(_Mic([_frame(0.02), _frame(0.02), _frame(0.3), _frame(0.02)]), EchoGateConfig(min_ratio=0.1))
    first = await gate.__anext__()
    assert frame_rms(first) == pytest.approx(0.02, rel=0.05)  # nothing played yet: passes untouched
    gate.observe_played(_frame(0.5, rate=24000))  # the agent is speaking loudly
    echo = await gate.__anext__()
    assert frame_rms(echo) == 0.0  # 0.02 < 0.1 x 0.5: residual echo, silenced before the VAD
    user = await gate.__anext__()
    assert frame_rms(user) == pytest.approx(0.3, rel=0.05)  # a user talking over the agent is heard
    assert (gate.gated_frames, gate.passed_frames) == (1, 2)


async def test_the_gate_reports_only_frames_louder_than_the_echo_while_the_agent_plays():
    heard: list[tuple[list[float], float]] = []
    frames = [_frame(0.3), _frame(0.02), _frame(0.3)]
    gate = EchoGate(_Mic(frames), EchoGateConfig(min_ratio=0.1), on_voice_over_playback=lambda *a: heard.append(a))
    await gate.__anext__()  # nothing played: a user's turn, not a voice over the agent
    gate.observe_played(_frame(0.5, rate=24000))
    await gate.__anext__()  # echo: gated, not reported
    await gate.__anext__()
    levels, block_s = heard[0]
    assert len(heard) == 1 and block_s == LEVEL_BLOCK_S and len(levels) == 4  # a 20 ms frame: four 5 ms blocks
    assert levels == pytest.approx([0.3] * 4, rel=0.1)
    off = EchoGate(_Mic([_frame(0.3)]), EchoGateConfig(enabled=False), on_voice_over_playback=lambda *a: heard.append(a))
    off.observe_played(_frame(0.5, rate=24000))
    await off.__anext__()
    assert len(heard) == 1  # without the gate nothing tells the user from the echo: no report


async def test_gate_forgets_playback_after_its_window_and_can_be_disabled():
    gate = EchoGate(_Mic([_frame(0.02)]), EchoGateConfig(window_s=0.05))
    gate.observe_played(_frame(0.5, rate=24000))
    time.sleep(0.08)
    assert frame_rms(await gate.__anext__()) > 0  # the echo path's window has passed
    off = EchoGate(_Mic([_frame(0.02)]), EchoGateConfig(enabled=False))
    off.observe_played(_frame(0.5, rate=24000))
    assert frame_rms(await off.__anext__()) > 0


async def _feed_while_playing(gate: EchoGate, played: float, heard: float, frames: int) -> list[float]:
    """The agent plays at `played` while the mic hears `heard`, frame by frame; the levels passed on."""
    out = []
    for _ in range(frames):
        gate.observe_played(_frame(played, rate=24000))
        out.append(frame_rms(await gate.__anext__()))
    return out


async def test_gate_ratio_follows_the_measured_echo_return():
    cfg = EchoGateConfig(min_ratio=0.1, min_samples=25)
    quiet_room = EchoGate(_Mic([_frame(0.0)] * 30 + [_frame(0.02)]), cfg)
    assert quiet_room.ratio == 0.1  # nothing measured yet: the configured ratio
    await _feed_while_playing(quiet_room, 0.5, 0.0, 30)  # no echo comes back (browser AEC, headphones)
    assert quiet_room.ratio == cfg.floor_ratio
    # now a soft first syllable at 0.04 x the agent's level is heard, not eaten as echo
    assert await _feed_while_playing(quiet_room, 0.5, 0.02, 1) == [pytest.approx(0.02, rel=0.05)]

    echoing = EchoGate(_Mic([_frame(0.05)] * 30 + [_frame(0.08), _frame(0.3)]), cfg)
    passed = await _feed_while_playing(echoing, 0.5, 0.05, 30)  # echo returns at 0.1 of the played level
    assert echoing.ratio == pytest.approx(0.2, rel=0.05) and not any(passed)  # gated throughout, 6 dB above
    echo_peak, user = await _feed_while_playing(echoing, 0.5, 0.0, 2)
    assert echo_peak == 0.0 and user == pytest.approx(0.3, rel=0.05)

    # a user talking over the agent is measured too, but does not move the ratio: their next words
    # after the cut are not taken for echo
    barge = EchoGate(_Mic([_frame(0.0)] * 30 + [_frame(0.3)] * 4 + [_frame(0.05)]), cfg)
    await _feed_while_playing(barge, 0.5, 0.0, 34)
    assert barge.ratio == cfg.floor_ratio
    assert await _feed_while_playing(barge, 0.5, 0.0, 1) == [pytest.approx(0.05, rel=0.05)]

    loud = EchoGate(_Mic([_frame(0.4)] * 30), replace(cfg, min_ratio=0.5))
    await _feed_while_playing(loud, 0.5, 0.4, 30)
    assert loud.ratio == cfg.max_ratio  # a user is never asked to be louder than half the agent

    # echo that gets louder (the volume turned up a notch, under 2x the gate): the estimate climbs with it
    rising = EchoGate(_Mic([_frame(0.01)] * 30 + [_frame(0.018)] * 300), cfg)
    await _feed_while_playing(rising, 0.5, 0.0, 30)
    assert rising.ratio == pytest.approx(0.04, rel=0.05)
    assert not any(await _feed_while_playing(rising, 0.5, 0.0, 300))  # gated throughout
    assert rising.ratio == pytest.approx(0.072, rel=0.05)

    fixed = EchoGate(_Mic([_frame(0.0)] * 30), EchoGateConfig(min_ratio=0.1, adaptive=False))
    await _feed_while_playing(fixed, 0.5, 0.0, 30)
    assert fixed.ratio == 0.1


REPLY = object()  # one LLM request: the tracer files its reports under the turn it answers


def test_tracer_accepts_stt_before_the_sessions_vad_end(tmp_path):
    """livekit's STT adapter runs its own VAD: its transcript may come before the session's end of speech."""
    tracer = TurnTracer("s", TraceWriter(tmp_path, "s"))
    tracer.stt_finished(20.0, "hello")  # STT (adapter VAD) first ...
    tracer.user_speech_ended()  # ... then the session's VAD end, a few ms later: the same end
    tracer.llm_started(REPLY)
    tracer.llm_first_token(REPLY)
    tracer.tts_timing("a", time.monotonic(), time.monotonic(), None)
    tracer.playback_started()
    tracer.agent_message("hi", interrupted=False)
    (rec,) = tracer.records
    assert rec["user_text"] == "hello"
    for key in ["vad_to_stt_ms", "stt_ms", "llm_ttft_ms", "tts_ttfa_ms", "voice_to_voice_ms"]:
        assert rec[key] is not None and rec[key] >= 0, key
    assert rec["voice_to_voice_ms"] >= rec["stt_ms"]
    assert (tmp_path / "s.jsonl").read_text().count("\n") == 1


def test_empty_transcript_makes_no_turn_and_errors_close_turns(tmp_path):
    tracer = TurnTracer("s", None)
    tracer.user_speech_ended()
    tracer.stt_finished(5.0, "   ")
    tracer.agent_idle()
    assert tracer.records == []
    tracer.user_speech_ended()
    tracer.stt_finished(5.0, "", error="HTTP 500")
    (rec,) = tracer.records
    assert rec["error"] == "stt: HTTP 500" and rec["closed_by"] == "stt_error"


def test_barge_in_closes_the_cut_turn_with_its_spoken_text(tmp_path):
    tracer = TurnTracer("s", None)
    tracer.user_speech_ended()
    tracer.stt_finished(5.0, "tell me a story")
    tracer.llm_started(REPLY)
    tracer.llm_first_token(REPLY)
    tracer.playback_started()
    tracer.barge_in(4.2, BargeInOutcome.CUT)
    assert tracer.records == []  # waits for the truncated assistant message
    tracer.agent_message("Once upon", interrupted=True)
    (cut,) = tracer.records
    assert cut["interrupted"] and cut["cancel_to_silence_ms"] == 4.2 and cut["agent_text"] == "Once upon"
    assert tracer.turn is not None and tracer.turn.opened_by == "barge_in"


def test_a_turn_opened_by_a_barge_in_is_not_timed_out_while_the_user_still_talks():
    """The cut makes the agent listen at once; the user's turn is just starting. Only a turn whose
    reply was under way may be closed for want of an assistant message (the 100-turn soak with a
    barge-in every other turn lost turns this way when the user spoke for more than 2 s)."""
    tracer = TurnTracer("s", None)
    tracer.user_speech_ended()
    tracer.stt_finished(5.0, "tell me a story")
    tracer.llm_started(REPLY)
    tracer.playback_started()
    tracer.barge_in(4.2, BargeInOutcome.CUT)
    assert tracer.agent_idle() is None  # the new turn has no reply yet: nothing is due
    tracer.agent_message("Once", interrupted=True)
    tracer.user_speech_ended()
    tracer.stt_finished(5.0, "wait stop")
    tracer.llm_started(object())  # its reply starts: a stale timer armed at the cut would close it here
    tracer.tts_timing("b", time.monotonic(), time.monotonic(), None)
    tracer.playback_started()
    due = tracer.agent_idle()
    assert due == tracer.turn.turn_id  # now the assistant message is due
    tracer.agent_message("Sure.", interrupted=False)
    cut, answered = tracer.records
    assert answered["agent_text"] == "Sure." and answered["closed_by"] == "done"
    assert answered["tts_ttfa_ms"] is not None and answered["voice_to_voice_ms"] is not None
    tracer.close_if_stale(due)  # the timer firing late changes nothing
    assert len(tracer.records) == 2


def _reply(tracer: TurnTracer, clock: list[float], first_token_at: float, tts: tuple[float, float],
           published_at: float) -> dict:
    """The LLM's first token, the TTS's first text and audio, the first frame out and the assistant
    message, on the patched clock; the one finished turn's record."""
    clock[0] = first_token_at
    tracer.llm_first_token(REPLY)
    tracer.tts_timing("a", *tts, None)
    clock[0] = published_at
    tracer.playback_started()
    tracer.agent_message("Hi.", interrupted=False)
    (rec,) = tracer.records
    return rec


def test_a_late_session_vad_end_after_a_queued_stt_keeps_voice_to_voice_above_stt(monkeypatch):
    """Two sessions on the stand-ins: the transcription queued for 2 s, and the session's own VAD
    (late on a loaded machine) reported the end of speech only after the transcript was back. The
    request cannot have started before the speech ended, so voice-to-voice counts from it (it used
    to count from the late VAD end: 750 ms of voice-to-voice around a 2200 ms STT)."""
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    tracer = TurnTracer("s", None)
    clock[0] = 102.2
    tracer.stt_finished(2200.0, "hello there", queue_ms=1800.0)  # sent at 100.0
    clock[0] = 102.25
    tracer.user_speech_ended()  # the session's VAD, late
    clock[0] = 102.3
    tracer.llm_started(REPLY)
    tracer.llm_queued(REPLY, 300.0)
    rec = _reply(tracer, clock, 102.8, (102.85, 102.95), 103.0)
    assert rec["stt_ms"] == 2200.0 and rec["voice_to_voice_ms"] == 3000.0
    assert rec["stt_queue_ms"] == 1800.0 and rec["llm_queue_ms"] == 300.0
    assert rec["pipeline_overhead_ms"] >= 0


def test_voice_to_voice_counts_from_the_true_end_of_speech_and_reports_the_endpointing_wait(monkeypatch):
    """Silero says END_OF_SPEECH only after min_silence_s of silence; livekit backdates the event to
    the real end. Voice-to-voice starts there (what the person waits through), and the wait before
    the detection is its own figure."""
    clock = [100.5]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    tracer = TurnTracer("s", None)
    tracer.user_speech_ended(ended_at=100.0)  # detected at 100.5: 500 ms of endpointing
    clock[0] = 101.0
    tracer.stt_finished(400.0, "hello")  # sent at 100.6
    clock[0] = 101.05  # the end-of-turn wait after the transcript (livekit's endpointing delay)
    tracer.llm_started(REPLY)
    rec = _reply(tracer, clock, 101.3, (101.35, 101.6), 102.0)
    assert rec["endpointing_ms"] == 550.0  # the VAD's 500 ms of silence + the 50 ms wait: deciding, not modelling
    assert rec["voice_to_voice_ms"] == 2000.0  # from 100.0, not from the detection at 100.5
    assert rec["vad_to_stt_ms"] == 1000.0 and rec["pipeline_overhead_ms"] >= 0
    # the same moments as monotonic stamps, for a client on this host to line up with its own
    assert rec["clock"] == {"speech_end": 100.0, "vad_end": 100.5, "stt_started": 100.6, "stt_done": 101.0,
                            "llm_started": 101.05, "llm_first_token": 101.3, "tts_first_audio": 101.6,
                            "published": 102.0}


def test_a_turn_without_the_sessions_vad_end_has_no_endpointing_figure(monkeypatch):
    clock = [10.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    tracer = TurnTracer("s", None)
    tracer.stt_finished(200.0, "hello")  # only the STT adapter's VAD saw this end
    tracer.llm_started(REPLY)
    rec = _reply(tracer, clock, 10.0, (10.0, 10.1), 10.5)
    assert rec["endpointing_ms"] is None and rec["voice_to_voice_ms"] == 700.0


def test_a_barge_in_records_its_onset_to_silence_and_detection_time():
    tracer = TurnTracer("s", None)
    tracer.user_speech_ended()
    tracer.stt_finished(5.0, "tell me a story")
    tracer.llm_started(REPLY)
    tracer.playback_started()
    stamps = {"barge_in_onset": 7.0, "barge_in_detected": 7.2468, "barge_in_cut": 7.247, "barge_in_silent": 7.251}
    tracer.barge_in(4.2, BargeInOutcome.CUT, onset_to_silence_ms=251.0, detect_ms=246.8, clock=stamps,
                    paused_by="level")
    tracer.agent_message("Once", interrupted=True)
    (cut,) = tracer.records
    assert cut["barge_in_paused_by"] == "level"
    assert (cut["cancel_to_silence_ms"], cut["onset_to_silence_ms"], cut["barge_in_detect_ms"]) == (4.2, 251.0, 246.8)
    assert stamps.items() <= cut["clock"].items()


def test_barge_in_times_from_the_backdated_onset():
    from agent.session.barge_in import BargeIn

    b = BargeIn(detected_at=50.30, silent_at=50.32, while_state="speaking", onset_at=50.05)
    assert b.detect_ms == pytest.approx(250.0) and b.onset_to_silence_ms == pytest.approx(270.0)
    assert b.cancel_to_silence_ms == pytest.approx(20.0)
    b.cut_at = 50.31
    assert b.clock() == {"barge_in_onset": 50.05, "barge_in_detected": 50.30, "barge_in_cut": 50.31,
                         "barge_in_silent": 50.32}
    unknown = BargeIn(detected_at=1.0, silent_at=1.0, while_state="thinking")
    assert unknown.onset_to_silence_ms is None and unknown.detect_ms is None


def test_a_wall_clock_stamp_maps_onto_the_monotonic_clock(monkeypatch):
    from agent.session.clock import monotonic_from_wall

    monkeypatch.setattr(time, "monotonic", lambda: 500.0)
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
    assert monotonic_from_wall(1_800_000_000.0 - 0.35) == pytest.approx(499.65)
    assert monotonic_from_wall(1_800_000_000.0 + 5) == 500.0  # a stamp from the future is now
    assert monotonic_from_wall(None) == 500.0


def test_a_reply_replaced_before_it_played_closes_its_turn_as_superseded():
    """On a loaded machine the user's sentence can reach the agent in two transcripts: a reply to the
    first part is still queued when the rest arrives, and livekit replaces it with a reply to both
    (adding no message for the one that never played). The first turn is written at once as
    superseded; the new request's reports land on the next turn, not on the first."""
    tracer = TurnTracer("s", None)
    tracer.user_speech_ended()
    tracer.stt_finished(5.0, "Can you recommend a good book to")
    first, second = object(), object()
    tracer.llm_started(first)
    tracer.llm_queued(first, 900.0)
    tracer.user_speech_ended()  # the rest of the sentence, while the first reply waits
    tracer.stt_finished(5.0, "read")
    tracer.llm_started(second)
    (superseded,) = tracer.records
    assert superseded["superseded"] and superseded["closed_by"] == "superseded"
    assert superseded["llm_ttft_ms"] is None and superseded["llm_queue_ms"] == 900.0
    assert trace_problems(superseded, "s") == []  # a reply never heard has only the stages up to it
    tracer.llm_finished(first, "cancelled")  # the replaced request ends: it belongs to no turn now
    tracer.llm_first_token(second)
    tracer.tts_timing("b", time.monotonic(), time.monotonic(), None)
    tracer.playback_started()
    tracer.agent_message("Try Dune.", interrupted=False)
    answered = tracer.records[-1]
    assert answered["user_text"] == "read" and not answered["superseded"] and answered["error"] is None
    assert answered["llm_ttft_ms"] is not None and answered["voice_to_voice_ms"] is not None
    assert trace_problems(answered, "s") == []
