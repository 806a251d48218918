"""The LiveKit worker: shared engine across THREAD jobs, load reporting, configuration from the env."""

from __future__ import annotations

import subprocess
import sys

import pytest
from livekit.agents import JobExecutorType

from agent.config import AgentConfig, engine_config_from_env
from agent.worker import SharedResources, make_server
from tts_engine import EngineConfig


def test_server_runs_jobs_as_threads_sharing_one_engine(tiny_checkpoint):
    agent_cfg = AgentConfig.from_env({"OMNI_BASE_URL": "http://127.0.0.1:9/v1"})
    resources = SharedResources(agent_cfg, EngineConfig(model=tiny_checkpoint, max_streams=4))
    server = make_server(resources, agent_name="voice")
    try:
        assert server._job_executor_type is JobExecutorType.THREAD
        assert resources.load() == 0.0  # no engine yet: nothing in use
        engine = resources.engine
        assert resources.engine is engine  # one engine per process, whatever the number of jobs
        stream = engine.open_stream(speaker="ryan", language="english")
        assert resources.load() == 0.25  # what the worker reports to the LiveKit server
        stream.cancel(wait=True)
        assert resources.load() == 0.0
    finally:
        resources.close()


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


@pytest.mark.parametrize("env,match", [({}, "OMNI_BASE_URL is not set"),
                                       ({"OMNI_BASE_URL": "ftp://x"}, "http"),
                                       ({"OMNI_BASE_URL": "http://x/v1", "FALSE_INTERRUPTION": "maybe"},
                                        "false_interruption")])
def test_bad_configuration_is_a_clear_error(env, match):
    with pytest.raises(ValueError, match=match):
        AgentConfig.from_env(env)


def test_cli_help_needs_no_configuration_and_start_fails_fast_without_it():
    help_run = subprocess.run([sys.executable, "-m", "agent", "--help"], capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert help_run.returncode == 0 and "start" in help_run.stdout and "dev" in help_run.stdout
    start_run = subprocess.run([sys.executable, "-m", "agent", "start"], capture_output=True, text=True, timeout=120,
                               env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert start_run.returncode != 0 and "OMNI_BASE_URL is not set" in start_run.stderr
    bad_port = subprocess.run([sys.executable, "-m", "agent", "start"], capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMNI_BASE_URL": "http://x:1/v1",
                                   "TTS_RANDOM_WEIGHTS": "0.6b", "AGENT_HEALTH_PORT": "80a"})
    assert bad_port.returncode != 0 and "AGENT_HEALTH_PORT='80a' is not a port number" in bad_port.stderr


def test_worker_metrics_go_to_the_registry_livekit_serves(tiny_checkpoint):
    import prometheus_client

    agent_cfg = AgentConfig.from_env({"OMNI_BASE_URL": "http://127.0.0.1:9/v1"})
    resources = SharedResources(agent_cfg, EngineConfig(model=tiny_checkpoint, max_streams=2))
    try:
        server = make_server(resources, metrics_port=0, health_port=9181)
        assert server._prometheus_port == 0
        assert server._port == 9181  # AGENT_HEALTH_PORT: start_all.sh moves it off direct mode's 8081
        text = prometheus_client.generate_latest().decode()  # what livekit's /metrics returns
        assert "agent_turns_total" in text and "agent_active_sessions" in text
        assert "agent_engine_load 0.0" in text  # the engine is not loaded yet: zero load, no crash
    finally:
        resources.close()
