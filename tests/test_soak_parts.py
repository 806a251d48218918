"""The soak test's pieces that need no running system: the LiveKit client's paced microphone and its
/metrics leak check (no livekit-server on this machine: the full LiveKit soak runs where one is),
the event log both clients share, the verdicts in testing/soak_report.py and the duplex benchmark's
analysis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import ClientSession, web

from testing.browser_call import FULL_PACKET_BYTES, voiced_packets
from testing.duplex_bench import analyse, barge_ins_per_call, pool_calls, summary
from testing.event_log import EventLog, Said
from testing.host_cpu import cpu_share, cpu_ticks
from testing.livekit_client import MIC_FRAME, LiveKitClient, metric_value, metrics_leak_check
from testing.plots import duplex_timeline
from testing.soak import Soak
from testing.soak_report import REQUIRED_KEYS, memory_growth, trace_problems
from testing.utterances import RATE, Utterance

METRICS_BUSY = """# HELP agent_active_sessions Conversations in progress
# TYPE agent_active_sessions gauge
agent_active_sessions 1.0
agent_engine_active_streams 1.0
agent_turns_total 3.0
"""


def test_metric_value_reads_unlabelled_samples_only():
    assert metric_value(METRICS_BUSY, "agent_active_sessions") == 1.0
    assert metric_value(METRICS_BUSY, "agent_turns_total") == 3.0
    assert metric_value(METRICS_BUSY, "agent_turns") is None  # a prefix of another name is not that name
    assert metric_value("", "agent_active_sessions") is None


async def serve_metrics(bodies: list[str]) -> tuple[web.AppRunner, str]:
    """A /metrics endpoint answering with each body in turn, then the last one forever."""
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(text=bodies.pop(0) if len(bodies) > 1 else bodies[0])

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/metrics"


async def test_metrics_leak_check_waits_for_the_session_to_end():
    idle = METRICS_BUSY.replace(" 1.0", " 0.0")
    runner, url = await serve_metrics([METRICS_BUSY, METRICS_BUSY, idle])
    try:
        async with ClientSession() as http:
            result = await metrics_leak_check(http, url, timeout_s=10)
    finally:
        await runner.cleanup()
    assert result["problems"] == []
    assert result["metrics"] == {"active_sessions": 0.0, "active_streams": 0.0}


async def test_metrics_leak_check_names_what_is_left():
    runner, url = await serve_metrics([METRICS_BUSY])
    try:
        async with ClientSession() as http:
            result = await metrics_leak_check(http, url, timeout_s=0.6)
    finally:
        await runner.cleanup()
    assert result["problems"] == ["after hanging up and 1 s: 1.0 session(s) and 1.0 engine stream(s) still active"]


async def test_metrics_leak_check_without_metrics_says_how_to_get_them():
    runner, url = await serve_metrics(["# nothing of ours\n"])
    try:
        async with ClientSession() as http:
            result = await metrics_leak_check(http, url, timeout_s=0.3)
    finally:
        await runner.cleanup()
    assert "AGENT_HEALTH_PORT" in result["problems"][0]


async def test_livekit_microphone_sends_speech_in_10ms_frames_then_silence():
    client = LiveKitClient("http://127.0.0.1:9/metrics")
    pcm = (np.arange(int(RATE * 0.025)) % 100).astype(np.int16) + 1  # 25 ms: two full frames and a half
    first = client.say(Utterance("hi", "en-us", 150, pcm))
    second = client.say(Utterance("again", "en-us", 150, pcm))
    chunks = [client._next_chunk() for _ in range(3)]
    assert all(len(c) == MIC_FRAME for c in chunks)
    assert np.array_equal(np.concatenate(chunks)[: len(pcm)], pcm)
    assert not chunks[2][len(pcm) - 2 * MIC_FRAME:].any()  # the last partial frame is padded with silence
    assert len(client._speech) == 1  # the second utterance is next: queued behind the first, not started
    assert first.first_frame_at is not None and second.first_frame_at is None
    # the capture clock of what was said starts one mic frame before its first frame left
    assert first.capture_start == pytest.approx(first.first_frame_at - MIC_FRAME / RATE)
    client._next_chunk()
    assert second.first_frame_at is not None and second.first_frame_at >= first.first_frame_at
    await client.room.disconnect()


async def test_event_log_tracks_state_session_and_voiced_audio():
    log = EventLog()
    log._on_message(json.dumps({"type": "session", "session_id": "room-p1"}))
    log._on_message(json.dumps({"type": "agent_state", "state": "speaking"}))
    log._on_message(b"not json")
    assert log.session_id() == "room-p1"
    assert log.agent_state() == "speaking"
    assert log.of_type("unparsable")[0].data["raw"] == "b'not json'"
    log._on_audio_frame(np.zeros(480, dtype=np.float32))
    log._on_audio_frame(np.full(480, 0.2, dtype=np.float32))
    assert log.frames_in == 2 and len(log.voiced_at) == 1
    assert await log.wait_for(lambda: log.agent_state() == "listening", 0.2) is None


def turn(**overrides: object) -> dict[str, object]:
    record: dict[str, object] = {
        "session_id": "s1", "turn_id": 1, "ts": 1.0, "user_text": "hi", "agent_text": "hello",
        "vad_to_stt_ms": 10.0, "stt_ms": 100.0, "llm_ttft_ms": 200.0, "tts_ttfa_ms": 50.0,
        "voice_to_voice_ms": 400.0, "interrupted": False, "cancel_to_silence_ms": None, "error": None}
    for key in REQUIRED_KEYS:
        record.setdefault(key, None)
    record.update(overrides)
    return record


def test_trace_problems_flag_negative_missing_and_foreign_records():
    assert trace_problems(turn(), "s1") == []
    assert any("negative" in p or "< 0" in p for p in trace_problems(turn(stt_ms=-3.0), "s1"))
    broken = turn()
    del broken["user_text"]
    assert any("user_text" in p for p in trace_problems(broken, "s1"))
    assert any("s1" in p or "session" in p for p in trace_problems(turn(session_id="other"), "s1"))


def test_memory_growth_flags_a_service_that_grew_or_died():
    start = {"agent": {"rss_mb": 500.0, "alive": True}, "token_server": {"rss_mb": 60.0, "alive": True}}
    end = {"agent": {"rss_mb": 950.0, "alive": True}, "token_server": {"rss_mb": 61.0, "alive": True}}
    growth, failures = memory_growth(start, end, max_growth_mb=300)
    assert growth["agent"]["rss_growth_mb"] == pytest.approx(450.0)
    assert len(failures) == 1 and "agent" in failures[0]


def test_a_reply_cut_before_its_first_audio_needs_no_tts_figures():
    """Interrupted before a frame was heard: no TTS or voice-to-voice figure exists, and that is
    consistent; an uninterrupted answer without them is not, nor is a cut turn without its STT."""
    cut = turn(interrupted=True, cancel_to_silence_ms=0.0, tts_ttfa_ms=None, voice_to_voice_ms=None)
    assert trace_problems(cut, "s1") == []
    assert any("tts_ttfa_ms" in p for p in trace_problems(turn(tts_ttfa_ms=None), "s1"))
    assert any("stt_ms" in p for p in trace_problems({**cut, "stt_ms": None}, "s1"))


def test_a_reply_cut_after_its_first_audio_but_before_publishing_needs_no_voice_to_voice():
    """The TTS had its first frame, the cut came before the transport got it: nothing was heard, so no
    voice-to-voice figure; once the clock says a frame was published, one is required."""
    clock = {"speech_end": 1.0, "stt_done": 1.2, "tts_first_audio": 1.5}
    cut = turn(interrupted=True, cancel_to_silence_ms=0.0, voice_to_voice_ms=None, clock=clock)
    assert trace_problems(cut, "s1") == []
    heard = {**cut, "clock": {**clock, "published": 1.51}}
    assert any("voice_to_voice_ms" in p for p in trace_problems(heard, "s1"))


def test_bench_duplex_lines_up_the_agents_stamps_with_what_the_client_said_and_heard(tmp_path):
    """One turn answered, then a barge-in on the next reply, on one clock: each stage lands at its
    offset from our onset / end of speech, and the plot is drawn."""

    spoken = [{"turn": 1, "text": "a", "barging": False, "onset": 10.0, "speech_end": 11.0, "sent_until": 11.3},
              {"turn": 2, "text": "b", "barging": True, "onset": 14.0, "speech_end": 15.0, "sent_until": 15.3}]
    records = [
        {"turn_id": 1, "interrupted": True, "stt_ms": 90.0, "llm_ttft_ms": 40.0, "tts_ttfa_ms": 45.0,
         "clock": {"speech_end": 11.02, "vad_end": 11.4, "stt_done": 11.5, "llm_started": 11.51, "llm_first_token": 11.55,
                   "tts_first_audio": 11.6, "published": 11.61, "barge_in_onset": 14.1, "barge_in_paused": 14.13,
                   "barge_in_detected": 14.16, "barge_in_cut": 14.161, "barge_in_silent": 14.14}},
        {"turn_id": 2, "interrupted": False,
         "clock": {"speech_end": 15.05, "vad_end": 15.4, "stt_done": 15.45, "llm_first_token": 15.5,
                   "tts_first_audio": 15.55, "published": 15.56}},
    ]
    heard = [11.7 + 0.02 * k for k in range(150)] + [15.65, 15.67]  # the first reply until cut, then the second
    heard = [t for t in heard if not 14.25 < t < 15.6]  # silent 250 ms after our onset
    result = analyse(spoken, records, heard)
    (barge,) = result["barge_ins"]
    assert barge["matched_turn_id"] == 1 and barge["agent_was_audible"]
    assert (barge["agent_onset"], barge["paused"], barge["vad_detected"], barge["cut"], barge["agent_silent"]) == (
        100.0, 130.0, 160.0, 161.0, 140.0)
    assert 230 <= barge["heard_silent"] <= 250
    first, second = result["turns"]
    assert first["end_of_speech"] == 400.0 and first["published"] == 610.0 and first["heard"] == 700.0
    # deciding the turn was over: the VAD's 400 ms + 10 ms after the transcript; models 175 ms; the rest 115
    assert (first["endpointing_wait"], first["model_time"], first["beyond_endpointing_and_models"]) == (410.0, 175.0,
                                                                                                        115.0)
    assert first["beyond_at_playout"] is None  # no playout stamps from this client
    assert second["endpointing_wait"] is None  # its record names no model times: not guessed
    played = analyse(spoken, records, heard, played_at=[11.66, 11.68])["turns"][0]
    assert played["played"] == 660.0 and played["beyond_at_playout"] == 75.0
    assert second["matched_turn_id"] == 2 and second["heard"] == 650.0
    assert result["barge_in_stages_ms"]["heard_silent"]["n"] == 1 and result["turns_counted"] == 2
    duplex_timeline(result, tmp_path / "timeline.png", "test")
    assert (tmp_path / "timeline.png").read_bytes().startswith(b"\x89PNG")


def test_playout_stamps_are_told_by_the_audio_level_header_else_by_where_a_run_of_full_packets_starts():
    """The page's [t, level, bytes] per packet at playout. Direct mode's packets carry the audio-level
    header: every voiced packet counts. LiveKit's SFU drops it, and the page reads sizes: silence is
    Opus DTX (2-byte frames, a 56-byte refresh every 400 ms), a reply a run of full-size packets, and
    silence right after a reply is full-size too - so only where each reply starts is told."""
    direct = [[1.00, 0.0, None], [1.02, 0.2, None], [1.04, 0.3, None], [1.06, 0.0, None]]
    assert voiced_packets(direct) == {"played_at": [1.02, 1.04], "played_by": "audio level",
                                      "reply_starts_only": False}
    full = FULL_PACKET_BYTES + 90
    dtx = [[0.0, None, 2], [0.4, None, 56], [0.42, None, 2], [0.82, None, 56], [0.84, None, 2]]
    reply = [[1.0 + 0.02 * k, None, full] for k in range(20)]  # then the encoder's full-size silence
    second = [[2.0, None, 56], [2.02, None, 2], [2.5, None, full], [2.52, None, full], [2.54, None, full]]
    told = voiced_packets(dtx + reply + second)
    assert told == {"played_at": [1.0, 2.5], "played_by": "payload size", "reply_starts_only": True}
    # a reply right after a DTX refresh (400 ms after the DTX frame before it) starts after the refresh
    after_refresh = [[0.0, None, 2], [0.4, None, 56], [0.42, None, full], [0.44, None, full], [0.46, None, full]]
    assert voiced_packets(after_refresh)["played_at"] == [0.42]
    # two full packets are not yet a run (a refresh and a frame of noise); a gap breaks a run
    assert voiced_packets([[0.0, None, full], [0.02, None, full], [0.2, None, full], [0.3, None, full],
                           [0.4, None, full]])["played_at"] == []
    assert voiced_packets([])["played_by"] is None


def test_where_only_reply_starts_are_told_a_cut_replys_playout_end_is_not_guessed():
    spoken = [{"turn": 1, "text": "a", "barging": False, "onset": 10.0, "speech_end": 11.0, "sent_until": 11.3},
              {"turn": 2, "text": "b", "barging": True, "onset": 12.0, "speech_end": 13.0, "sent_until": 13.3}]
    records = [{"turn_id": 1, "interrupted": True,
                "clock": {"vad_end": 11.4, "stt_done": 11.5, "llm_started": 11.5, "published": 11.6,
                          "barge_in_onset": 12.05}}]
    heard = [11.7 + 0.02 * k for k in range(20)]
    starts = analyse(spoken, records, heard, played_at=[11.66], played_ends=False)
    assert starts["turns"][0]["played"] == 660.0 and starts["barge_ins"][0]["played_silent"] is None
    every = analyse(spoken, records, heard, played_at=[11.66, 12.06], played_ends=True)
    assert every["barge_ins"][0]["played_silent"] == 60.0


def test_the_bench_reports_how_busy_the_hosts_cpus_were_and_how_much_the_hypervisor_stole(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 50 0 25 400 5 0 0 20 0 0\n")
    before = cpu_ticks(stat)
    stat.write_text("cpu  160 0 70 900 10 0 0 60 0 0\n")  # +60 user +20 system +100 idle +20 steal
    assert cpu_share(before, cpu_ticks(stat)) == {"busy_pct": 40.0, "steal_pct": 10.0}
    assert cpu_ticks(tmp_path / "missing") is None and cpu_share(None, before) is None
    assert cpu_share(before, before) is None  # no time passed: no share to tell
    assert "20.0% stolen" in summary({**analyse([], [], []), "host_cpu": {"busy_pct": 50.0, "steal_pct": 20.0}},
                                     "direct")


class SplittingAgent(EventLog):
    """A caller whose agent hears the first utterance as two turns (a pause mid-sentence on loaded
    cores): it answers the first half while we still speak, is cut by the second half, and answers
    again after we stop. Every later utterance gets one plain reply."""

    def __init__(self) -> None:
        super().__init__()
        self.said: list[Said] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.send({"type": "agent_state", "state": "listening"})

    def send(self, data: dict[str, object]) -> None:
        self._on_message(json.dumps(data))

    def say(self, utt: Utterance) -> Said:
        now = time.monotonic()
        said = Said(utt, now, 0.01, first_frame_at=now)
        self.said.append(said)
        self.tasks.append(asyncio.create_task(self._answer(said, split=len(self.said) == 1)))
        return said

    async def _answer(self, said: Said, split: bool) -> None:
        async def at(t: float, *events: dict[str, object]) -> None:
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            for event in events:
                self.send(event)

        if split:  # the first half's reply starts and is cut, all before our speech ends
            await at(said.onset + 0.1, {"type": "agent_state", "state": "speaking"})
            await at(said.onset + 0.2, {"type": "agent_state", "state": "listening"},
                     {"type": "turn", **turn(interrupted=True)})
        await at(said.speech_end + 0.1, {"type": "agent_state", "state": "thinking"})
        await at(said.speech_end + 0.2, {"type": "agent_state", "state": "speaking"})
        await at(said.speech_end + 0.3, {"type": "agent_state", "state": "listening"}, {"type": "turn", **turn()})


async def test_soak_waits_for_the_reply_after_the_speech_when_one_utterance_made_two_turns():
    client = SplittingAgent()
    loud = np.full(int(RATE * 0.4), 8000, dtype=np.int16)
    utterances = [Utterance(text, "en-us", 150, loud) for text in ("one two", "three")]
    soak = Soak(client, utterances, turn_timeout_s=5, max_reply_s=5, seed=0, barge_in_every=100)  # type: ignore[arg-type]
    await soak.run()
    records = client.of_type("turn")
    assert len(records) == 3 and not soak.failures
    first_reply_done = records[1].at  # the reply to the second half, heard after we stopped
    assert client.said[1].pushed_at > first_reply_done  # not after the first half's record
    await asyncio.gather(*client.tasks)


def test_bench_summary_names_the_listeners_jitter_buffer_only_where_the_client_read_one():
    empty = analyse([], [], [])
    buffer = {"mean_ms": 29.8, "target_ms": 20.1, "minimum_ms": 20.1}
    with_buffer = summary({**empty, "listener_receive_buffer": buffer}, "livekit mode")
    assert "jitter buffer over the call: mean 29.8 ms, target 20.1, minimum 20.1" in with_buffer
    assert "jitter buffer" not in summary({**empty, "listener_receive_buffer": None}, "direct mode")


def _one_turn_call(published: float, heard: float, buffer_ms: float, failures: list[str]) -> dict:
    """A call's analysis with one turn heard `heard - published` s after its first frame was published."""
    spoken = [{"turn": 1, "text": "a", "barging": False, "onset": 10.0, "speech_end": 11.0, "sent_until": 11.3}]
    records = [{"turn_id": 1, "interrupted": False, "stt_ms": 10.0, "llm_ttft_ms": 10.0, "tts_ttfa_ms": 10.0,
                "clock": {"speech_end": 11.0, "vad_end": 11.3, "stt_done": 11.35, "llm_started": 11.35,
                          "llm_first_token": 11.36, "tts_first_audio": 11.38, "published": published}}]
    return {"mode": "livekit", "client": "LiveKitClient", "failures": failures,
            "listener_receive_buffer": {"mean_ms": buffer_ms, "target_ms": 20.1, "minimum_ms": 20.1},
            **analyse(spoken, records, [heard])}


