"""LiveKit mode at room level, against a real LiveKit server and real `python -m agent start` workers:
several rooms on one worker (one engine), dispatch by the load two workers report, a worker that
dies mid-call, and what the server does with the tokens we mint. The participants are the soak's
LiveKit client (testing/livekit_client.py): a paced microphone track, the agent's audio and
its events."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import jwt
import psutil
import pytest
from livekit import rtc
from livekit_fixtures import ROOT, AgentWorker, LiveKitServer

from testing.fake_omni import FakeOmni, FakeOmniThread
from testing.livekit_client import LiveKitClient
from testing.utterances import SENTENCES, make_utterances
from tts_engine.config import MAX_STREAMS_CPU

pytestmark = [pytest.mark.slow]


def first_word_reply(messages) -> str:
    """A short reply naming what this session's user said: the tiny test voice speaks ~0.4 s per
    character, and a room answered with another room's words would show here."""
    said = str(messages[-1].get("content", "")).split()
    return f"Heard {said[0] if said else 'nothing'}."


@pytest.fixture(scope="module")
def omni():
    sentences = itertools.cycle(SENTENCES)
    with FakeOmniThread(FakeOmni(transcripts=lambda _wav: next(sentences), reply=first_word_reply)) as fake:
        yield fake


@pytest.fixture(scope="module")
def utterances(tmp_path_factory):
    return make_utterances(4, tmp_path_factory.mktemp("speech"))


def worker_env(omni: FakeOmniThread, tiny_checkpoint: str, **extra: str) -> dict[str, str]:
    # OMNI_PLAIN_STRING_CONTENT: message content as plain strings, so first_word_reply can read it
    return {"OMNI_BASE_URL": omni.url, "TTS_MODEL": tiny_checkpoint, "OMNI_PLAIN_STRING_CONTENT": "1", **extra}


async def join(server: LiveKitServer, room: str, metrics_url: str = "") -> LiveKitClient:
    client = LiveKitClient(metrics_url)
    await client.open(None, {"url": server.url, "token": server.token(room, f"user-{room}")})  # type: ignore[arg-type]
    return client


async def listening(client: LiveKitClient, timeout_s: float = 60.0) -> bool:
    """The agent joined the client's room, started its session and listens (False on timeout)."""
    return bool(await client.wait_for(lambda: client.agent_state() == "listening", timeout_s))


async def wait_health(worker: AgentWorker, predicate, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        _status, body = await asyncio.to_thread(worker.health)
        if predicate(body):
            return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"worker {worker.name}: health never matched; last {body}")


async def test_four_rooms_on_one_worker_share_one_engine_and_each_gets_its_own_replies(
        livekit_server, omni, utterances, tiny_checkpoint, tmp_path):
    worker = AgentWorker(livekit_server, tmp_path, "one", worker_env(omni, tiny_checkpoint)).start()
    clients: list[LiveKitClient] = []
    try:
        await asyncio.to_thread(worker.wait_healthy)
        clients = list(await asyncio.gather(*(join(livekit_server, f"four-{i}") for i in range(4))))
        assert all(await asyncio.gather(*(listening(c) for c in clients)))
        body = await wait_health(worker, lambda b: b.get("sessions") == 4)
        assert body["engine"]["max_streams"] == MAX_STREAMS_CPU  # one engine serves all four
        assert psutil.Process(worker.proc.pid).children() == []  # jobs are threads: one process, one model copy
        for client, utt in zip(clients, utterances, strict=True):
            client.say(utt)

        def replied(c: LiveKitClient):
            return [m for m in c.of_type("transcript") if m.data.get("role") == "agent"]
        assert all(await asyncio.gather(*(c.wait_for(lambda c=c: replied(c), 120) for c in clients)))
        sessions = set()
        for client in clients:
            user = [m.data["text"] for m in client.of_type("transcript") if m.data.get("role") == "user"]
            agent = [m.data["text"] for m in replied(client)]
            assert user and agent[0] == f"Heard {user[0].split()[0]}.", (user, agent)
            turns = [m.data for m in client.of_type("turn")]
            assert turns and all(t["session_id"] == client.session_id() for t in turns)
            sessions.add(client.session_id())
        assert len(sessions) == 4
    finally:
        for client in clients:
            await client.close(None)  # type: ignore[arg-type]
    # each heard the agent through its own WebRTC jitter buffer, read back at the hang-up (bench_duplex reports it)
    for client in clients:
        buffer = client.receive_buffer
        assert buffer is not None and buffer["mean_ms"] > 0 and set(buffer) == {"mean_ms", "target_ms", "minimum_ms"}
    try:
        body = await wait_health(worker, lambda b: b.get("sessions") == 0 and b["engine"]["active_streams"] == 0)
        assert body["status"] == "ok"
    finally:
        await asyncio.to_thread(worker.stop)


