"""The CPU stand-ins for the Omni server, for real: Whisper base (scripts/backends/whisper_server.py),
SmolLM2-135M on llama.cpp (scripts/backends/run_llm.sh) and the one-URL router in front of them
(scripts/backends/omni_router.py), each started as a subprocess from .venv-backends.

These tests run in the project venv and speak HTTP only, then drive the agent's own OmniSTT and
OmniLLM clients against the router. The `cpu_backends_venv` fixture (conftest.py) installs them
first when missing (scripts/backends/install.sh: ~5 minutes the first time, then nothing).
Measured numbers are printed (pytest -s shows them).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectOptions, llm

from agent.plugins.omni_config import LLMConfig, OmniConfig
from agent.plugins.omni_llm import OmniLLM
from agent.plugins.omni_stt import OmniSTT

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ROOT / "scripts" / "backends"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                       reason="espeak-ng and sox make the test speech: apt-get install espeak-ng sox"),
]

PHRASE = "What time does the library open tomorrow"
NO_RETRY = APIConnectOptions(max_retry=0)
# SmolLM2's <|endoftext|> and <|im_end|>: forbidding them makes a reply exactly max_tokens long.
NO_EOS = {"0": -100, "2": -100}


@dataclass
class Backends:
    router: str  # root URL; the agent's base URL is router + "/v1"
    llm_log: Path
    router_log: Path
    start_s: dict[str, float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({proc.returncode}); log:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:  # refused while starting, or 503 (HTTPError is an OSError)
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not healthy after {timeout_s} s; log:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory, cpu_backends_venv: str) -> Iterator[Backends]:
    bpy = Path(cpu_backends_venv) / "bin" / "python"
    logs = tmp_path_factory.mktemp("backend-logs")
    stt_port, llm_port, router_port = free_port(), free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # log lines must reach the files at once
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, cmd: list[str]) -> tuple[subprocess.Popen[bytes], Path, float]:
        log = logs / f"{name}.log"
        with log.open("wb") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        procs.append(proc)
        return proc, log, time.perf_counter()

    try:
        stt_url, llm_url = f"http://127.0.0.1:{stt_port}", f"http://127.0.0.1:{llm_port}"
        stt, stt_log, t_stt = start("whisper", [str(bpy), str(BACKENDS / "whisper_server.py"),
                                                "--port", str(stt_port), "--threads", "2"])
        lm, llm_log, t_llm = start("llm", ["bash", str(BACKENDS / "run_llm.sh"), "--port", str(llm_port)])
        start_s = {}
        wait_healthy(stt, f"{stt_url}/health", stt_log, 120)
        start_s["whisper"] = time.perf_counter() - t_stt
        wait_healthy(lm, f"{llm_url}/v1/models", llm_log, 120)
        start_s["llm"] = time.perf_counter() - t_llm
        router_url = f"http://127.0.0.1:{router_port}"
        router, router_log, t_router = start("router", [
            str(bpy), str(BACKENDS / "omni_router.py"), "--port", str(router_port),
            "--stt", stt_url, "--llm", llm_url + "/v1"])
        wait_healthy(router, f"{router_url}/health", router_log, 60)
        start_s["router"] = time.perf_counter() - t_router
        print(f"\n[cpu-backends] ready in: {', '.join(f'{k} {v:.2f} s' for k, v in start_s.items())}")
        yield Backends(router=router_url, llm_log=llm_log, router_log=router_log, start_s=start_s)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("speech")
    raw, wav = d / "raw.wav", d / "speech16k.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), PHRASE], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
    return wav


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def assert_roughly(transcript: str, expected: str = PHRASE) -> None:
    # Generous: espeak's robotic voice costs Whisper base a word now and then.
    want, got = words(expected), set(words(transcript))
    hits = sum(w in got for w in want)
    assert hits >= 0.7 * len(want), f"transcript {transcript!r} has {hits}/{len(want)} of {expected!r}"


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


async def test_health_and_models(backends: Backends) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{backends.router}/health") as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        assert body["upstreams"]["stt"]["ok"] and body["upstreams"]["llm"]["ok"]
        async with http.get(f"{backends.router}/v1/models") as r:
            ids = [m["id"] for m in (await r.json())["data"]]
        assert "smollm2-135m" in ids
        async with http.get(f"{backends.router}/v1/nothing-here") as r:
            assert r.status == 404 and "error" in await r.json()


async def test_transcription_through_router(backends: Backends, speech_wav: Path) -> None:
    url = f"{backends.router}/v1/audio/transcriptions"
    audio = speech_wav.read_bytes()
    async with aiohttp.ClientSession() as http:
        timings = []
        for _ in range(2):  # the first request also pays one-off warm-up costs
            form = aiohttp.FormData()
            form.add_field("file", audio, filename="speech.wav", content_type="audio/wav")
            form.add_field("model", "whisper-base")
            form.add_field("language", "en")
            t0 = time.perf_counter()
            async with http.post(url, data=form) as r:
                assert r.status == 200, await r.text()
                text = (await r.json())["text"]
            timings.append(time.perf_counter() - t0)
            assert_roughly(text)
        print(f"\n[cpu-backends] transcribed {wav_seconds(speech_wav):.2f} s clip in "
              f"{timings[0]:.2f} s (first) / {timings[1]:.2f} s: {text!r}")

        # A bad upload is the client's fault: 400 with OpenAI's error shape, through the router.
        form = aiohttp.FormData()
        form.add_field("file", b"this is not audio", filename="x.wav", content_type="audio/wav")
        async with http.post(url, data=form) as r:
            assert r.status == 400
            assert "decode" in (await r.json())["error"]["message"]


async def stream_chat(http: aiohttp.ClientSession, url: str, body: dict) -> tuple[list[tuple[float, str]], float]:
    """[(seconds since the request, text)] per content delta, and the total time."""
    arrivals: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    async with http.post(url, json=body) as r:
        assert r.status == 200, await r.text()
        assert r.headers["content-type"].startswith("text/event-stream")
        buf = b""
        async for data in r.content.iter_any():
            now = time.perf_counter() - t0
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                for choice in json.loads(line[6:])["choices"]:
                    if text := (choice.get("delta") or {}).get("content"):
                        arrivals.append((now, text))
    return arrivals, time.perf_counter() - t0


async def test_chat_streams_incrementally(backends: Backends) -> None:
    url = f"{backends.router}/v1/chat/completions"
    # Plain string content everywhere: what llama.cpp's server accepts (OMNI_PLAIN_STRING_CONTENT=1).
    # This greedy story runs to max_tokens; no logit_bias here (llama-cpp-python applies it in Python
    # per token, which halves its speed and would spoil the tokens/s figure).
    body = {"model": "smollm2-135m", "stream": True, "max_tokens": 96, "temperature": 0.0, "seed": 1,
            "messages": [{"role": "system", "content": "You are a helpful voice assistant."},
                         {"role": "user", "content": "Write a long story about a dragon."}]}
    async with aiohttp.ClientSession() as http:
        for run in ("cold", "warm"):  # warm: llama.cpp reuses the cached prompt prefix
            arrivals, total = await stream_chat(http, url, body)
            assert len(arrivals) >= 40, arrivals
            first, last = arrivals[0][0], arrivals[-1][0]
            # Unbuffered relay: tokens arrive spread over the generation (>= ~1 s for 96 tokens here)
            # in many separate reads; a buffering proxy would deliver them all at once at the end.
            # (Not "first < x% of total": a CPU stall from a neighbour before the first token is
            # legitimate and says nothing about buffering.)
            assert last - first >= 0.3, f"all {len(arrivals)} tokens within {last - first:.3f} s: buffered?"
            assert len({round(t, 3) for t, _ in arrivals}) >= 20, "chunks arrived in a few bursts: buffered?"
            rate = (len(arrivals) - 1) / (last - first)
            print(f"\n[cpu-backends] LLM via router ({run}): TTFT {first * 1000:.0f} ms, {len(arrivals)} "
                  f"tokens in {total:.2f} s, {rate:.0f} tok/s")

        # Content lists are what llama.cpp rejects (the reason for OMNI_PLAIN_STRING_CONTENT); the
        # router relays its error status as is.
        listy = {**body, "stream": False, "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "hi"}]}
        async with http.post(url, json=listy) as r:
            assert 400 <= r.status < 600, await r.text()


async def test_client_disconnect_stops_generation(backends: Backends) -> None:
    body = {"model": "smollm2-135m", "stream": True, "max_tokens": 1500, "logit_bias": NO_EOS,
            "messages": [{"role": "user", "content": "Count from one to one thousand."}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{backends.router}/v1/chat/completions", json=body) as r:
            assert r.status == 200
            seen = b""
            while seen.count(b"data: ") < 5:
                seen += await r.content.readany()
            r.close()  # hang up mid-stream, as the agent does on barge-in
    # At ~90 tok/s, 1500 tokens would take ~15 s: the upstream must hear about it within seconds.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if "Disconnected from client" in backends.llm_log.read_text(errors="replace"):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("llama.cpp never saw the client go away:\n" + backends.router_log.read_text()[-2000:])
    assert "client disconnected" in backends.router_log.read_text()


def wav_frames(path: Path) -> list[rtc.AudioFrame]:
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    spf = rate // 50  # 20 ms frames, as the VAD hands them over
    return [rtc.AudioFrame(data=pcm[i : i + spf].tobytes(), sample_rate=rate, num_channels=1,
                           samples_per_channel=len(pcm[i : i + spf])) for i in range(0, len(pcm), spf)]


async def test_agent_clients_against_router(backends: Backends, speech_wav: Path) -> None:
    # Exactly what start_all.sh sets for the stand-ins (OMNI_STT_STYLE=transcriptions, ...).
    omni = OmniConfig(base_url=f"{backends.router}/v1", stt_style="transcriptions", model="smollm2-135m",
                      stt_model="whisper-base", plain_string_content=True)
    stt = OmniSTT(omni)
    try:
        event = await stt.recognize(wav_frames(speech_wav), conn_options=NO_RETRY)
    finally:
        await stt.aclose()
    transcript = event.alternatives[0].text
    assert_roughly(transcript)

    model = OmniLLM(omni, LLMConfig(max_tokens=40, send_modalities=False, seed=7))
    try:
        ctx = llm.ChatContext.empty()
        ctx.add_message(role="user", content=transcript)
        reply = (await model.chat(chat_ctx=ctx, conn_options=NO_RETRY).collect()).text
        ttft = model.last_ttft_ms
        # A second turn with history: assistant + user messages, still plain strings.
        ctx.add_message(role="assistant", content=reply)
        ctx.add_message(role="user", content="And tomorrow?")
        reply2 = (await model.chat(chat_ctx=ctx, conn_options=NO_RETRY).collect()).text
        ttft2 = model.last_ttft_ms  # the system prompt + first turn are llama.cpp's cached prefix now
    finally:
        await model.aclose()
    assert reply.strip() and reply2.strip()
    assert ttft is not None and ttft > 0 and ttft2 is not None
    print(f"\n[cpu-backends] agent clients: STT {stt.last_request_ms:.0f} ms -> {transcript!r}; "
          f"LLM TTFT {ttft:.0f} ms (2nd turn {ttft2:.0f} ms) -> {reply!r}")
