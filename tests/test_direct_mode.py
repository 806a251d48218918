"""Direct mode end to end on 127.0.0.1: an aiortc CLIENT peer (playing espeak-ng speech as its
microphone) talks WebRTC to the agent's signalling server, with the fake Omni server and the tiny
TTS engine behind it. What a browser does, minus the browser."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
import wave

import aiohttp
import aioice.ice
import av
import numpy as np
import pytest
import torch
from aiohttp import web
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from direct_fixtures import Server
from livekit import rtc

from agent.direct import DirectServerConfig, make_app
from agent.direct.ice import configure_ice, filter_candidates
from agent.direct.jitter import audio_prefetch
from agent.direct.webrtc_io import OutgoingAudioTrack, WebRTCAudioInput
from testing.direct_client import DirectClient, OfferRefused
from testing.fake_omni import FakeOmni
from testing.harness import agent_config
from testing.utterances import Utterance, utterance
from token_server.config import TokenServerConfig
from token_server.tokens import mint_token

torch.set_num_threads(1)

KEYS = TokenServerConfig(api_key="test-key", api_secret="s" * 40)
LONG_REPLY = ("Let me tell you a long story about the sea, the wind and the old lighthouse keeper who "
              "counted every wave that broke on the rocks below his window for forty years.")






@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("direct-speech")
    return {"short": utterance("Good morning", d / "short.wav"),
            "long": utterance("Tell me what the weather will be like tomorrow afternoon", d / "long.wav")}


def transcribe_by_length(wav: bytes) -> str:
    """The fake STT tells the two clips apart by their length, so each client's transcript is its own."""
    with wave.open(io.BytesIO(wav)) as w:
        seconds = w.getnframes() / w.getframerate()
    return "Good morning." if seconds < 2.5 else "Tell me what the weather will be like tomorrow afternoon."


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def fake_omni(long_reply: bool = True):
    """The weather question gets a long reply (7 s of audio: time to vanish or barge in)."""
    # started inside each test: an async fixture would run on another event loop than the test
    def reply(messages: list[dict]) -> str:
        return LONG_REPLY if long_reply and "weather" in json.dumps(messages[-1]) else "Good morning to you."

    fake = FakeOmni(transcripts=transcribe_by_length, reply=reply)
    url = await fake.start()
    try:
        yield url
    finally:
        await fake.stop()


def http_client() -> aiohttp.ClientSession:
    # no keep-alive: an idle server-side connection task would look like a leak in the teardown check
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


def direct_app(engine, vad, url, tmp_path, **overrides) -> web.Application:
    # these tests make more offers from one address than the default rate limit allows
    overrides = {"offer_rate_per_min": 1e6, "offer_rate_burst": 10**6, **overrides}
    cfg = DirectServerConfig(api_key=KEYS.api_key, api_secret=KEYS.api_secret, **overrides)
    return make_app(cfg, agent_config(url, tmp_path), engine, vad)


def token(identity: str = "alice", **kw) -> str:
    return mint_token(KEYS, room="room1", identity=identity, **kw)


async def connect(client: DirectClient, http: aiohttp.ClientSession, server: Server, identity: str = "alice") -> None:
    """The page's offer (the agent's start-up configured aioice for this process: 127.0.0.1 only)."""
    await client.connect(http, f"{server.base}/api/offer", token(identity))


async def start_talking(client: DirectClient, utt: Utterance) -> None:
    await wait_for(lambda: {"type": "agent_state", "state": "listening"} in client.events(), 20,
                   "the session to be listening")
    client.say(utt)


async def test_one_turn_over_webrtc(engine, vad, speech, tmp_path):
    async with fake_omni() as url, Server(direct_app(engine, vad, url, tmp_path)) as server, \
            http_client() as http:
        client = DirectClient()
        await connect(client, http, server)
        assert client.answer["type"] == "answer" and "a=sendrecv" in client.answer["sdp"]
        assert all(" 127.0.0.1 " in line for line in client.answer["sdp"].splitlines() if line.startswith("a=candidate"))
        await start_talking(client, speech["short"])
        await wait_for(lambda: client.events("turn"), 40, "a turn record")
        await wait_for(lambda: len(client.voiced_at) > 10, 10, "the agent's audio")
        session = client.events("session")[0]
        assert session["session_id"] == client.answer["session_id"]
        assert client.events()[0]["type"] == "session"
        assert {"type": "transcript", "role": "user", "text": "Good morning.", "final": True} in client.events()
        turn = client.events("turn")[0]
        assert turn["user_text"] == "Good morning." and turn["error"] is None
        assert turn["voice_to_voice_ms"] is not None and turn["voice_to_voice_ms"] > 0
        async with http.get(f"{server.base}/healthz") as health:
            assert (await health.json())["peers"] == 1
        (peer,) = server.direct.peers.values()  # the user's audio is passed on as it arrives, not held 4 packets
        assert [audio_prefetch(r) for r in peer.pc.getReceivers()] == [0]
        async with http.get(f"{server.base}/metrics") as scrape:  # what Prometheus sees of this turn
            metrics = await scrape.text()
        assert "agent_turns_total 1.0" in metrics
        assert 'agent_turn_stage_ms_count{stage="voice_to_voice"} 1.0' in metrics
        assert "agent_active_sessions 1.0" in metrics and "agent_engine_load" in metrics
        async with http.delete(f"{server.base}/api/peer/{client.answer['peer_id']}",
                               headers={"Authorization": f"Bearer {token()}"}) as bye:
            assert bye.status == 204
        assert server.direct.peers == {}
        await client.close()


