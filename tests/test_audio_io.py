"""PacedAudioOutput / RecordingAudioOutput / WavAudioInput, and a real AgentSession without a room.

Timing bounds are generous: this runs on a loaded 2-core box next to other tests.
"""

from __future__ import annotations

import asyncio
import time
import wave

import numpy as np
import pytest
import soundfile as sf
from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, tts, utils
from livekit.agents.voice import Agent, AgentSession, io
from livekit.plugins import silero

from agent.transport.audio_output import PacedAudioOutput, PlaybackEvent
from agent.transport.worker import ROOM_FRAME_S
from testing.audio_input import WavAudioInput
from testing.recording import RecordingAudioOutput

SR_OUT = 24000
SR_IN = 16000


def tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def frames_of(pcm: np.ndarray, sr: int = SR_OUT, frame_s: float = 0.02) -> list[rtc.AudioFrame]:
    n = round(sr * frame_s)
    return [rtc.AudioFrame(data=pcm[i:i + n].tobytes(), sample_rate=sr, num_channels=1,
                           samples_per_channel=len(pcm[i:i + n])) for i in range(0, len(pcm), n)]


async def push(out: io.AudioOutput, pcm: np.ndarray, *, flush: bool = True) -> None:
    for f in frames_of(pcm):
        await out.capture_frame(f)
    if flush:
        out.flush()


class Events:
    """Collects the base class's livekit events and our listener events."""

    def __init__(self, out: PacedAudioOutput) -> None:
        self.started: list[io.PlaybackStartedEvent] = []
        self.finished: list[io.PlaybackFinishedEvent] = []
        self.progressed: list[io.PlaybackProgressedEvent] = []
        self.listener: list[tuple[PlaybackEvent, float]] = []
        out.on("playback_started", self.started.append)
        out.on("playback_finished", self.finished.append)
        out.on("playback_progressed", self.progressed.append)
        out.add_playback_listener(lambda ev, t: self.listener.append((ev, t)))

    def names(self) -> list[str]:
        assert all(isinstance(ev, PlaybackEvent) for ev, _ in self.listener)
        return [ev.value for ev, _ in self.listener]


