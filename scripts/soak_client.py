"""The soak test's client side: spoken utterances made up front, and a WebRTC client that talks to
the direct-mode agent exactly as the page does (token -> offer with the "agent-events" channel ->
microphone out, agent audio in), and the agent's /healthz check for calls it failed to drop.
Used by scripts/soak.py.

The microphone is a paced track: an utterance pushed into it goes out in real time, 20 ms per
packet, and silence goes out the rest of the time, like a person in a quiet room.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import av
import numpy as np
import soundfile as sf
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from livekit import rtc

from agent.direct.config import DirectServerConfig
from agent.direct.ice import configure_ice
from agent.direct.jitter import set_track_prefetch
from agent.direct.webrtc_io import OutgoingAudioTrack
from agent.harness import speech_wav

RATE = 48000  # WebRTC's Opus rate: what a browser microphone sends
# Short sentences without commas: a comma is a pause the agent's VAD may take as the end of a turn.
SENTENCES = (
    "Hello there how are you today",
    "What is the weather going to be like tomorrow",
    "Tell me a short story about a cat",
    "Can you recommend a good book to read",
    "How far away is the moon from the earth",
    "I would like to plan a trip to the mountains",
    "What time does the train leave in the morning",
    "Please explain how a rainbow is made",
    "Why is the sky blue during the day",
    "Give me one idea for dinner tonight",
    "Thank you that was very helpful",
)
VOICES = ("en-us", "en+f3", "en+m3")
SPEEDS = (140, 155, 170, 190)
T = TypeVar("T")
VOICED_RMS = 0.01  # incoming frames louder than this carry agent audio (the wire is silent otherwise)
ONSET_LEVEL = 0.01 * 32768  # the first sample of an utterance above this is where its speech starts


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    speed: int
    pcm: np.ndarray  # int16 mono at RATE

    @property
    def seconds(self) -> float:
        return len(self.pcm) / RATE

    @property
    def speech_onset_s(self) -> float:
        """Where the speech starts in the clip (espeak-ng leaves a little silence before it)."""
        voiced = np.flatnonzero(np.abs(self.pcm) > ONSET_LEVEL)
        return float(voiced[0]) / RATE if voiced.size else 0.0

    @property
    def speech_end_s(self) -> float:
        """Where the speech ends in the clip: just after its last loud sample (silence follows)."""
        voiced = np.flatnonzero(np.abs(self.pcm) > ONSET_LEVEL)
        return float(voiced[-1] + 1) / RATE if voiced.size else self.seconds


@dataclass
class Said:
    """One utterance as the client said it, on its monotonic clock.

    A microphone hands a frame to the wire when the frame has been captured: the frame carrying an
    utterance's first samples leaves `frame_s` after the first of them was "heard". So its capture
    clock starts at `first_frame_at - frame_s`, and the speech onset and end are that plus where
    they lie in the clip - what a person's mouth did, not when the client queued the clip."""

    utt: Utterance
    pushed_at: float  # when the client queued it
    frame_s: float  # the microphone's frame duration
    first_frame_at: float | None = None  # when the frame with its first samples left (set by the mic)

    @property
    def capture_start(self) -> float:
        sent = self.first_frame_at if self.first_frame_at is not None else self.pushed_at
        return sent - self.frame_s

    @property
    def onset(self) -> float:
        return self.capture_start + self.utt.speech_onset_s

    @property
    def speech_end(self) -> float:
        return self.capture_start + self.utt.speech_end_s

    @property
    def sent_until(self) -> float:
        """Its last frame has left by then."""
        return self.capture_start + self.utt.seconds + self.frame_s

    @property
    def wait_until(self) -> float:
        """When the whole clip will have been sent, as known when it was queued (for waiting on)."""
        return self.pushed_at + self.utt.seconds