async def test_dispatch_follows_load_and_a_dead_workers_rooms_see_it_leave(
        livekit_server, omni, tiny_checkpoint, tmp_path):
    env = worker_env(omni, tiny_checkpoint, AGENT_MAX_SESSIONS="1")
    workers = [AgentWorker(livekit_server, tmp_path, name, env).start() for name in ("a", "b")]
    clients: list[LiveKitClient] = []
    try:
        await asyncio.gather(*(asyncio.to_thread(w.wait_healthy) for w in workers))
        first = await join(livekit_server, "load-1")
        clients.append(first)
        assert await listening(first)
        busy = [w for w in workers if (await asyncio.to_thread(w.health))[1].get("sessions") == 1]
        assert len(busy) == 1
        taken, other = busy[0], next(w for w in workers if w is not busy[0])
        assert (await asyncio.to_thread(taken.health))[1]["load"] == 1.0  # full: it takes no new job

        second = await join(livekit_server, "load-2")
        clients.append(second)
        assert await listening(second)
        await wait_health(other, lambda b: b.get("sessions") == 1)  # the full worker was passed over

        overflow = await join(livekit_server, "load-overflow")
        clients.append(overflow)
        await asyncio.sleep(8)  # both are full: no agent may join (the server logs "no worker available")
        assert overflow.of_type("session") == [] and len(overflow.room.remote_participants) == 0
        for client in (second, overflow):
            await client.close(None)  # type: ignore[arg-type]
        await wait_health(other, lambda b: b.get("sessions") == 0 and b.get("load") == 0.0)

        agent_left = asyncio.Event()
        first.room.on("participant_disconnected", lambda p: agent_left.set())
        killed_at = time.monotonic()
        taken.kill()  # a crash: no goodbye to the LiveKit server
        await asyncio.wait_for(agent_left.wait(), 60)  # its room sees the agent leave
        print(f"the room saw the dead worker's agent leave {time.monotonic() - killed_at:.1f} s after the kill")

        third = await join(livekit_server, "load-3")
        clients.append(third)
        assert await listening(third)
        await wait_health(other, lambda b: b.get("sessions") == 1)  # the survivor took the new room
    finally:
        for client in clients:
            await client.close(None)  # type: ignore[arg-type]
        for worker in workers:
            await asyncio.to_thread(worker.stop)


async def expect_refused(server: LiveKitServer, token: str) -> str:
    room = rtc.Room()
    try:
        await room.connect(server.url, token)
    except Exception as exc:  # the SDK's ConnectError: the server refused the token
        return str(exc)
    await room.disconnect()
    raise AssertionError("the LiveKit server accepted a token it must refuse")


async def test_the_server_holds_tokens_to_their_room_and_their_lifetime(livekit_server):
    inside = rtc.Room()
    await inside.connect(livekit_server.url, livekit_server.token("room-b", "bob"))
    guest = rtc.Room()
    try:
        await guest.connect(livekit_server.url, livekit_server.token("room-a", "alice"))
        assert guest.name == "room-a"  # the token names the room: there is no asking for another
        await asyncio.sleep(1)
        assert "alice" not in inside.remote_participants and "bob" not in guest.remote_participants
        await guest.disconnect()

        claims = jwt.decode(livekit_server.token("room-a", "alice"), options={"verify_signature": False})
        claims["video"]["room"] = "room-b"  # re-pointed at room B without the secret
        forged = jwt.encode(claims, "not-the-secret-0123456789abcdef0123456789", algorithm="HS256")
        await expect_refused(livekit_server, forged)
        expired = livekit_server.token("room-b", "carol", ttl_s=60, not_before=int(time.time()) - 3600)
        await expect_refused(livekit_server, expired)
    finally:
        await inside.disconnect()


def test_livekit_server_script_refuses_weak_or_missing_keys(tmp_path: Path):
    import subprocess

    script = str(ROOT / "scripts" / "livekit_server.sh")
    weak = subprocess.run(["bash", script, str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "short"})
    assert weak.returncode != 0 and "at least 32" in weak.stderr
    missing = subprocess.run(["bash", script, str(tmp_path)], capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode != 0 and "LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set" in missing.stderr
    assert not (tmp_path / "livekit.yaml").exists()