async def wait_until(cond, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


# ---- PacedAudioOutput ----------------------------------------------------------------------


async def test_paced_output_plays_one_second_in_real_time():
    out = RecordingAudioOutput(SR_OUT)
    t0 = time.monotonic()
    await push(out, tone(1.0, SR_OUT))
    assert time.monotonic() - t0 < 0.2, "capture_frame must not block on playout"
    assert out.is_playing and out.queued_seconds == pytest.approx(1.0, abs=0.021)
    ev = await asyncio.wait_for(out.wait_for_playout(), 5)
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed <= 1.6
    assert ev.playback_position == pytest.approx(1.0) and not ev.interrupted
    assert out.frames_played == 50 and not out.is_playing and out.queued_seconds == 0
    # paced by absolute deadlines: frame k plays near k*20 ms after frame 0, no accumulated drift
    times = np.array([t for t, _ in out.played])
    drift = times - times[0] - 0.02 * np.arange(len(times))
    assert np.abs(drift).max() < 0.15
    await out.aclose()


async def test_playback_reported_once_per_segment_with_position_and_flag():
    out = PacedAudioOutput(SR_OUT)
    ev = Events(out)
    out.flush()  # nothing captured: no segment, nothing to report
    await push(out, tone(0.2, SR_OUT))
    first = await asyncio.wait_for(out.wait_for_playout(), 5)
    assert (first.playback_position, first.interrupted) == (pytest.approx(0.2), False)

    await push(out, tone(1.0, SR_OUT))
    await wait_until(lambda: out.frames_played >= 15)  # ~0.1 s into the second segment
    out.clear_buffer()
    out.clear_buffer()  # generation.py clears again after cancelling: no second report
    second = await asyncio.wait_for(out.wait_for_playout(), 1)
    assert second.interrupted and 0.05 <= second.playback_position <= 0.6

    assert len(ev.started) == 2 and len(ev.finished) == 2
    assert [e.interrupted for e in ev.finished] == [False, True]
    assert ev.names() == ["started", "finished", "started", "cleared", "finished"]
    assert (out.segments_started, out.segments_finished, out.interrupted_segments) == (2, 2, 1)
    # created_at is wall-clock time, as livekit's PlaybackStartedEvent documents
    assert abs(ev.started[0].created_at - time.time()) < 5
    # the played stretches are reported, offsets within each segment
    assert sum(p.duration for p in ev.progressed) == pytest.approx(0.2 + second.playback_position)
    await out.aclose()


async def test_clear_buffer_is_synchronous_and_marks_silence():
    played: list[rtc.AudioFrame] = []
    out = PacedAudioOutput(SR_OUT, on_play=played.append)
    ev = Events(out)
    await push(out, tone(1.0, SR_OUT))
    await wait_until(lambda: len(ev.started) == 1)
    await asyncio.sleep(0.1)
    t_clear = time.monotonic()
    out.clear_buffer()
    # no await in between: the cut and the report happened inside clear_buffer()
    assert out.queued_seconds == 0 and len(ev.finished) == 1 and ev.finished[0].interrupted
    assert out.silent_since is not None
    assert t_clear <= out.silent_since <= t_clear + 0.021  # at most the frame already in flight
    assert out.silent_since == pytest.approx(max(t_clear, out.audible_until))
    n = len(played)
    await asyncio.sleep(0.15)
    assert len(played) == n and not out.is_playing
    silent_since = out.silent_since
    out.clear_buffer()  # clearing an already silent output does not move silent_since
    assert out.silent_since == silent_since
    await out.aclose()


async def test_clear_while_capturing_drops_rest_and_reports_at_flush():
    out = RecordingAudioOutput(SR_OUT)
    ev = Events(out)
    await push(out, tone(0.5, SR_OUT), flush=False)
    await wait_until(lambda: out.frames_played >= 5)
    out.clear_buffer()
    out.clear_buffer()  # the controller's fast path, then the session's own: one "cleared"
    assert out.queued_seconds == 0 and ev.finished == []  # reported at its flush (as room_io)
    assert ev.names() == ["started", "cleared"]
    n = out.frames_played
    await push(out, tone(0.3, SR_OUT), flush=False)  # the cancelled forwarder's last frames
    assert out.queued_seconds == 0
    out.flush()
    assert len(ev.finished) == 1 and ev.finished[0].interrupted
    assert ev.finished[0].playback_position == pytest.approx(n * 0.02)
    # the next segment plays normally
    await push(out, tone(0.1, SR_OUT))
    last = await asyncio.wait_for(out.wait_for_playout(), 3)
    assert not last.interrupted and last.playback_position == pytest.approx(0.1)
    assert out.frames_played == n + 5
    await out.aclose()


async def test_pause_and_resume_stop_and_restart_playout():
    out = PacedAudioOutput(SR_OUT)
    ev = Events(out)
    t0 = time.monotonic()
    await push(out, tone(0.6, SR_OUT))
    await wait_until(lambda: out.frames_played >= 10)
    out.pause()
    out.pause()  # called on every VAD inference: idempotent
    assert out.paused and out.is_playing
    n = out.frames_played
    await asyncio.sleep(0.4)
    assert out.frames_played == n and out.queued_seconds > 0
    assert ev.finished == []
    out.resume()
    out.resume()
    done = await asyncio.wait_for(out.wait_for_playout(), 5)
    elapsed = time.monotonic() - t0
    assert not done.interrupted and done.playback_position == pytest.approx(0.6)
    assert 0.9 <= elapsed <= 1.8  # 0.6 s of audio + 0.4 s paused
    assert ev.names() == ["started", "paused", "resumed", "finished"]
    assert len(ev.started) == 1  # a mid-segment pause does not re-arm playback_started
    # two runs: before the pause, and from the resume to the end
    assert len(ev.progressed) == 2
    assert ev.progressed[1].offset == pytest.approx(ev.progressed[0].duration)
    assert ev.progressed[0].duration + ev.progressed[1].duration == pytest.approx(0.6)
    await out.aclose()


async def test_long_frames_are_split_and_wrong_rate_rejected():
    played: list[rtc.AudioFrame] = []
    out = PacedAudioOutput(SR_OUT, on_play=played.append)
    pcm = tone(0.1, SR_OUT)
    await out.capture_frame(rtc.AudioFrame(data=pcm.tobytes(), sample_rate=SR_OUT, num_channels=1,
                                           samples_per_channel=len(pcm)))
    out.flush()
    await asyncio.wait_for(out.wait_for_playout(), 3)
    assert [f.samples_per_channel for f in played] == [480] * 5
    assert np.array_equal(np.concatenate([np.frombuffer(f.data, np.int16) for f in played]), pcm)
    with pytest.raises(ValueError):
        await out.capture_frame(frames_of(tone(0.02, 16000), sr=16000)[0])
    await out.aclose()


async def test_room_frames_are_10_ms_so_a_cut_ends_within_10_ms():
    """LiveKit mode plays 10 ms frames (the room source's tick): a clear lets at most 10 ms sound on."""
    played: list[rtc.AudioFrame] = []
    out = PacedAudioOutput(SR_OUT, on_play=played.append, max_frame_s=ROOM_FRAME_S)
    await push(out, tone(0.5, SR_OUT))  # pushed in 20 ms frames, played in 10 ms ones
    await wait_until(lambda: len(played) >= 5)
    assert {f.samples_per_channel for f in played} == {SR_OUT // 100}
    t_clear = time.monotonic()
    out.clear_buffer()
    assert out.silent_since is not None and t_clear <= out.silent_since <= t_clear + 0.011
    await out.aclose()


async def test_aclose_reports_open_segments_and_stops_task():
    out = PacedAudioOutput(SR_OUT)
    await push(out, tone(1.0, SR_OUT))
    await wait_until(lambda: out.frames_played >= 1)
    task = out._task
    await out.aclose()
    ev = await asyncio.wait_for(out.wait_for_playout(), 0.5)
    assert ev.interrupted and task is not None and task.done()
    with pytest.raises(RuntimeError):
        await out.capture_frame(frames_of(tone(0.02, SR_OUT))[0])


async def test_recording_output_returns_played_audio_and_wav(tmp_path):
    out = RecordingAudioOutput(SR_OUT)
    a, b = tone(0.2, SR_OUT, 300), tone(0.1, SR_OUT, 600)
    await push(out, a)
    await out.wait_for_playout()
    await asyncio.sleep(0.1)  # a silent gap between the two segments
    await push(out, b)
    await out.wait_for_playout()
    assert np.array_equal(out.played_audio(), np.concatenate([a, b]))
    on_timeline = out.played_audio(timeline=True)
    assert len(on_timeline) >= len(a) + len(b) + round(0.08 * SR_OUT)
    path = out.write_wav(tmp_path / "played.wav")
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SR_OUT, 1, 2)
        assert np.array_equal(np.frombuffer(w.readframes(w.getnframes()), np.int16), out.played_audio())
    await out.aclose()


# ---- WavAudioInput -------------------------------------------------------------------------


async def read_frames(inp: WavAudioInput, n: int) -> list[rtc.AudioFrame]:
    return [await inp.__anext__() for _ in range(n)]


def energy(frames: list[rtc.AudioFrame]) -> np.ndarray:
    return np.array([np.abs(np.frombuffer(f.data, np.int16).astype(np.int32)).sum() for f in frames])


async def test_wav_input_paces_silent_frames_in_real_time():
    inp = WavAudioInput(sample_rate=SR_IN, frame_ms=20)
    t0 = time.monotonic()
    frames = await read_frames(inp, 25)
    elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed <= 0.8
    assert all(f.samples_per_channel == 320 and f.sample_rate == SR_IN for f in frames)
    assert energy(frames).sum() == 0 and inp.position_s == pytest.approx(0.5)


async def test_wav_input_schedules_clips_at_offsets_and_records_spans():
    inp = WavAudioInput(sample_rate=SR_IN, frame_ms=20)
    clip = tone(0.2, SR_IN)
    first = inp.schedule(clip, at_s=0.3)
    second = inp.append(clip, gap_s=0.2)  # 0.5 + 0.2
    assert second.offset_s == pytest.approx(0.7)
    frames = await read_frames(inp, 60)
    voiced = np.nonzero(energy(frames))[0].tolist()
    assert voiced == list(range(15, 25)) + list(range(35, 45))
    fed = np.concatenate([np.frombuffer(f.data, np.int16) for f in frames])
    assert np.array_equal(fed[round(0.3 * SR_IN):round(0.5 * SR_IN)], clip)
    assert np.array_equal(fed[round(0.7 * SR_IN):round(0.9 * SR_IN)], clip)
    t0 = inp.started_at
    assert t0 is not None
    assert first.started_at == pytest.approx(t0 + 0.3) and first.ended_at == pytest.approx(t0 + 0.5)
    assert second.ended_at == pytest.approx(t0 + 0.9)
    assert first.end_delivered_at is not None and 0 <= first.end_delivered_at - first.ended_at < 0.15
    assert inp.clip_spans == [first, second]


async def test_wav_input_resamples_a_wav_file_and_ends_after_clips(tmp_path):
    path = tmp_path / "clip_24k.wav"
    sf.write(path, tone(0.25, 24000, freq=500), 24000, subtype="PCM_16")
    inp = WavAudioInput(sample_rate=SR_IN)
    span = inp.schedule(path, at_s=0.1)
    assert span.duration_s == pytest.approx(0.25, abs=0.002)
    inp.close_after_clips(tail_s=0.1)
    frames = [f async for f in inp]  # ends by itself
    assert len(frames) == 23  # 0.1 + 0.25 + 0.1 s, rounded up to whole frames
    fed = np.concatenate([np.frombuffer(f.data, np.int16) for f in frames]).astype(np.float64)
    voiced = np.nonzero(np.abs(fed) > 1000)[0]
    assert voiced[0] / SR_IN == pytest.approx(0.1, abs=0.005)
    assert voiced[-1] / SR_IN == pytest.approx(0.35, abs=0.005)
    spectrum = np.abs(np.fft.rfft(fed))
    assert np.fft.rfftfreq(len(fed), 1 / SR_IN)[spectrum.argmax()] == pytest.approx(500, abs=10)


async def test_wav_input_close_ends_iteration():
    inp = WavAudioInput()

    async def consume() -> int:
        return sum([1 async for _ in inp])

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    inp.close()
    n = await asyncio.wait_for(task, 1)
    assert 5 <= n <= 15


# ---- a real AgentSession without a room ----------------------------------------------------


class SineTTS(tts.TTS):
    """Test-only streaming TTS: `seconds` of sine per flushed text, pushed faster than real time."""

    def __init__(self, seconds: float = 0.6) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=True), sample_rate=SR_OUT,
                         num_channels=1)
        self.seconds = seconds

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
                   ) -> tts.ChunkedStream:
        return self._synthesize_with_stream(text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> tts.SynthesizeStream:
        return _SineStream(tts=self, conn_options=conn_options)


class _SineStream(tts.SynthesizeStream):
    _tts: SineTTS

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(request_id=utils.shortuuid(), sample_rate=SR_OUT, num_channels=1,
                                  mime_type="audio/pcm", frame_size_ms=20, stream=True)
        output_emitter.start_segment(segment_id=utils.shortuuid())
        text = ""
        async for data in self._input_ch:
            if isinstance(data, self._FlushSentinel):
                if text.strip():
                    self._speak(output_emitter)
                text = ""
            else:
                text += data
        if text.strip():
            self._speak(output_emitter)

    def _speak(self, output_emitter: tts.AudioEmitter) -> None:
        self._mark_started()
        output_emitter.push(tone(self._tts.seconds, SR_OUT, amp=0.2).tobytes())
        output_emitter.flush()


class SayAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="test agent")
        self.handle_fut: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_enter(self) -> None:
        self.handle_fut.set_result(self.session.say("Hello, this is a test.", allow_interruptions=True))


