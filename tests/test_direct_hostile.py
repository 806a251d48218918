"""The direct-mode signalling server against a hostile client: crafted SDPs, arbitrary bodies and
headers never get a 5xx or a traceback and never leave a peer behind; the peer limit holds when
many slow offers arrive at once; a dead engine is reported, not hidden."""

from __future__ import annotations

import asyncio
import json
import random
import re

import aiohttp
import pytest
import torch
from aiortc import RTCConfiguration, RTCPeerConnection
from direct_fixtures import Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.direct import DirectServerConfig, make_app
from agent.direct.offer_check import OfferRejected, check_offer_sdp
from agent.direct.webrtc_io import OutgoingAudioTrack
from testing.harness import agent_config
from token_server.config import TokenServerConfig
from token_server.tokens import mint_token

torch.set_num_threads(1)

KEYS = TokenServerConfig(api_key="test-key", api_secret="s" * 40)
NO_OMNI = "http://127.0.0.1:9/v1"  # no session starts in these tests: offers are answered or refused
RELAXED = {"offer_rate_per_min": 1e6, "offer_rate_burst": 10**6}


async def browser_like_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(OutgoingAudioTrack())
    pc.createDataChannel("agent-events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.fixture(scope="module")
def offer_sdp() -> str:
    return asyncio.run(browser_like_offer())


def auth(identity: str = "mallory") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(KEYS, room='room1', identity=identity)}"}


def direct_server(engine, vad, tmp_path, **overrides) -> Server:
    cfg = DirectServerConfig(api_key=KEYS.api_key, api_secret=KEYS.api_secret, **{**RELAXED, **overrides})
    return Server(make_app(cfg, agent_config(NO_OMNI, tmp_path), engine, vad))


async def post_offer(http: aiohttp.ClientSession, server: Server, data, headers) -> int:
    async with http.post(f"{server.base}/api/offer", data=data, headers=headers) as resp:
        text = await resp.text()
        assert resp.status < 500, (resp.status, text)
        assert "Traceback" not in text and 'File "' not in text
        if resp.status >= 400 and resp.content_type == "application/json":
            assert json.loads(text)["error"]["code"]  # every refusal by the app names its reason
        elif resp.status >= 400:  # refused by aiohttp's HTTP parser before the app saw it
            assert resp.status == 400 and resp.content_type == "text/plain", (resp.content_type, text)
        return resp.status


async def healthy(http: aiohttp.ClientSession, server: Server) -> bool:
    async with http.get(f"{server.base}/healthz") as resp:
        return resp.status == 200 and (await resp.json())["status"] == "ok"


def mutate_lines(sdp: str, rng: random.Random, n: int) -> str:
    lines = sdp.split("\r\n")
    for _ in range(n):
        i = rng.randrange(len(lines))
        op = rng.choice(["drop", "dup", "garble", "truncate", "swap"])
        if op == "drop":
            lines.pop(i)
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "garble" and lines[i]:
            j = rng.randrange(len(lines[i]))
            lines[i] = lines[i][:j] + rng.choice(["999", " ", "x", "\u2028", "=", ":", "-1", "\r"]) + lines[i][j + 1:]
        elif op == "truncate":
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        elif op == "swap" and len(lines) > 1:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        if not lines:
            break
    return "\r\n".join(lines)


def crafted(sdp: str) -> dict[str, str]:
    """The SDPs that used to get a 500 or slip a second section past a line-based check."""
    audio_start = sdp.index("m=audio")
    app_start = sdp.index("m=application")
    audio_section = sdp[audio_start:app_start]
    return {
        "bad m= port": re.sub(r"m=audio \d+ ", "m=audio notaport ", sdp, count=1),
        "bad c= line": re.sub(r"c=IN IP4 \S+", "c=IN IP4", sdp, count=1),
        "payload type 999": re.sub(r"(m=audio \d+ \S+) 96 ", r"\1 999 ", sdp).replace("a=rtpmap:96 ", "a=rtpmap:999 "),
        "fmtp without rtpmap": "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith("a=rtpmap:")),
        "no common codec": sdp.replace(" opus/", " nocodec/").replace(" PCMU/", " nocodec2/").replace(" PCMA/", " nocodec3/"),
        "U+2028 smuggles video": sdp.replace("a=mid:0\r\n", "a=mid:0\u2028m=video 9 UDP/TLS/RTP/SAVPF 97\u2028"
                                                         "a=rtpmap:97 VP8/90000\r\n", 1),
        "second audio section": sdp[:app_start] + audio_section.replace("a=mid:0", "a=mid:2") + sdp[app_start:],
        "video section": sdp + "m=video 9 UDP/TLS/RTP/SAVPF 97\r\nc=IN IP4 0.0.0.0\r\na=mid:3\r\na=rtpmap:97 VP8/90000\r\n",
        "no audio": sdp[:audio_start] + sdp[app_start:],
        "lone CR": sdp.replace("\r\n", "\r", 3),
        "NUL byte": sdp.replace("a=mid:0", "a=mid:\x000", 1),
    }


def test_the_offer_check_refuses_every_crafted_sdp_and_passes_a_real_one(offer_sdp):
    assert [m.kind for m in check_offer_sdp(offer_sdp).media] == ["audio", "application"]
    for name, sdp in crafted(offer_sdp).items():
        if name in ("bad m= port", "bad c= line", "fmtp without rtpmap"):
            continue  # these parse; aiortc refuses them when answering (400 at the endpoint below)
        with pytest.raises(OfferRejected):
            check_offer_sdp(sdp)