def make_utterances(n: int, workdir: Path) -> list[Utterance]:
    """n utterances cycling through sentences, voices and speeds (each WAV synthesized once)."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"soak: {' and '.join(missing)} not found: the soak speaks with them; install with "
                         f"`sudo apt-get install {' '.join(missing)}` (scripts/test.sh does it as root)")
    workdir.mkdir(parents=True, exist_ok=True)
    cache: dict[tuple[str, str, int], np.ndarray] = {}
    combos = zip(itertools.cycle(SENTENCES), itertools.cycle(VOICES), itertools.cycle(SPEEDS))
    out = []
    for i, (text, voice, speed) in zip(range(n), combos, strict=False):
        key = (text, voice, speed)
        if key not in cache:
            path = speech_wav(text, workdir / f"utt{i:03d}.wav", voice=voice, speed=speed, rate=RATE)
            cache[key] = sf.read(str(path), dtype="int16")[0]
        out.append(Utterance(text, voice, speed, cache[key]))
    return out


def ice_address(offer_url: str) -> str:
    """The local address to gather ICE candidates on: the agent's own address (loopback by default)."""
    host = urlsplit(offer_url).hostname or "127.0.0.1"
    if host == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return socket.gethostbyname(host)


@dataclass
class Message:
    at: float  # time.monotonic() when it arrived
    data: dict[str, Any]


class EventLog:
    """What both soak clients share: the agent's events in arrival order, the times agent audio was
    heard, and waiting on either. A client appends with `_on_message` / `_on_audio_frame`."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.voiced_at: list[float] = []  # arrival times of incoming frames that carry agent audio
        self.frames_in = 0
        self._changed = asyncio.Event()

    def session_id(self) -> str | None:
        sessions = self.of_type("session")
        return sessions[0].data.get("session_id") if sessions else None

    def of_type(self, kind: str, since: int = 0) -> list[Message]:
        return [m for m in self.messages[since:] if m.data.get("type") == kind]

    def agent_state(self) -> str | None:
        states = self.of_type("agent_state")
        return states[-1].data.get("state") if states else None

    async def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """The predicate's first truthy value, re-checked on every message; None on timeout."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.25))
            except TimeoutError:
                pass
        return value

    def _on_message(self, raw: str | bytes) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            data = {"type": "unparsable", "raw": str(raw)[:200]}
        self.messages.append(Message(time.monotonic(), data if isinstance(data, dict) else {"type": "?"}))
        self._changed.set()

    def _on_audio_frame(self, pcm: np.ndarray) -> None:
        """One incoming frame of agent audio, as float in [-1, 1]."""
        self.frames_in += 1
        if pcm.size and float(np.sqrt(np.mean(pcm * pcm))) > VOICED_RMS:
            self.voiced_at.append(time.monotonic())


class Microphone(OutgoingAudioTrack):
    """The direct client's microphone: the agent's paced track (a whole utterance queued at once goes
    out in real time, 20 ms a packet, silence otherwise), telling each utterance when its first
    frame left."""

    FRAME_S = 0.02

    def __init__(self) -> None:
        super().__init__(max_queue_s=60.0)  # holds a whole utterance
        self._waiting: list[Said] = []  # queued, first frame not sent yet
        self._was_audio = False

    def say(self, utt: Utterance) -> Said:
        said = Said(utt, time.monotonic(), self.FRAME_S)
        self._waiting.append(said)
        self.push(rtc.AudioFrame(data=utt.pcm.tobytes(), sample_rate=RATE, num_channels=1,
                                 samples_per_channel=len(utt.pcm)))
        return said

    async def recv(self) -> av.AudioFrame:
        before = self.audio_frames_sent
        frame = await super().recv()
        is_audio = self.audio_frames_sent > before
        if is_audio and not self._was_audio and self._waiting:
            self._waiting.pop(0).first_frame_at = time.monotonic()
        self._was_audio = is_audio
        return frame