def test_several_calls_are_pooled_and_each_calls_listener_path_is_reported():
    """The transport's framing phases are set per call, so the bench pools calls: every stage over all
    their events, each call's published -> heard wait on its own, failures named by call."""
    calls = [_one_turn_call(11.40, 11.435, 20.0, []), _one_turn_call(11.40, 11.455, 30.0, ["a reply was lost"])]
    report = pool_calls(calls)
    assert report["turns_counted"] == 2 and report["turn_stages_ms"]["heard"]["n"] == 2
    assert report["turn_stages_ms"]["heard"]["max"] == 455.0
    assert [c["published_to_heard_ms"]["p50"] for c in report["calls"]] == [35.0, 55.0]
    assert [c["published_to_played_ms"]["n"] for c in report["calls"]] == [0, 0]  # no playout stamps here
    assert report["failures"] == ["call 2: a reply was lost"]
    assert report["listener_receive_buffer"]["mean_ms"] == 30.0  # the last call's, as a single call reports it
    text = summary(report, "livekit mode")
    assert "2 calls pooled" in text and "call 1: heard 35.0, jitter buffer mean 20.0" in text
    page_call = {**calls[0], "listener_receive_buffer": None, "page": {"jitter_buffer_ms": 40}}
    assert "call 1: heard 35.0, jitter buffer mean 40.0" in summary(pool_calls([page_call, calls[1]]), "livekit")
    single = pool_calls(calls[1:])
    assert single["failures"] == ["a reply was lost"] and "calls pooled" not in summary(single, "livekit mode")


def test_barge_ins_are_spread_over_the_calls_as_evenly_as_they_go():
    assert barge_ins_per_call(20, 1) == [20]
    assert barge_ins_per_call(20, 5) == [4, 4, 4, 4, 4]
    assert barge_ins_per_call(7, 3) == [3, 2, 2]
    assert sum(barge_ins_per_call(21, 4)) == 21


@pytest.mark.parametrize("calls", ["0", "4"])
def test_bench_duplex_refuses_more_calls_than_barge_ins_or_none_before_it_calls_anyone(calls, tmp_path):
    """Every call makes at least one barge-in: --calls outside 1..--barge-ins is a usage error, said
    plainly, before anything is spoken or written."""
    out = tmp_path / "never.json"
    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "bench_duplex.py"),
                           "--barge-ins", "3", "--calls", calls, "--json", str(out), "--base", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--calls must be between 1 and --barge-ins" in done.stderr, done.stderr
    assert not out.exists()
