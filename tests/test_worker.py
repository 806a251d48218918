"""The LiveKit worker's parts without a server: shared engine across THREAD jobs, the load it reports,
its health verdict and server, configuration from the environment."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import prometheus_client
import pytest
from livekit.agents import JobExecutorType

from agent.config import AgentConfig, WorkerConfig, engine_config_from_env
from agent.observe.engine_watch import EngineWatch
from agent.resources import SharedResources
from agent.transport.worker import WorkerState, make_server
from agent.transport.worker_health import WorkerHealthServer, http_url
from tts_engine import EngineConfig


def state_for(tiny_checkpoint: str, max_streams: int = 4, max_sessions: int = 2) -> WorkerState:
    agent_cfg = AgentConfig.from_env({"OMNI_BASE_URL": "http://127.0.0.1:9/v1"})
    resources = SharedResources(agent_cfg, EngineConfig(model=tiny_checkpoint, max_streams=max_streams))
    return WorkerState(resources, WorkerConfig(livekit_url="ws://127.0.0.1:9", max_sessions=max_sessions),
                       registry=prometheus_client.CollectorRegistry())


def test_server_runs_jobs_as_threads_sharing_one_engine_and_reports_its_load(tiny_checkpoint):
    state = state_for(tiny_checkpoint)
    server = make_server(state)
    try:
        assert server._job_executor_type is JobExecutorType.THREAD
        assert state.load() == 0.0  # nothing loaded, no session: nothing in use
        state.resources.load_all()
        engine = state.resources.engine
        assert state.resources.engine is engine  # one engine per process, whatever the number of jobs
        stream = engine.open_stream(speaker="ryan", language="english")
        assert state.load() == 0.25  # one of 4 stream slots
        stream.cancel(wait=True)
        state.session_started("room-a")
        assert state.load() == 0.5  # one of 2 sessions: the larger share counts
        state.session_started("room-b")
        assert state.load() == 1.0  # full: the LiveKit server sends the next room elsewhere
        state.session_ended("room-a")
        state.session_ended("room-a")  # ending twice counts once
        assert state.load() == 0.5 and state.sessions == 1
    finally:
        state.resources.close()


def test_health_verdict_names_what_is_missing(tiny_checkpoint):
    state = state_for(tiny_checkpoint)
    try:
        healthy, body = state.status(livekit_reachable=True)
        assert not healthy and body["status"] == "unavailable"
        assert any("not loaded" in p for p in body["problems"])
        assert any("not registered" in p for p in body["problems"])
        state.resources.load_all()
        state.registered("AW_test")
        healthy, body = state.status(livekit_reachable=True)
        assert healthy and body["problems"] == [] and body["worker_id"] == "AW_test"
        assert body["engine"]["max_streams"] == 4 and body["max_sessions"] == 2
        healthy, body = state.status(livekit_reachable=False)
        assert not healthy and body["problems"] == ["the LiveKit server ws://127.0.0.1:9 does not answer"]
        healthy, body = state.status(livekit_reachable=True, draining=True)
        assert not healthy and "draining" in body["problems"][0]
        state.resources.engine.close()
        healthy, body = state.status(livekit_reachable=True)
        assert not healthy and body["problems"] == ["the TTS engine is not running"]
        assert state.load() == 1.0  # a worker without a voice takes no new room
    finally:
        state.resources.close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_server_answers_503_until_healthy_and_serves_metrics(tiny_checkpoint):
    state = state_for(tiny_checkpoint)
    # nothing listens on the LiveKit URL: never healthy, and /healthz says why
    health = WorkerHealthServer(lambda reachable: state.status(livekit_reachable=reachable),
                                state.metrics.exposition, "ws://127.0.0.1:9", "127.0.0.1", 0)
    health.start()
    try:
        status, body = _get(f"http://127.0.0.1:{health.port}/healthz")
        assert status == 503
        problems = json.loads(body)["problems"]
        assert "the LiveKit server ws://127.0.0.1:9 does not answer" in problems
        status, text = _get(f"http://127.0.0.1:{health.port}/metrics")
        assert status == 200 and "agent_active_sessions" in text
        assert "agent_engine_load 0.0" in text  # the engine is not loaded yet: zero load, no crash
    finally:
        health.close()
        state.resources.close()


def test_health_server_refuses_a_port_in_use(tiny_checkpoint):
    state = state_for(tiny_checkpoint)
    first = WorkerHealthServer(lambda r: (True, {}), state.metrics.exposition, "", "127.0.0.1", 0)
    first.start()
    try:
        second = WorkerHealthServer(lambda r: (True, {}), state.metrics.exposition, "", "127.0.0.1", first.port)
        with pytest.raises(OSError):
            second.start()
    finally:
        first.close()


@pytest.mark.parametrize("url,expected", [("ws://127.0.0.1:7880", "http://127.0.0.1:7880/"),
                                          ("wss://lk.example.com/", "https://lk.example.com/"),
                                          ("http://h:1", "http://h:1/")])
def test_livekit_http_root(url, expected):
    assert http_url(url) == expected


def test_configuration_from_environment():
    env = {"OMNI_BASE_URL": "http://gpu-box:8091/v1", "OMNI_STT_STYLE": "transcriptions", "TTS_SPEAKER": "vivian",
           "TTS_LANGUAGE": "chinese", "BARGE_IN_MIN_SPEECH_S": "0.3", "FALSE_INTERRUPTION": "drop",
           "LLM_MAX_TOKENS": "123", "OMNI_PLAIN_STRING_CONTENT": "1"}
    cfg = AgentConfig.from_env(env)
    assert cfg.omni.stt_style == "transcriptions" and cfg.omni.plain_string_content
    assert (cfg.voice.speaker, cfg.voice.language) == ("vivian", "chinese")
    assert cfg.duplex.barge_in_min_speech_s == 0.3 and cfg.duplex.false_interruption == "drop"
    assert cfg.llm.max_tokens == 123
    engine_cfg = engine_config_from_env({"TTS_MODEL": "/models/q", "TTS_DEVICE": "cuda", "TTS_CUDA_GRAPHS": "0"})
    assert engine_cfg.model == "/models/q" and engine_cfg.use_cuda_graphs is False
    worker = WorkerConfig.from_env({"LIVEKIT_URL": "ws://lk:7880", "AGENT_NAME": "voice", "AGENT_MAX_SESSIONS": "8",
                                    "AGENT_HOST": "0.0.0.0", "AGENT_HEALTH_PORT": "9181"})
    assert worker == WorkerConfig(livekit_url="ws://lk:7880", agent_name="voice", max_sessions=8, host="0.0.0.0",
                                  health_port=9181)
    assert WorkerConfig.from_env({}).host == "127.0.0.1"  # loopback unless asked otherwise


@pytest.mark.parametrize("env,match", [({}, "OMNI_BASE_URL is not set"),
                                       ({"OMNI_BASE_URL": "ftp://x"}, "http"),
                                       ({"OMNI_BASE_URL": "http://x/v1", "FALSE_INTERRUPTION": "maybe"},
                                        "false_interruption")])
def test_bad_configuration_is_a_clear_error(env, match):
    with pytest.raises(ValueError, match=match):
        AgentConfig.from_env(env)


@pytest.mark.parametrize("env,match", [({"AGENT_MAX_SESSIONS": "0"}, "AGENT_MAX_SESSIONS"),
                                       ({"AGENT_MAX_SESSIONS": "four"}, "AGENT_MAX_SESSIONS='four' is not an integer"),
                                       ({"AGENT_HEALTH_PORT": "70000"}, "AGENT_HEALTH_PORT")])
def test_bad_worker_configuration_is_a_clear_error(env, match):
    with pytest.raises(ValueError, match=match):
        WorkerConfig.from_env(env)


def test_cli_help_needs_no_configuration_and_start_fails_fast_without_it():
    base = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    help_run = subprocess.run([sys.executable, "-m", "agent", "--help"], capture_output=True, text=True, timeout=120,
                              env=base)
    assert help_run.returncode == 0 and "start" in help_run.stdout and "dev" in help_run.stdout
    start_run = subprocess.run([sys.executable, "-m", "agent", "start"], capture_output=True, text=True, timeout=120,
                               env=base)
    assert start_run.returncode != 0 and "OMNI_BASE_URL is not set" in start_run.stderr
    configured = {**base, "OMNI_BASE_URL": "http://x:1/v1", "TTS_RANDOM_WEIGHTS": "0.6b"}
    bad_port = subprocess.run([sys.executable, "-m", "agent", "start"], capture_output=True, text=True, timeout=120,
                              env={**configured, "AGENT_HEALTH_PORT": "80a"})
    assert bad_port.returncode != 0 and "AGENT_HEALTH_PORT='80a' is not an integer" in bad_port.stderr
    no_server = subprocess.run([sys.executable, "-m", "agent", "start"], capture_output=True, text=True, timeout=120,
                               env=configured)
    assert no_server.returncode != 0 and "LIVEKIT_URL is not set" in no_server.stderr


def test_engine_watch_calls_its_death_handler_once():
    import threading

    alive = [True]
    died = threading.Event()
    calls = []
    watch = EngineWatch(lambda: alive[0], lambda: (calls.append(1), died.set()), interval_s=0.01).start()
    try:
        alive[0] = False
        assert died.wait(5)
    finally:
        watch.stop()
    assert calls == [1]