class DirectClient(EventLog):
    """A browser stand-in: paced microphone out, agent audio in, the page-created events channel."""

    def __init__(self) -> None:
        super().__init__()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates only, no STUN lookup
        self.mic = Microphone()
        self.answer: dict[str, Any] = {}
        self._consumer: asyncio.Task[None] | None = None
        self._channel: Any = None
        self._offer_url = self._token = ""

    # ---- what scripts/soak.py calls (the LiveKit client has the same three) ---------------------

    async def open(self, http: aiohttp.ClientSession, grant: dict[str, Any]) -> None:
        self._offer_url, self._token = grant["url"], grant["token"]
        prepare_ice(self._offer_url)
        await self.connect(http, self._offer_url, self._token)

    async def close(self, http: aiohttp.ClientSession) -> None:
        await self.hang_up(http, self._offer_url, self._token)

    async def leak_check(self, http: aiohttp.ClientSession, timeout_s: float) -> dict[str, Any]:
        return await leak_check(http, self._offer_url, timeout_s)

    # ---- connection ----------------------------------------------------------------------------

    async def connect(self, http: aiohttp.ClientSession, offer_url: str, token: str) -> None:
        self.pc.addTrack(self.mic)
        self._channel = self.pc.createDataChannel("agent-events", ordered=True)
        self._channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"type": self.pc.localDescription.type, "sdp": self.pc.localDescription.sdp}
        async with http.post(offer_url, json=offer, headers={"Authorization": f"Bearer {token}"}) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"the agent refused the offer at {offer_url}: HTTP {resp.status} {body[:300]}")
            self.answer = json.loads(body)
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer["sdp"], self.answer["type"]))

    async def hang_up(self, http: aiohttp.ClientSession, offer_url: str, token: str) -> None:
        """DELETE the peer (as the page does on hang-up), then close our side."""
        peer_id = self.answer.get("peer_id")
        if peer_id:
            base = offer_url.rsplit("/api/offer", 1)[0]
            try:
                async with http.delete(f"{base}/api/peer/{peer_id}", headers={"Authorization": f"Bearer {token}"}):
                    pass
            except aiohttp.ClientError:
                pass  # the close below ends the call anyway; the leak check will tell
        await self.pc.close()
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)

    # ---- talking -------------------------------------------------------------------------------

    def say(self, utt: Utterance) -> Said:
        """Start speaking (the first frame leaves at once: the microphone was silent)."""
        return self.mic.say(utt)

    # ---- incoming ------------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            # hold packets as the agent does (none), not aiortc's four: a browser's jitter buffer adapts
            # to a few ms on loopback, and what this client hears should not carry 80 ms a browser does
            # not (scripts/bench_duplex.py --browser hears through Chromium's own)
            set_track_prefetch(self.pc, track, DirectServerConfig.jitter_prefetch)
            self._consumer = asyncio.ensure_future(self._consume(track))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            self._on_audio_frame(frame.to_ndarray().astype(np.float32) / 32768)


def prepare_ice(offer_url: str) -> None:
    """aioice skips 127.0.0.1 by default; gather on the agent's address so the call stays local."""
    configure_ice([ice_address(offer_url)])


async def agent_health(http: aiohttp.ClientSession, offer_url: str) -> dict[str, Any] | None:
    base = offer_url.rsplit("/api/offer", 1)[0]
    try:
        async with http.get(f"{base}/healthz") as resp:
            return await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, ValueError):
        return None


async def poll_until(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout_s: float) -> T:
    """Probe every 0.25 s until done(result) or the timeout; the last result either way. Both
    clients' leak checks wait like this for the agent's teardown after the hang-up."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if done(result) or time.monotonic() >= deadline:
            return result
        await asyncio.sleep(0.25)


async def leak_check(http: aiohttp.ClientSession, offer_url: str, timeout_s: float) -> dict[str, Any]:
    """After the hang-up, the agent must drop to 0 peers and 0 engine streams (within its teardown)."""
    def idle(h: dict[str, Any] | None) -> bool:
        return h is not None and h.get("peers") == 0 and h.get("engine", {}).get("active_streams") == 0

    health = await poll_until(lambda: agent_health(http, offer_url), idle, timeout_s)
    if idle(health):
        return {"healthz": health, "problems": []}
    if health is None:
        return {"healthz": None, "problems": ["the agent's /healthz did not answer after the call"]}
    return {"healthz": health, "problems": [
        f"after hanging up and {timeout_s:.0f} s: {health.get('peers')} peer(s) and "
        f"{health.get('engine', {}).get('active_streams')} engine stream(s) still active"]}