async def start_session(tts_seconds: float):
    session = AgentSession(
        vad=silero.VAD.load(),
        tts=SineTTS(tts_seconds),
        turn_handling={"turn_detection": "vad", "interruption": {"mode": "vad"}},
    )
    states: list[tuple[str, float]] = []
    session.on("agent_state_changed", lambda ev: states.append((ev.new_state, time.monotonic())))
    mic = WavAudioInput(sample_rate=SR_IN)
    speaker = RecordingAudioOutput(SR_OUT)
    session.input.audio = mic
    session.output.audio = speaker
    agent = SayAgent()
    await session.start(agent)
    return session, agent, mic, speaker, states


async def stop_session(session: AgentSession, mic: WavAudioInput, speaker: PacedAudioOutput) -> None:
    await session.aclose()
    mic.close()
    await speaker.aclose()


def after_speaking(states: list[tuple[str, float]]) -> tuple[float, str, float]:
    names = [s for s, _ in states]
    assert "speaking" in names and names.index("speaking") < len(names) - 1, names
    i = names.index("speaking")
    return states[i][1], names[i + 1], states[i + 1][1]


async def test_agent_session_without_room_plays_say_in_real_time():
    session, agent, mic, speaker, states = await start_session(0.6)
    try:
        handle = await asyncio.wait_for(agent.handle_fut, 5)
        await asyncio.wait_for(handle.wait_for_playout(), 10)  # must not hang
        await wait_until(lambda: states and states[-1][0] == "listening", timeout=2)
    finally:
        await stop_session(session, mic, speaker)

    t_speaking, next_state, t_listening = after_speaking(states)
    assert next_state == "listening"
    assert (speaker.segments_started, speaker.segments_finished, speaker.interrupted_segments) == (1, 1, 0)
    assert len(speaker.played_audio()) / SR_OUT == pytest.approx(0.6, abs=0.021)
    span = speaker.played[-1][0] - speaker.played[0][0]
    assert 0.45 <= span <= 1.2  # 0.58 s between first and last frame, in real time
    # "speaking" starts with the first played frame and ends after the last one
    assert abs(t_speaking - speaker.played[0][0]) < 0.1
    assert t_listening >= speaker.played[-1][0]
    assert mic.frames_produced > 0  # the session was reading the microphone meanwhile


async def test_agent_session_interrupt_clears_output_and_finishes_playout():
    session, agent, mic, speaker, states = await start_session(3.0)
    try:
        handle = await asyncio.wait_for(agent.handle_fut, 5)
        await wait_until(lambda: speaker.frames_played >= 15, timeout=5)
        t_cut = time.monotonic()
        session.interrupt()  # generation.py: cancel forwarding -> flush() -> clear_buffer()
        await asyncio.wait_for(handle.wait_for_playout(), 3)
        assert handle.interrupted
        await wait_until(lambda: states and states[-1][0] == "listening", timeout=2)
    finally:
        await stop_session(session, mic, speaker)

    assert after_speaking(states)[1] == "listening"
    assert (speaker.segments_finished, speaker.interrupted_segments) == (1, 1)
    assert speaker.queued_seconds == 0
    assert len(speaker.played_audio()) / SR_OUT < 1.5  # far from the 3 s synthesized
    # the cut is immediate: at most the frame already in flight is heard after it
    assert speaker.silent_since is not None and speaker.silent_since - t_cut < 0.05
    assert speaker.last_played_at is not None and speaker.last_played_at < t_cut + 0.05
