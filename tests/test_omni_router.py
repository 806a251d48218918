"""The stand-ins' router (scripts/backends/omni_router.py) in front of the fake Omni: concurrent
sessions queue for the one upstream slot instead of cutting each other's streams, every answer
says how long it waited, /metrics counts it, and bad requests get 4xx JSON, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai

from testing.fake_omni import DEFAULT_MODEL, FakeOmni

ROUTER = Path(__file__).resolve().parents[1] / "scripts" / "backends" / "omni_router.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def router_in_front_of(upstream_v1: str) -> AsyncIterator[str]:
    port = free_port()
    root = upstream_v1.removesuffix("/v1")
    proc = subprocess.Popen([sys.executable, str(ROUTER), "--port", str(port), "--stt", root, "--llm", root],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    async with http.get(f"{base}/metrics") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read().decode()[-2000:]
                await asyncio.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the router did not stop within 10 s of SIGTERM") from None


async def test_concurrent_streams_queue_and_complete(tmp_path):
    fake = FakeOmni(reply=lambda _m: "one two three four five six seven eight", llm_token_interval_s=0.05)
    upstream = await fake.start()
    try:
        async with router_in_front_of(upstream) as base:
            client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)

            async def chat() -> tuple[str, str | None, float]:
                stream = await client.chat.completions.create(
                    model=DEFAULT_MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
                waited = float(stream.response.headers["X-Queue-Wait-Ms"])
                text, finish = "", None
                async with stream:
                    async for chunk in stream:
                        if chunk.choices:
                            text += chunk.choices[0].delta.content or ""
                            finish = chunk.choices[0].finish_reason or finish
                return text, finish, waited

            results = await asyncio.gather(*(chat() for _ in range(3)))
            assert all(finish == "stop" and text.strip().endswith("eight") for text, finish, _ in results)
            waits = sorted(w for _, _, w in results)
            assert waits[0] < waits[1] < waits[2] and waits[2] > 0  # one at a time, in turn
            assert fake.streams_completed == 3 and fake.disconnects == 0
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/metrics") as resp:
                    text = await resp.text()
            assert 'omni_router_requests_total{upstream="llm"} 3' in text
            assert 'omni_router_queued{upstream="llm"} 0' in text
            await client.close()
    finally:
        await fake.stop()


async def test_bad_requests_get_4xx_json(tmp_path):
    fake = FakeOmni()
    upstream = await fake.start()
    try:
        async with router_in_front_of(upstream) as base, aiohttp.ClientSession() as http:
            for method, path, kwargs in (("GET", "/nope", {}), ("POST", "/v1/chat/completions",
                                                               {"data": b"xx", "headers": {"Content-Encoding": "gzip"}})):
                async with http.request(method, base + path, **kwargs) as resp:
                    body = await resp.json()
                    assert 400 <= resp.status < 500 and body["error"]["message"], body
    finally:
        await fake.stop()


class RecordingHooks:
    """The STT's hooks as the tracer receives them: one (request_ms, text, queue_ms) per request."""

    def __init__(self) -> None:
        self.finished: list[tuple[float, str, float | None]] = []

    def stt_finished(self, request_ms: float, text: str, error: str | None = None,
                     queue_ms: float | None = None) -> None:
        self.finished.append((request_ms, text, queue_ms))


async def test_overlapping_recognitions_each_report_their_own_wait(tmp_path):
    """Two utterances transcribed at once: the second waits for the first (at least the fake's 1 s of
    STT work) and each request's hook call carries its own wait, not the other's."""
    from livekit import rtc
    from livekit.agents import APIConnectOptions

    from agent.plugins.omni_config import OmniConfig
    from agent.plugins.omni_stt import OmniSTT

    fake = FakeOmni(transcripts=["first words", "second words"], stt_latency_s=1.0)
    upstream = await fake.start()
    try:
        async with router_in_front_of(upstream) as base:
            hooks = RecordingHooks()
            stt = OmniSTT(OmniConfig(base_url=f"{base}/v1", stt_style="transcriptions"), hooks=hooks)  # type: ignore[arg-type]
            frame = rtc.AudioFrame(data=b"\0\0" * 3200, sample_rate=16000, num_channels=1, samples_per_channel=3200)
            try:
                await asyncio.gather(*(stt.recognize([frame], conn_options=APIConnectOptions(max_retry=0))
                                       for _ in range(2)))
            finally:
                await stt.aclose()
            assert len(hooks.finished) == 2
            (fast_ms, _, fast_wait), (slow_ms, _, slow_wait) = sorted(hooks.finished)
            assert fast_wait is not None and slow_wait is not None
            assert slow_wait >= 900 and fast_wait < slow_wait  # the second queued behind the first's 1 s
            assert slow_ms >= slow_wait  # a request's wall time covers its own wait
    finally:
        await fake.stop()