async def test_two_clients_get_independent_sessions(engine, vad, speech, tmp_path):
    async with fake_omni(long_reply=False) as url, Server(direct_app(engine, vad, url, tmp_path)) as server, \
            http_client() as http:
        a, b = DirectClient(), DirectClient()
        for client, who in ((a, "alice"), (b, "bob")):
            await connect(client, http, server, who)
        assert a.answer["session_id"] != b.answer["session_id"]
        await asyncio.gather(start_talking(a, speech["short"]), start_talking(b, speech["long"]))
        await wait_for(lambda: a.events("turn") and b.events("turn"), 60, "a turn in each session")
        assert [m["text"] for m in a.events("transcript") if m["role"] == "user"] == ["Good morning."]
        assert [m["text"] for m in b.events("transcript") if m["role"] == "user"] == [
            "Tell me what the weather will be like tomorrow afternoon."]
        assert a.events("session")[0]["session_id"] == a.answer["session_id"]
        assert b.events("session")[0]["session_id"] == b.answer["session_id"]
        assert a.events("turn")[0]["session_id"] == a.answer["session_id"]
        assert b.events("turn")[0]["session_id"] == b.answer["session_id"]
        await wait_for(lambda: len(a.voiced_at) > 10 and len(b.voiced_at) > 10, 20, "agent audio on both calls")
        await asyncio.gather(a.close(), b.close())
        await wait_for(lambda: not server.direct.peers, 20, "both peers to be torn down")


async def test_a_client_that_vanishes_mid_turn_is_torn_down(engine, vad, speech, tmp_path):
    async with fake_omni() as url, Server(direct_app(engine, vad, url, tmp_path)) as server, \
            http_client() as http:
        before = asyncio.all_tasks()
        client = DirectClient()
        await connect(client, http, server)
        await start_talking(client, speech["long"])
        await wait_for(lambda: len(client.voiced_at) > 10, 40, "the agent to be speaking")
        assert engine.stats()["active_streams"] >= 1 and not client.events("turn"), "not mid-turn"
        await client.pc.close()  # no DELETE, no bye: the tab is gone
        await wait_for(lambda: not server.direct.peers, 20, "the peer to be torn down")
        await wait_for(lambda: engine.stats()["active_streams"] == 0, 5, "the engine's streams to be released")

        def leaked() -> list[str]:
            return sorted(t.get_name() for t in asyncio.all_tasks() - before if t is not asyncio.current_task())

        await wait_for(lambda: not leaked(), 10, "the peer's tasks to end")



def cut_network(pc: RTCPeerConnection) -> None:
    """Close the peer's UDP sockets under aiortc: no DTLS close, no RTCP BYE, nothing more on the
    wire - what a killed browser or a dropped Wi-Fi looks like from the other end."""
    connection = pc.getTransceivers()[0].receiver.transport.transport.iceGatherer._connection
    for protocol in connection._protocols:
        protocol.transport.close()


async def test_a_peer_that_goes_silent_is_dropped_after_the_media_timeout(engine, vad, speech, tmp_path):
    async with fake_omni() as url, Server(direct_app(engine, vad, url, tmp_path, media_timeout_s=2.0)) as server, \
            http_client() as http:
        client = DirectClient()
        await connect(client, http, server)
        await wait_for(lambda: {"type": "agent_state", "state": "listening"} in client.events(), 20, "the session")
        peer = next(iter(server.direct.peers.values()))
        cut_network(client.pc)
        await wait_for(lambda: not server.direct.peers, 15, "the silent peer to be dropped")
        assert peer.close_reason == "media_timeout"
        await client.close()

