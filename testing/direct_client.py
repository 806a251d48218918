"""A direct-mode caller that talks to the agent exactly as the page does: token -> offer with the
"agent-events" data channel -> microphone out, agent audio in; the hang-up, and the agent's
/healthz check for calls it failed to drop. The soak, the duplex benchmark and the direct-mode
tests all call through it.

The microphone is a paced track: an utterance pushed into it goes out in real time, 20 ms per
packet, and silence goes out the rest of the time, like a person in a quiet room.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from livekit import rtc

from agent.direct.config import DirectServerConfig
from agent.direct.ice import configure_ice
from agent.direct.jitter import set_track_prefetch
from agent.direct.webrtc_io import OutgoingAudioTrack

from .event_log import EventLog, Said, poll_until
from .utterances import RATE, Utterance


class OfferRefused(RuntimeError):
    """The agent answered the offer with something other than 200."""

    def __init__(self, offer_url: str, status: int, body: str) -> None:
        super().__init__(f"the agent refused the offer at {offer_url}: HTTP {status} {body[:300]}")
        self.status = status
        self.body = body


def ice_address(offer_url: str) -> str:
    """The local address to gather ICE candidates on: the agent's own address (loopback by default)."""
    host = urlsplit(offer_url).hostname or "127.0.0.1"
    if host == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return socket.gethostbyname(host)


class Microphone(OutgoingAudioTrack):
    """The direct client's microphone: the agent's paced track (a whole utterance queued at once goes
    out in real time, 20 ms a packet, silence otherwise), telling each utterance when its first
    frame left."""

    FRAME_S = 0.02

    def __init__(self) -> None:
        super().__init__(max_queue_s=60.0)  # holds a whole utterance
        self._unsent: list[Said] = []  # queued, first frame not sent yet (pyee's emitter owns `_waiting`)
        self._was_audio = False

    def say(self, utt: Utterance) -> Said:
        said = Said(utt, time.monotonic(), self.FRAME_S)
        self._unsent.append(said)
        self.push(rtc.AudioFrame(data=utt.pcm.tobytes(), sample_rate=RATE, num_channels=1,
                                 samples_per_channel=len(utt.pcm)))
        return said

    async def recv(self) -> av.AudioFrame:
        before = self.audio_frames_sent
        frame = await super().recv()
        is_audio = self.audio_frames_sent > before
        if is_audio and not self._was_audio and self._unsent:
            self._unsent.pop(0).first_frame_at = time.monotonic()
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

    # ---- what the soak calls (the LiveKit client has the same three) ----------------------------

    async def open(self, http: aiohttp.ClientSession, grant: dict[str, Any]) -> None:
        prepare_ice(grant["url"])
        await self.connect(http, grant["url"], grant["token"])

    async def close(self, http: aiohttp.ClientSession | None = None) -> None:
        """Hang up: DELETE the peer first when given a session (as the page does), then close our
        side - without one, the agent learns it from the connection alone (a closed tab)."""
        peer_id = self.answer.get("peer_id")
        if http is not None and peer_id:
            base = self._offer_url.rsplit("/api/offer", 1)[0]
            try:
                async with http.delete(f"{base}/api/peer/{peer_id}",
                                       headers={"Authorization": f"Bearer {self._token}"}):
                    pass
            except aiohttp.ClientError:
                pass  # the close below ends the call anyway; the leak check will tell
        await self.pc.close()
        if self._consumer is not None:  # aiortc ends the track only if the call had connected
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)

    async def leak_check(self, http: aiohttp.ClientSession, timeout_s: float) -> dict[str, Any]:
        return await leak_check(http, self._offer_url, timeout_s)

    # ---- connection ----------------------------------------------------------------------------

    async def connect(self, http: aiohttp.ClientSession, offer_url: str, token: str) -> None:
        """Offer, answer; `OfferRefused` when the agent says no. ICE gathers on what aioice is
        configured for in this process (`prepare_ice`, or the agent's own start-up in a test)."""
        self._offer_url, self._token = offer_url, token
        self.pc.addTrack(self.mic)
        self._channel = self.pc.createDataChannel("agent-events", ordered=True)
        self._channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"type": self.pc.localDescription.type, "sdp": self.pc.localDescription.sdp}
        async with http.post(offer_url, json=offer, headers={"Authorization": f"Bearer {token}"}) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise OfferRefused(offer_url, resp.status, body)
            self.answer = json.loads(body)
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer["sdp"], self.answer["type"]))

    # ---- talking -------------------------------------------------------------------------------

    def say(self, utt: Utterance) -> Said:
        """Start speaking (the first frame leaves at once: the microphone was silent)."""
        return self.mic.say(utt)

    # ---- incoming ------------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            # hold packets as the agent does (none), not aiortc's four: a browser's jitter buffer adapts
            # to a few ms on loopback, and what this client hears should not carry 80 ms a browser does
            # not (bench_duplex.py --browser hears through Chromium's own)
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