async def test_crafted_offers_get_400_and_leave_no_peer(engine, vad, tmp_path, offer_sdp):
    async with direct_server(engine, vad, tmp_path) as server, aiohttp.ClientSession() as http:
        for name, sdp in crafted(offer_sdp).items():
            status = await post_offer(http, server, json.dumps({"type": "offer", "sdp": sdp}), auth())
            assert status == 400, name
            assert server.direct.peers == {}, name
        assert await healthy(http, server)


@pytest.mark.parametrize("data,headers", [
    ("[" * 5000, {}),
    (json.dumps({"type": "offer", "sdp": "v=0"}).encode("utf-16"), {}),
    ('{"type": "offer", "sdp": "v=0"}', {"Content-Type": "application/json; charset=bogus"}),
    (b"\xff\xfe\x00garbage", {"Content-Type": "application/json"}),
    ("x" * (70 * 1024), {}),
    (b"not gzip at all", {"Content-Encoding": "gzip"}),
    (b"\x1f\x8b\x08\x00" + b"\x00" * 20, {"Content-Encoding": "gzip"}),
])
async def test_hostile_bodies_get_4xx(engine, vad, tmp_path, data, headers):
    async with direct_server(engine, vad, tmp_path) as server, aiohttp.ClientSession() as http:
        status = await post_offer(http, server, data, {**auth(), **headers})
        assert status in (400, 413)
        assert server.direct.peers == {} and await healthy(http, server)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), edits=st.integers(1, 6))
def test_mutated_offers_never_5xx_and_never_leak_a_peer(engine, vad, tmp_path, offer_sdp, seed, edits):
    sdp = mutate_lines(offer_sdp, random.Random(seed), edits)

    async def one() -> None:
        async with direct_server(engine, vad, tmp_path) as server, aiohttp.ClientSession() as http:
            status = await post_offer(http, server, json.dumps({"type": "offer", "sdp": sdp}), auth())
            assert status in (200, 400)
            assert len(server.direct.peers) == (status == 200)
            await server.direct.close_all("test_over")
            assert server.direct.peers == {} and await healthy(http, server)

    asyncio.run(one())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=400) | st.text(max_size=200).map(str.encode),
       header=st.sampled_from(["Authorization", "Content-Type", "Origin", "Content-Encoding", "Transfer-Encoding"]),
       value=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=60))
def test_arbitrary_bodies_and_headers_never_5xx(engine, vad, tmp_path, body, header, value):
    async def one() -> None:
        async with direct_server(engine, vad, tmp_path) as server, aiohttp.ClientSession() as http:
            headers = {**auth(), header: value}
            try:
                await post_offer(http, server, body, headers)
            except aiohttp.ClientResponseError as exc:  # aiohttp itself refused a malformed request
                assert exc.status < 500
            assert server.direct.peers == {} and await healthy(http, server)

    asyncio.run(one())


async def test_many_slow_offers_at_once_never_exceed_max_peers(engine, vad, tmp_path, offer_sdp):
    body = json.dumps({"type": "offer", "sdp": offer_sdp}).encode()
    async with direct_server(engine, vad, tmp_path, max_peers=2) as server, aiohttp.ClientSession() as http:
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, len(server.direct.peers))
                await asyncio.sleep(0.005)

        async def slow(i: int) -> int:
            async def trickle():
                yield body[:10]
                await asyncio.sleep(0.5)  # every offer is past the headers before any body is in
                yield body[10:]

            async with http.post(f"{server.base}/api/offer", data=trickle(), headers=auth(f"u{i}")) as resp:
                return resp.status

        watcher = asyncio.ensure_future(watch())
        statuses = await asyncio.gather(*(slow(i) for i in range(12)))
        watcher.cancel()
        assert statuses.count(200) == 2 and statuses.count(503) == 10, statuses
        assert most <= 2 and len(server.direct.peers) == 2
        await server.direct.close_all("test_over")


async def test_offer_rate_limit_is_429_with_retry_after(engine, vad, tmp_path):
    async with direct_server(engine, vad, tmp_path, offer_rate_per_min=1.0, offer_rate_burst=2) as server, \
            aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(3):
            async with http.post(f"{server.base}/api/offer", json={}, headers=auth()) as resp:
                statuses.append(resp.status)
                retry_after = resp.headers.get("Retry-After")
        assert statuses == [400, 400, 429]
        assert retry_after is not None and int(retry_after) >= 1


async def test_a_dead_engine_is_503_on_healthz_and_offers(tiny_checkpoint, vad, tmp_path, offer_sdp):
    from tts_engine import EngineConfig, TTSEngine

    dead = TTSEngine(EngineConfig(model=tiny_checkpoint, max_streams=2))
    dead.close()
    async with direct_server(dead, vad, tmp_path) as server, aiohttp.ClientSession() as http:
        async with http.get(f"{server.base}/healthz") as resp:
            health = await resp.json()
            assert resp.status == 503 and health["status"] == "unavailable" and health["problems"]
        async with http.post(f"{server.base}/api/offer", json={"type": "offer", "sdp": offer_sdp},
                             headers=auth()) as resp:
            assert resp.status == 503 and (await resp.json())["error"]["code"] == "engine_unavailable"


async def test_a_peer_that_never_completes_ice_gives_its_slot_back(engine, vad, tmp_path, offer_sdp):
    async with direct_server(engine, vad, tmp_path, connect_timeout_s=1.0) as server, aiohttp.ClientSession() as http:
        status = await post_offer(http, server, json.dumps({"type": "offer", "sdp": offer_sdp}), auth())
        assert status == 200 and len(server.direct.peers) == 1  # answered; the "browser" never connects
        for _ in range(200):
            if not server.direct.peers:
                break
            await asyncio.sleep(0.05)
        assert server.direct.peers == {}
        assert engine.stats()["active_streams"] == 0 and await healthy(http, server)