async def test_auth_and_offer_errors(engine, vad, speech, tmp_path):
    async with fake_omni() as url, Server(direct_app(engine, vad, url, tmp_path, max_peers=1)) as server, \
            http_client() as http:
        offer_url = f"{server.base}/api/offer"
        good_offer = {"type": "offer", "sdp": "v=0\r\n"}
        wrong_keys = TokenServerConfig(api_key=KEYS.api_key, api_secret="x" * 40)
        cases = {
            "missing_token": {},
            "token_malformed": {"Authorization": "Bearer not-a-jwt"},
            "token_bad_signature": {"Authorization": f"Bearer {mint_token(wrong_keys, room='room1', identity='eve')}"},
            "token_expired": {"Authorization": f"Bearer {token(now=time.time() - 7200)}"},
        }
        for code, headers in cases.items():
            async with http.post(offer_url, json=good_offer, headers=headers) as resp:
                assert resp.status == 401, code
                assert (await resp.json())["error"]["code"] == code
        auth = {"Authorization": f"Bearer {token()}"}
        for body in ("not json", json.dumps({"type": "answer", "sdp": "v=0"}), json.dumps({"type": "offer"}),
                     json.dumps({"type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}),
                     json.dumps({"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nbroken\r\n"})):
            async with http.post(offer_url, data=body, headers=auth) as resp:
                assert resp.status == 400, body
                assert (await resp.json())["error"]["code"] == "bad_offer"
        assert server.direct.peers == {}, "a rejected offer leaves no peer behind"
        first = DirectClient()
        await connect(first, http, server)
        second = DirectClient()
        with pytest.raises(OfferRefused) as refused:
            await connect(second, http, server, "bob")
        assert refused.value.status == 503 and json.loads(refused.value.body)["error"]["code"] == "too_many_peers"
        async with http.options(offer_url, headers={"Origin": "http://127.0.0.1:8080",
                                                    "Access-Control-Request-Method": "POST"}) as pre:
            assert pre.status == 204
            assert pre.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8080"
        async with http.post(offer_url, json=good_offer, headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403
        await asyncio.gather(first.close(), second.close())


async def test_barge_in_silences_the_wire(engine, vad, speech, tmp_path):
    async with fake_omni() as url, Server(direct_app(engine, vad, url, tmp_path)) as server, \
            http_client() as http:
        client = DirectClient()
        await connect(client, http, server)
        await start_talking(client, speech["long"])
        await wait_for(lambda: len(client.voiced_at) > 25, 40, "the agent to be speaking")
        client.say(speech["short"])  # talk over the agent
        await wait_for(lambda: client.events("barge_in"), 10, "the barge-in")
        cut_at = time.monotonic()
        peer = next(iter(server.direct.peers.values()))
        # nothing of the cut reply waits in the track (it sends each frame as it comes, and a cut clears it)
        assert peer.track.queued_seconds == 0, "the cut reply's audio is still queued on the track"
        await asyncio.sleep(0.6)  # still inside the user's speech: no reply can have started yet
        late = [t for t in client.voiced_at if cut_at + 0.25 < t < cut_at + 0.6]
        assert late == [], f"{len(late)} voiced frames reached the client after the barge-in"
        await client.close()
        await wait_for(lambda: not server.direct.peers, 20, "the peer to be torn down")


# ---- the pieces on their own ---------------------------------------------------------------------


class FakeRemoteTrack(MediaStreamTrack):
    """What aiortc's Opus decoder hands out: 48 kHz stereo s16 frames of 20 ms, then the end."""

    kind = "audio"

    def __init__(self, frames: int, amplitude: int = 8000) -> None:
        super().__init__()
        self.left = frames
        self.amplitude = amplitude

    async def recv(self):
        if self.left == 0:
            raise MediaStreamError
        self.left -= 1
        tone = (self.amplitude * np.sin(2 * np.pi * 440 * np.arange(960) / 48000)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        return frame


async def test_audio_input_resamples_to_16k_20ms_and_ends_with_the_track():
    source = WebRTCAudioInput(FakeRemoteTrack(frames=50))
    frames = [f async for f in source]
    assert all(f.sample_rate == 16000 and f.num_channels == 1 and f.samples_per_channel == 320 for f in frames)
    assert 48 <= len(frames) <= 50  # 1 s in, 1 s out less the resampler's sub-millisecond delay
    rms = np.sqrt(np.mean(np.frombuffer(frames[10].data, np.int16).astype(np.float64) ** 2))
    assert 8000 / np.sqrt(2) * 0.8 < rms < 8000 / np.sqrt(2) * 1.2


def frame_24k(value: int = 10000, samples: int = 480) -> rtc.AudioFrame:
    return rtc.AudioFrame(data=np.full(samples, value, np.int16).tobytes(), sample_rate=24000, num_channels=1,
                          samples_per_channel=samples)


def is_silent(frame: av.AudioFrame) -> bool:
    return not np.any(frame.to_ndarray())


async def test_outgoing_track_paces_itself_without_drift():
    track = OutgoingAudioTrack()
    start = time.monotonic()
    frames = [await track.recv() for _ in range(51)]
    elapsed = time.monotonic() - start
    assert 0.95 < elapsed < 1.3  # 50 frame periods after the first frame
    assert [f.pts for f in frames] == [i * 960 for i in range(51)]
    assert all(f.sample_rate == 48000 and f.samples == 960 and f.layout.name == "mono" for f in frames)
    assert all(is_silent(f) for f in frames)
    track.stop()


async def test_outgoing_track_queue_is_short_and_clear_is_immediate():
    track = OutgoingAudioTrack()
    await track.recv()
    for _ in range(3):
        track.push(frame_24k())
    assert 0.05 < track.queued_seconds <= 0.1
    assert not is_silent(await track.recv())
    track.clear()
    assert track.queued_seconds == 0 and is_silent(await track.recv())
    for _ in range(50):  # an upstream burst: latency stays bounded, the oldest audio goes
        track.push(frame_24k())
    assert track.queued_seconds <= 0.1 and track.dropped_samples > 0
    track.clear()
    track.push(frame_24k())  # one frame primes (<960 samples after the resampler's delay) ...
    await asyncio.sleep(0.07)  # ... and is sent padded once no more audio follows
    assert not is_silent(await track.recv())
    assert track.queued_seconds == 0
    track.stop()


async def test_outgoing_track_sends_audio_after_silence_at_once_and_without_gaps():
    track = OutgoingAudioTrack()
    await track.recv()  # the wire is silent; the next tick is 20 ms away
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.004)
    pushed_at = time.monotonic()
    track.push(frame_24k(value=1000))
    first = await pending
    assert time.monotonic() - pushed_at < 0.012  # not held for the tick (nor for a whole frame)
    pcm = first.to_ndarray().reshape(-1)
    assert pcm[-100:].all() and not pcm[:8].any()  # the resampler's delay is padding at the front

    async def speak(frames: int) -> None:  # PacedAudioOutput's rhythm: a 20 ms frame every 20 ms
        start = time.monotonic()
        for k in range(1, frames):
            await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
            track.push(frame_24k(value=1000))

    speaker = asyncio.ensure_future(speak(25))
    sent = [first] + [await track.recv() for _ in range(30)]
    await speaker
    voiced = [not is_silent(f) for f in sent]
    assert sum(voiced) >= 25 and voiced.index(False) >= 25  # one run: no silent frame inside it
    assert [f.pts for f in sent] == [960 * (k + 1) for k in range(31)]
    track.stop()


def test_candidate_filter_keeps_only_reachable_udp_candidates():
    sdp = "\r\n".join([
        "v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
        "a=candidate:2 1 udp 2130706431 192.168.1.7 5001 typ host",
        "a=candidate:3 1 udp 2130706431 3f2a1b.local 5002 typ host",
        "a=candidate:4 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
        "a=end-of-candidates", ""])
    loopback, kept = filter_candidates(sdp, ["127.0.0.1"])
    assert kept == 1 and " 127.0.0.1 5000 " in loopback and "192.168" not in loopback and ".local" not in loopback
    assert "tcp" not in loopback and "a=end-of-candidates" in loopback
    lan, kept = filter_candidates(sdp, ["127.0.0.1", "192.168.1.20"])
    assert kept == 2 and " 192.168.1.7 " in lan


def test_configure_ice_overrides_and_restores_aioice():
    original = aioice.ice.get_host_addresses
    restore = configure_ice(["127.0.0.1", "::1"])
    try:
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
    finally:
        restore()
    assert aioice.ice.get_host_addresses is original
    with pytest.raises(ValueError):
        configure_ice(["not-an-ip"])


def test_jitter_prefetch_comes_from_the_environment_and_is_bounded():
    keys = {"LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 32}
    assert DirectServerConfig.from_env(keys).jitter_prefetch == 0
    assert DirectServerConfig.from_env({**keys, "DIRECT_JITTER_PREFETCH": "4"}).jitter_prefetch == 4
    with pytest.raises(ValueError, match="DIRECT_JITTER_PREFETCH"):
        DirectServerConfig.from_env({**keys, "DIRECT_JITTER_PREFETCH": "9"})
