"""The speech API where it runs: mounted beside another app's routes, beside the agent's calls in the
direct-mode process (one engine: an API stream holds one of the slots the calls use), and the
agent's edges reading SPEECH_API_* only when SPEECH_API_ENABLED is on."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest
import torch
from aiohttp import web
from test_speech_api import KEY, TEXT, engine_stream_pcm, make_engine

from speech_api import BackgroundServer, ConfigError, SpeechApiConfig, make_app, serve_beside

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def api_engine(tiny_checkpoint):
    with make_engine(tiny_checkpoint) as engine:
        yield engine


def test_mounts_beside_another_apps_routes(api_engine):
    """One engine, another app's routes, the API as a sub-app under /speech."""
    async def parent_health(_request: web.Request) -> web.Response:
        return web.json_response({"who": "parent"})

    parent = web.Application()
    parent.router.add_get("/healthz", parent_health)
    parent.add_subapp("/speech", make_app(api_engine, SpeechApiConfig(api_keys=(KEY,))))
    with BackgroundServer(parent) as srv:
        client = openai.OpenAI(base_url=srv.url + "/speech/v1", api_key=KEY, max_retries=0)
        pcm = client.audio.speech.create(model="tts-1", input=TEXT, voice="ryan", response_format="pcm").content
        assert np.array_equal(np.frombuffer(pcm, "<i2"), engine_stream_pcm(api_engine, TEXT))
        assert json.loads(urllib.request.urlopen(srv.url + "/healthz").read()) == {"who": "parent"}
        assert json.loads(urllib.request.urlopen(srv.url + "/speech/healthz").read())["status"] == "ok"


def test_serve_beside_binds_its_own_port_and_says_when_it_cannot(api_engine):
    server = serve_beside(api_engine, SpeechApiConfig(port=0))
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        assert client.audio.speech.create(model="qwen3-tts", input="Hi.", voice="vivian", response_format="pcm").content
        with pytest.raises(OSError):
            serve_beside(api_engine, SpeechApiConfig(port=server.port))
    finally:
        server.close()


def test_the_agent_reads_the_api_settings_only_when_enabled():
    assert SpeechApiConfig.for_agent({}) is None
    # not enabled: a host that would need keys is never looked at
    assert SpeechApiConfig.for_agent({"SPEECH_API_HOST": "0.0.0.0", "SPEECH_API_ENABLED": "0"}) is None
    cfg = SpeechApiConfig.for_agent({"SPEECH_API_ENABLED": "1", "SPEECH_API_PORT": "9880"})
    assert cfg is not None and cfg.enabled and cfg.port == 9880 and not cfg.auth_required
    with pytest.raises(ConfigError, match="SPEECH_API_KEYS"):
        SpeechApiConfig.for_agent({"SPEECH_API_ENABLED": "1", "SPEECH_API_HOST": "0.0.0.0"})


def test_the_worker_refuses_an_open_api_without_keys_before_loading_anything():
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMNI_BASE_URL": "http://x:1/v1",
           "TTS_RANDOM_WEIGHTS": "0.6b", "LIVEKIT_URL": "ws://127.0.0.1:1", "SPEECH_API_ENABLED": "1",
           "SPEECH_API_HOST": "0.0.0.0"}
    run = subprocess.run([sys.executable, "-m", "agent", "start"], capture_output=True, text=True, timeout=120,
                         env=env, cwd=ROOT)
    assert run.returncode != 0 and "configuration error" in run.stderr and "SPEECH_API_KEYS" in run.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.mark.slow
def test_the_direct_agent_serves_the_api_on_the_engine_its_calls_use(tiny_checkpoint, tmp_path):
    direct_port, api_port = _free_port(), _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMNI_BASE_URL": "http://127.0.0.1:1/v1", "TTS_MODEL": tiny_checkpoint,
           "TTS_MAX_STREAMS": "2", "LIVEKIT_API_KEY": "key-test", "LIVEKIT_API_SECRET": "s" * 32,
           "DIRECT_PORT": str(direct_port), "AGENT_END_OF_TURN": "vad", "AGENT_TRACES_DIR": str(tmp_path),
           "SPEECH_API_ENABLED": "1", "SPEECH_API_PORT": str(api_port), "SPEECH_API_KEYS": KEY}
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen([sys.executable, "-m", "agent.direct"], env=env, cwd=ROOT, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while _health(f"http://127.0.0.1:{direct_port}/healthz") is None:
            assert agent.poll() is None, (tmp_path / "agent.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the direct agent did not come up"
            time.sleep(0.5)
        api = f"http://127.0.0.1:{api_port}"
        assert _health(api + "/healthz")["engine"]["max_streams"] == 2
        client = openai.OpenAI(base_url=api + "/v1", api_key=KEY, max_retries=0)
        with client.audio.speech.with_streaming_response.create(
                model="qwen3-tts", input=" ".join([TEXT] * 4), voice="ryan", response_format="pcm") as response:
            chunks = response.iter_bytes()
            assert next(chunks)
            # the API's stream holds one of the slots the direct agent's calls take
            assert _health(f"http://127.0.0.1:{direct_port}/healthz")["engine"]["active_streams"] == 1
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        log.close()
