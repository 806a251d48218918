"""start_all.sh's choices (agent/launch) with the machine given as plain data (GivenFacts): every branch
of the transport, key pair, STT + LLM, TTS, end of turn, reply length and timeout decisions, the
fail-fast checks with their ERROR and fix lines, vLLM-Omni's split, and chosen.env. No network, no
processes (but the last two tests: the planner's imports, and its command line)."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.launch import Chosen, Console, GivenFacts, LaunchError, OmniOnGpu, Planner, read_chosen
from agent.launch.plan import start_settings
from testing.soak_report import fill_endpoints

ROOT = Path(__file__).resolve().parents[1]

RUN = Path("/srv/run")
KEYS = {"LIVEKIT_API_KEY": "key-1", "LIVEKIT_API_SECRET": "s" * 32}
OMNI_URL = "http://gpu-box:8091/v1"
OMNI = {"OMNI_BASE_URL": OMNI_URL}
UP = {f"{OMNI_URL}/models": "200"}  # the external Omni answers
LIVEKIT_BIN = "/tools/bin/livekit-server"
TURN_MODEL = "/tools/smart-turn/model.onnx"
QWEN = "Qwen/Qwen3-Omni-30B-A3B-Instruct"
VLLM = ("/opt/omni/bin/vllm", "/opt/omni/bin/python")


@dataclass
class Outcome:
    chosen: Chosen | None
    error: LaunchError | None
    out: str
    err: str
    facts: GivenFacts

    @property
    def text(self) -> str:
        return self.out + self.err

    def value(self, name: str) -> str | list[str]:
        assert self.chosen is not None, self.text
        return self.chosen[name]

    @property
    def service_env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.value("SERVICE_ENV"))


def plan(env: dict[str, str], previous: dict[str, str] | None = None, **facts) -> Outcome:
    given = GivenFacts(**({"answers": UP} | facts))
    out, err = io.StringIO(), io.StringIO()
    try:
        planner = Planner(env, given, Console(out, err), RUN, previous=previous,
                          key_pair=lambda: ("key-new", "n" * 64))
        chosen, error = planner.start(), None
    except LaunchError as exc:
        chosen, error = None, exc
    return Outcome(chosen, error, out.getvalue(), err.getvalue(), given)


def failed(outcome: Outcome, message: str, fix: str | None = None) -> None:
    assert outcome.error is not None, outcome.text
    assert message in outcome.error.message, outcome.error.message
    if fix is not None:
        assert outcome.error.fix is not None and fix in outcome.error.fix, outcome.error.fix


# ---- transport and key pair ---------------------------------------------------------------------------


@pytest.mark.parametrize("env,facts,message,fix", [
    ({"AGENT_TRANSPORT": "carrier-pigeon"}, {}, "AGENT_TRANSPORT=carrier-pigeon is not a transport",
     "use auto (the default), livekit or direct"),
    ({"LIVEKIT_API_KEY": "k"}, {}, "only one of LIVEKIT_API_KEY / LIVEKIT_API_SECRET is set", "set both"),
    ({"LIVEKIT_API_SECRET": "s"}, {}, "only one of LIVEKIT_API_KEY / LIVEKIT_API_SECRET is set", "or neither"),
    ({"AGENT_TRANSPORT": "direct", "LIVEKIT_URL": "ws://lk:7880", **KEYS}, {},
     "AGENT_TRANSPORT=direct but LIVEKIT_URL is set (ws://lk:7880)", "unset one of them"),
    ({"LIVEKIT_URL": "ws://lk:7880"}, {},
     "LIVEKIT_URL is set (ws://lk:7880) but LIVEKIT_API_KEY / LIVEKIT_API_SECRET are not", "unset LIVEKIT_URL"),
    ({"AGENT_TRANSPORT": "livekit"}, {}, f"AGENT_TRANSPORT=livekit but there is no LiveKit server: no LiveKit "
     f"server at {LIVEKIT_BIN} and no Go to build it", "run bash scripts/install_livekit.sh"),
    ({"AGENT_TRANSPORT": "livekit"}, {"go": True, "livekit_builds": False}, "building the LiveKit server failed "
     f"(log: {RUN}/logs/livekit-install.log)", "or use AGENT_TRANSPORT=direct"),
    ({"LIVEKIT_BIND": "0.0.0.0"}, {"files": {LIVEKIT_BIN: "file"}}, "LIVEKIT_BIND=0.0.0.0 needs LIVEKIT_NODE_IP",
     "set LIVEKIT_NODE_IP to this machine's LAN address"),
    ({"LIVEKIT_PORT": "78x"}, {}, "LIVEKIT_PORT='78x' is not an integer", "README's configuration tables"),
    ({"TOKEN_SERVER_PORT": "80a"}, {}, "TOKEN_SERVER_PORT='80a' is not an integer", "README's configuration tables"),
])
def test_a_bad_transport_setting_fails_before_anything_else(env, facts, message, fix):
    outcome = plan(OMNI | env, **facts)
    failed(outcome, message, fix)
    assert "STT + LLM" not in outcome.out


@pytest.mark.parametrize("env,facts,mode,why,url,warning,done", [
    (KEYS | {"LIVEKIT_URL": "ws://lk:7880"}, {"answers": UP | {"http://lk:7880/": "200"}}, "livekit",
     "LIVEKIT_URL is set (ws://lk:7880): an external LiveKit deployment", "ws://lk:7880", None, []),
    ({}, {"files": {LIVEKIT_BIN: "file"}}, "livekit",
     "no LIVEKIT_URL: starting the project's LiveKit server at ws://127.0.0.1:7880 (v0.0.0)", "ws://127.0.0.1:7880",
     None, []),
    ({}, {"go": True}, "livekit", "starting the project's LiveKit server at ws://127.0.0.1:7880",
     "ws://127.0.0.1:7880", None, ["install livekit"]),
    ({"LIVEKIT_BIND": "0.0.0.0", "LIVEKIT_NODE_IP": "192.168.1.20", "LIVEKIT_PORT": "7990"},
     {"files": {LIVEKIT_BIN: "file"}}, "livekit", "server at ws://192.168.1.20:7990", "ws://192.168.1.20:7990", None, []),
    ({}, {"go": True, "livekit_builds": False}, "direct", "no LIVEKIT_URL and no LiveKit server here: the page talks "
     "WebRTC straight to the agent", "", "LiveKit mode is not available: building the LiveKit server failed",
     ["install livekit"]),
    ({}, {}, "direct", "no LIVEKIT_URL and no LiveKit server here", "",
     f"LiveKit mode is not available: no LiveKit server at {LIVEKIT_BIN} and no Go to build it", []),
    ({"AGENT_TRANSPORT": "direct"}, {"files": {LIVEKIT_BIN: "file"}, "go": True}, "direct",
     "AGENT_TRANSPORT=direct: the page talks WebRTC straight to the agent", "", None, []),
])
def test_transport(env, facts, mode, why, url, warning, done):
    outcome = plan(OMNI | env, **facts)
    assert outcome.value("MODE") == mode and why in outcome.value("MODE_WHY")
    assert f"[start_all] transport: {mode} - {outcome.value('MODE_WHY')}" in outcome.out
    assert outcome.value("LIVEKIT_URL") == url
    assert outcome.value("START_LIVEKIT") == ("1" if mode == "livekit" and "LIVEKIT_URL" not in env else "0")
    assert (warning in outcome.err) if warning else "WARNING: LiveKit" not in outcome.err
    assert [d for d in outcome.facts.done if "livekit" in d] == done
    assert ("installing the LiveKit server" in outcome.out) == bool(done)
    service_env = outcome.service_env
    assert service_env.get("LIVEKIT_URL", "") == url
    assert ("AGENT_HEALTH_PORT" in service_env) == (mode == "livekit")  # the worker's health server
    assert outcome.value("HEALTH_agent") == "http://127.0.0.1:8081/healthz"  # DIRECT_PORT or AGENT_HEALTH_PORT
    if url.startswith("ws://192"):
        assert outcome.value("HEALTH_livekit") == "http://127.0.0.1:7990/"  # probed on this machine


def test_an_external_livekit_must_answer():
    env = OMNI | KEYS | {"LIVEKIT_URL": "ws://127.0.0.1:9"}
    failed(plan(env), "the LiveKit server LIVEKIT_URL=ws://127.0.0.1:9 is not reachable (unreachable (",
           "unset LIVEKIT_URL to use the project's own LiveKit server")
    secure = plan(OMNI | KEYS | {"LIVEKIT_URL": "wss://lk.example.com/"},
                  answers=UP | {"https://lk.example.com/": "200"})
    assert secure.error is None and secure.value("MODE") == "livekit"


@pytest.mark.parametrize("env,previous,key,keys_from,generated", [
    (KEYS, {"GENERATED_API_KEY": "key-old", "GENERATED_API_SECRET": "o" * 64}, "key-1", "environment", False),
    ({}, {"GENERATED_API_KEY": "key-old", "GENERATED_API_SECRET": "o" * 64}, "key-old",
     f"generated earlier, reused from {RUN}/chosen.env", True),
    ({}, None, "key-new", f"generated now, kept in {RUN}/chosen.env (mode 0600)", True),
])
def test_key_pair(env, previous, key, keys_from, generated):
    outcome = plan(OMNI | env, previous)
    assert (outcome.value("LIVEKIT_API_KEY"), outcome.value("KEYS_FROM")) == (key, keys_from)
    assert f"[start_all] token key pair: key {key}, {keys_from}" in outcome.out
    names = dict(outcome.chosen.items if outcome.chosen else [])
    assert ("GENERATED_API_SECRET" in names) == generated
    assert all(("s" * 32) not in line for line in outcome.value("SERVICE_ENV"))  # never on a command line


# ---- STT + LLM ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env,facts,source,why,services", [
    (OMNI, {}, "external", "OMNI_BASE_URL is set", "agent token_server"),
    ({}, {"gpu": True, "vllm": VLLM, "vllm_version": "0.30.0"}, "vllm-omni",
     f"vLLM-Omni is installed and a GPU is present: starting {QWEN} on port 8091", "vllm_omni agent token_server"),
    ({"OMNI_LOCAL_PORT": "9191"}, {}, "cpu-standins", "no OMNI_BASE_URL and no GPU: starting the CPU stand-ins "
     "(Whisper base + SmolLM2-135M behind one OpenAI-compatible router at http://127.0.0.1:9191/v1)",
     "whisper llm omni_router agent token_server"),
    ({"OMNI_MODEL": "mine"}, {"gpu": True}, "cpu-standins", "no OMNI_BASE_URL and vLLM-Omni is not installed:",
     "whisper llm omni_router agent token_server"),
])
def test_stt_and_llm(env, facts, source, why, services):
    outcome = plan(env, **facts)
    assert outcome.value("OMNI_SOURCE") == source and why in outcome.value("OMNI_WHY")
    assert f"[start_all] STT + LLM: {source} - {outcome.value('OMNI_WHY')}" in outcome.out
    assert outcome.value("SERVICES") == services
    assert outcome.value("EXTERNAL_OMNI") == (OMNI_URL if source == "external" else "")
    service_env = outcome.service_env
    if source == "cpu-standins":  # what the stand-ins' router serves, whatever was asked for
        assert {k: service_env[k] for k in ("OMNI_STT_STYLE", "OMNI_MODEL", "OMNI_STT_MODEL",
                                             "OMNI_PLAIN_STRING_CONTENT", "OMNI_SEND_MODALITIES")} == {
            "OMNI_STT_STYLE": "transcriptions", "OMNI_MODEL": "smollm2-135m", "OMNI_STT_MODEL": "whisper-base",
            "OMNI_PLAIN_STRING_CONTENT": "1", "OMNI_SEND_MODALITIES": "0"}
        port = env.get("OMNI_LOCAL_PORT", "8091")
        assert outcome.value("HEALTH_omni_router") == f"http://127.0.0.1:{port}/healthz"
        assert outcome.value("HEALTH_whisper") == "http://127.0.0.1:8092/healthz"
        assert outcome.value("HEALTH_llm") == "http://127.0.0.1:8093/v1/models"
    else:
        assert "OMNI_STT_STYLE" not in service_env
    if source == "vllm-omni":
        assert outcome.value("HEALTH_vllm_omni") == "http://127.0.0.1:8091/v1/models"
        assert outcome.value("VLLM_CMD") == [
            VLLM[0], "serve", QWEN, "--omni", "--deploy-config", f"{RUN}/omni-deploy.yaml", "--host", "127.0.0.1",
            "--port", "8091", "--stage-init-timeout", "1800", "--init-timeout", "1800"]
        assert outcome.value("VLLM_TIMEOUT_S") == "1800"


# ---- TTS --------------------------------------------------------------------------------------------------

CKPT, TINY = "/models/qwen3-tts", f"{RUN}/tiny-checkpoint"
DEFAULT_VOICE = "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice"


@pytest.mark.parametrize("env,facts,source,model,test_voice,timeout_s", [
    ({"TTS_MODEL": CKPT}, {"files": {CKPT: "dir", f"{CKPT}/config.json": "file"}},
     f"checkpoint folder {CKPT} (TTS_MODEL)", CKPT, False, "300"),
    ({"TTS_MODEL": CKPT}, {"files": {CKPT: "dir", f"{CKPT}/config.json": "file", f"{CKPT}/TINY_TEST_CHECKPOINT": "file"}},
     f"checkpoint folder {CKPT} (TTS_MODEL)", CKPT, True, "300"),
    ({"TTS_MODEL": "me/voice"}, {"hub_answers": {"me/voice": "cached"}}, "hub id me/voice (TTS_MODEL; cached)",
     "me/voice", False, "300"),
    ({"TTS_MODEL": "me/voice"}, {"hub_answers": {"me/voice": "reachable"}}, "hub id me/voice (TTS_MODEL; reachable)",
     "me/voice", False, "1800"),  # the agent downloads it before it answers
    ({"TTS_RANDOM_WEIGHTS": "0.6b"}, {}, "random weights 0.6b (TTS_RANDOM_WEIGHTS)", "", True, "300"),
    ({}, {"hub_answers": {DEFAULT_VOICE: "cached"}}, f"hub id {DEFAULT_VOICE} (TTS_MODEL unset; cached)",
     DEFAULT_VOICE, False, "300"),
    ({}, {"hub_answers": {DEFAULT_VOICE: "reachable"}}, f"hub id {DEFAULT_VOICE} (TTS_MODEL unset; reachable)",
     DEFAULT_VOICE, False, "1800"),
    ({}, {}, f"the tiny random-weight TEST checkpoint {TINY} (TTS_MODEL unset and {DEFAULT_VOICE} unavailable: "
     "not in the Hugging Face cache", TINY, True, "300"),
])
def test_tts_source(env, facts, source, model, test_voice, timeout_s):
    outcome = plan(OMNI | env, **facts)
    assert source in outcome.value("TTS_SOURCE") and f"[start_all] TTS: {outcome.value('TTS_SOURCE')}" in outcome.out
    assert outcome.value("TTS_MODEL") == model and outcome.service_env["TTS_MODEL"] == model
    assert outcome.value("TTS_TEST_VOICE") == ("1" if test_voice else "0")
    assert ("RANDOM-WEIGHT TEST VOICE" in outcome.err) == test_voice
    assert outcome.value("AGENT_TIMEOUT_S") == timeout_s
    assert [d for d in outcome.facts.done if d.startswith("build")] == ([f"build {TINY}"] if model == TINY else [])


@pytest.mark.parametrize("env,facts,message,fix", [
    ({"TTS_MODEL": CKPT}, {"files": {CKPT: "dir"}}, f"TTS_MODEL={CKPT} is a folder without config.json",
     f"huggingface-cli download {DEFAULT_VOICE} --local-dir DIR"),
    ({"TTS_MODEL": "/no/such/folder"}, {}, "TTS_MODEL=/no/such/folder: no such checkpoint folder",
     "or unset TTS_MODEL to run the tiny TEST voice"),
    ({"TTS_MODEL": "~/voice"}, {}, "TTS_MODEL=~/voice: no such checkpoint folder", None),
    ({"TTS_MODEL": "me/voice"}, {}, "TTS_MODEL=me/voice is no folder here, and as a hub id it cannot be loaded: "
     "unavailable", "huggingface-cli download me/voice --local-dir DIR"),
    ({"TTS_MODEL": "not a model"}, {}, "TTS_MODEL=not a model is neither an existing folder nor a hub id",
     f"or e.g. {DEFAULT_VOICE}"),
    ({}, {"tiny_builds": False}, f"building the tiny checkpoint failed (log above: {RUN}/logs/tiny-checkpoint.log)",
     "set TTS_MODEL to a real checkpoint"),
])
def test_tts_errors(env, facts, message, fix):
    failed(plan(OMNI | env, **facts), message, fix)


def test_tts_device_and_an_existing_tiny_checkpoint():
    on_gpu = plan(OMNI | {"TTS_RANDOM_WEIGHTS": "0.6b"}, gpu=True)
    assert on_gpu.service_env["TTS_DEVICE"] == "cuda"
    assert "TTS device: cuda (a GPU is present; TTS_DEVICE=cpu to keep it on the CPU)" in on_gpu.out
    kept = plan(OMNI | {"TTS_DEVICE": "cpu", "TTS_RANDOM_WEIGHTS": "0.6b"}, gpu=True)
    assert kept.service_env["TTS_DEVICE"] == "cpu" and "TTS device" not in kept.out
    assert "TTS_DEVICE" not in plan(OMNI).service_env  # no GPU: the engine's own default
    built = plan(OMNI, files={f"{TINY}/TINY_TEST_CHECKPOINT": "file", f"{TINY}/config.json": "file"})
    assert f"build {TINY}" not in built.facts.done and "building the tiny" not in built.out


# ---- end of turn, reply length, request timeout --------------------------------------------------------


@pytest.mark.parametrize("env,facts,said,warning,installs", [
    ({"AGENT_END_OF_TURN": "vad"}, {"files": {TURN_MODEL: "file"}}, "VAD silence (0.35 s)", None, False),
    ({}, {}, "Smart Turn v3.2 (local) judges each pause of 0.2 s", None, True),
    ({"AGENT_END_OF_TURN": "Smart_Turn"}, {}, "Smart Turn v3.2", None, True),
    ({}, {"turn_model_installs": False}, "VAD silence (0.35 s)", "the Smart Turn model could not be installed", True),
    ({"AGENT_TURN_MODEL": "/m.onnx"}, {"files": {"/m.onnx": "file"}}, "Smart Turn v3.2", None, False),
    ({"AGENT_TURN_MODEL": "/m.onnx"}, {"files": {"/m.onnx": "empty"}}, "VAD silence (0.35 s)", None, False),
])
def test_end_of_turn(env, facts, said, warning, installs):
    outcome = plan(OMNI | env, **facts)
    assert f"[start_all] end of turn: {said}" in outcome.out
    assert (warning in outcome.err) if warning else "Smart Turn model could not" not in outcome.err
    assert ("install turn model" in outcome.facts.done) == installs


def test_smart_turn_asked_for_but_not_installable_fails():
    failed(plan(OMNI | {"AGENT_END_OF_TURN": "smart_turn"}, turn_model_installs=False),
           "AGENT_END_OF_TURN=smart_turn but the Smart Turn model could not be installed (above)",
           "or set AGENT_END_OF_TURN=vad")


@pytest.mark.parametrize("env,facts,max_tokens,timeout_s,said", [
    ({}, {}, "24", "90", ["LLM_MAX_TOKENS=24: SmolLM2 rambles and the test voice speaks ~0.4 s per character",
                          "OMNI_TIMEOUT_S=90: the stand-ins queue concurrent sessions' requests"]),
    ({}, {"hub_answers": {DEFAULT_VOICE: "cached"}}, "60", "90", ["LLM_MAX_TOKENS=60: SmolLM2 rambles;"]),
    ({"LLM_MAX_TOKENS": "100", "OMNI_TIMEOUT_S": "30"}, {}, "100", "30", []),
    (OMNI, {}, None, None, []),  # a real Omni: the agent's own defaults
])
def test_reply_length_and_request_timeout_for_the_standins(env, facts, max_tokens, timeout_s, said):
    outcome = plan(env, **facts)
    assert outcome.service_env.get("LLM_MAX_TOKENS") == max_tokens
    assert outcome.service_env.get("OMNI_TIMEOUT_S") == timeout_s
    assert all(line in outcome.out for line in said)
    assert ("LLM_MAX_TOKENS=" in outcome.out) == any("LLM" in line for line in said)


# ---- ports, endpoints ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env,facts,busy,what,var", [
    (OMNI, {}, "127.0.0.1:8080", "the token server", "TOKEN_SERVER_PORT"),
    (OMNI | {"DIRECT_PORT": "9081"}, {}, "127.0.0.1:9081", "the direct-mode agent", "DIRECT_PORT"),
    (OMNI, {"files": {LIVEKIT_BIN: "file"}}, "127.0.0.1:8081", "the LiveKit worker's health and metrics server",
     "AGENT_HEALTH_PORT"),
    (OMNI, {"files": {LIVEKIT_BIN: "file"}}, "127.0.0.1:7880", "the LiveKit server", "LIVEKIT_PORT"),
    (OMNI, {"files": {LIVEKIT_BIN: "file"}}, "127.0.0.1:7881", "the LiveKit server's WebRTC/TCP port (LIVEKIT_PORT+1)",
     "LIVEKIT_PORT"),
    ({}, {}, "127.0.0.1:8091", "the stand-ins' router", "OMNI_LOCAL_PORT"),
    ({}, {}, "127.0.0.1:8092", "the Whisper server", "WHISPER_PORT"),
    ({}, {}, "127.0.0.1:8093", "the llama.cpp server", "LLM_PORT"),
    ({}, {"gpu": True, "vllm": VLLM, "vllm_version": "0.30.0"}, "127.0.0.1:8091", "vLLM-Omni", "OMNI_LOCAL_PORT"),
])
def test_a_port_in_use_fails_fast_naming_its_owner_and_variable(env, facts, busy, what, var):
    outcome = plan(env, ports_in_use={busy: "pid 7 (squatter)"}, **facts)
    failed(outcome, f"port {busy.split(':')[1]} ({what}) is in use by pid 7 (squatter)",
           f"stop that process, or give {what} another port: {var}=<free port> scripts/start_all.sh start")
    assert not [d for d in outcome.facts.done if d.startswith("build")]  # nothing built before the checks


def test_endpoints_follow_the_ports_and_hosts():
    lan = plan(OMNI | {"DIRECT_HOST": "0.0.0.0", "TOKEN_SERVER_HOST": "0.0.0.0", "TOKEN_SERVER_PORT": "9000"})
    assert ("DIRECT_HOST=0.0.0.0 but AGENT_OFFER_URL is unset: pages on other machines need "
            "AGENT_OFFER_URL=http://<this machine's LAN address>:8081/api/offer (and DIRECT_ICE_HOSTS)") in lan.err
    assert lan.value("PAGE_URL") == "http://127.0.0.1:9000"
    assert lan.value("HEALTH_token_server") == "http://127.0.0.1:9000/healthz"
    assert lan.value("AGENT_METRICS_URL") == "http://127.0.0.1:8081/metrics"
    env = lan.service_env
    assert env["DIRECT_ALLOWED_ORIGINS"] == "http://127.0.0.1:9000,http://localhost:9000"
    assert env["AGENT_OFFER_URL"] == "http://127.0.0.1:8081/api/offer"
    assert (env["TOKEN_SERVER_HOST"], env["TOKEN_SERVER_PORT"], env["DIRECT_HOST"]) == ("0.0.0.0", "9000", "0.0.0.0")
    given = plan(OMNI | {"DIRECT_HOST": "0.0.0.0", "AGENT_OFFER_URL": "http://10.0.0.2:8081/api/offer",
                         "DIRECT_ALLOWED_ORIGINS": "http://10.0.0.2:8080", "AGENT_TRACES_DIR": "/tmp/t"})
    assert "AGENT_OFFER_URL is unset" not in given.err
    assert given.service_env["AGENT_OFFER_URL"] == "http://10.0.0.2:8081/api/offer"
    assert given.service_env["DIRECT_ALLOWED_ORIGINS"] == "http://10.0.0.2:8080"
    assert given.value("AGENT_TRACES_DIR") == "/tmp/t"
    worker = plan(OMNI | {"AGENT_HOST": "0.0.0.0", "AGENT_HEALTH_PORT": "9181"}, files={LIVEKIT_BIN: "file"})
    assert worker.value("HEALTH_agent") == "http://127.0.0.1:9181/healthz"
    assert (worker.service_env["AGENT_HOST"], worker.service_env["AGENT_HEALTH_PORT"]) == ("0.0.0.0", "9181")


# ---- the external Omni ---------------------------------------------------------------------------------


@pytest.mark.parametrize("answer,message,fix,warning", [
    ("200", None, None, None),
    ("HTTP 401", f"the Omni endpoint OMNI_BASE_URL={OMNI_URL} refused our key (GET /models: HTTP 401)",
     "set OMNI_API_KEY to the server's API key", None),
    ("HTTP 403", "refused our key (GET /models: HTTP 403)", "set OMNI_API_KEY", None),
    ("HTTP 404", None, None, f"OMNI_BASE_URL={OMNI_URL} has no /models (HTTP 404): it answers, so going on"),
    ("unreachable (timed out)", f"the Omni endpoint OMNI_BASE_URL={OMNI_URL} is not reachable (GET /models: "
     "unreachable (timed out))", "or unset OMNI_BASE_URL to use the CPU stand-ins", None),
])
def test_the_external_omni_endpoint(answer, message, fix, warning):
    outcome = plan(OMNI, answers={f"{OMNI_URL}/models": answer})
    if message:
        failed(outcome, message, fix)
    else:
        assert outcome.error is None and (warning is None or warning in outcome.err)
    assert (f"Omni endpoint {OMNI_URL} answers (GET /models: 200)" in outcome.out) == (answer == "200")


# ---- vLLM-Omni on this GPU -----------------------------------------------------------------------------

SPLIT_OK = (0, "GPU NVIDIA L40S: 44.5 GiB; ...\nvLLM-Omni gets 33.7 GiB = gpu_memory_utilization 0.7575\n"
               "gpu_memory_utilization=0.7575\n")
SPLIT_TOO_SMALL = (2, "GPU NVIDIA L40S: 44.5 GiB; the TTS engine 10.2 GiB\nerror: not enough GPU memory left\n"
                      "fix: use the FP8 variant (OMNI_QUANTIZATION=fp8\n")


@pytest.mark.parametrize("version,split,message,fix,warning", [
    ((0, "vLLM-Omni 0.30.0, the pinned release"), SPLIT_OK, None, None, None),
    ((1, "vLLM-Omni 0.31.0 is not the pinned 0.30.0"), SPLIT_OK, None, None, "vLLM-Omni 0.31.0 is not the pinned"),
    ((2, "vLLM-Omni 0.14.0 is older than 0.28.0"), SPLIT_OK, f"vLLM-Omni 0.14.0 is older than 0.28.0 ({VLLM[0]})",
     "install the pinned release next to it: /opt/omni/bin/pip install -r deploy/omni/requirements.txt", None),
    ((0, "vLLM-Omni 0.30.0, the pinned release"), SPLIT_TOO_SMALL, "not enough GPU memory left",
     "use the FP8 variant (OMNI_QUANTIZATION=fp8", None),
    ((0, "vLLM-Omni 0.30.0, the pinned release"), (2, "Traceback ...\n"),
     "deploy/omni/gpu_split.py plan failed (exit status 2, output above)", "", None),
])
def test_vllm_omni_release_and_gpu_split_fail_fast(version, split, message, fix, warning):
    env = {"OMNI_QUANTIZATION": "fp8", "OMNI_MAX_MODEL_LEN": "16384", "TTS_MAX_STREAMS": "8", "TTS_MODEL": "me/v"}
    outcome = plan(env, gpu=True, vllm=VLLM, hub_answers={"me/v": "cached"},
                   split={"check-version": version, "plan": split})
    if message:
        failed(outcome, message, fix)
    else:
        assert outcome.error is None, outcome.text
        assert "[start_all]   vLLM-Omni gets 33.7 GiB = gpu_memory_utilization 0.7575" in outcome.out
        assert "gpu_memory_utilization=0.7575" not in outcome.out  # for scripts; the line above says it
    assert (warning in outcome.err) if warning else "WARNING: vLLM" not in outcome.err
    if split is SPLIT_TOO_SMALL and version[0] == 0:  # the split's own lines are shown above the error
        assert "[start_all]   GPU NVIDIA L40S: 44.5 GiB; the TTS engine 10.2 GiB" in outcome.err
    if version[0] < 2:  # only what is set is passed on: gpu_split.py's defaults stay its own
        assert (f"gpu_split plan --model {QWEN} --max-model-len 16384 --quantization fp8 --tts-device cuda "
                "--tts-model me/v --tts-max-streams 8") in outcome.facts.done


def omni_on_gpu(env: dict[str, str], **facts) -> tuple[GivenFacts, str, str, LaunchError | None]:
    given = GivenFacts(**facts)
    out, err = io.StringIO(), io.StringIO()
    try:
        OmniOnGpu(env, start_settings(env), given, Console(out, err), RUN).plan_only()
        error = None
    except LaunchError as exc:
        error = exc
    return given, out.getvalue(), err.getvalue(), error


def test_omni_plan_prints_the_command_or_says_what_is_missing():
    given, out, err, error = omni_on_gpu({"OMNI_VENV": "/opt/omni", "START_TIMEOUT_S": "600", "TTS_DEVICE": ""},
                                         gpu=True, split={"plan": SPLIT_OK})
    assert error is None
    assert ("vLLM-Omni is not installed (/opt/omni/bin/vllm, or vllm on PATH): python3.12 -m venv /opt/omni && "
            "/opt/omni/bin/pip install -r deploy/omni/requirements.txt") in err
    assert given.done == [f"gpu_split plan --model {QWEN} --tts-device cuda --tts-model {DEFAULT_VOICE} --overlay -"]
    assert (f"[start_all]   vllm serve {QWEN} --omni --deploy-config {RUN}/omni-deploy.yaml --host 127.0.0.1 "
            "--port 8091 --stage-init-timeout 600 --init-timeout 600") in out
    assert f"start would run (after the agent, with {RUN}/omni-deploy.yaml holding the measured split):" in out
    _, _, _, error = omni_on_gpu({})
    assert error is not None and error.message.startswith("no GPU here (nvidia-smi lists none)")
    assert error.fix == "run omni-plan on the GPU machine"


def test_the_measured_split_writes_the_overlay():
    given = GivenFacts(split={"plan": SPLIT_OK})
    out = io.StringIO()
    env = {"OMNI_GPU_MARGIN_GIB": "2.5"}
    OmniOnGpu(env, start_settings(env), given, Console(out, io.StringIO()), RUN).split_measured(45090)
    assert given.done == [f"gpu_split plan --model {QWEN} --margin-gib 2.5 --tts-measured-from 45090 --overlay "
                          f"{RUN}/omni-deploy.yaml"]
    assert "GPU split for vLLM-Omni (the TTS engine's share measured):" in out.getvalue()


# ---- chosen.env ----------------------------------------------------------------------------------------


def test_chosen_env_is_private_and_reads_back(tmp_path):
    outcome = plan({}, files={LIVEKIT_BIN: "file"})
    assert outcome.chosen is not None
    path = outcome.chosen.write(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    back = read_chosen(path)
    assert back["MODE_WHY"].startswith("no LIVEKIT_URL: starting the project's LiveKit server at")
    assert back["GENERATED_API_SECRET"] == "n" * 64 and "SERVICE_ENV" not in back  # arrays: bash's
    assert back["SERVICES"] == "livekit whisper llm omni_router agent token_server"
    soak_args = argparse.Namespace(run_dir=str(tmp_path), base=None, metrics_url=None)
    fill_endpoints(soak_args)  # what scripts/soak.py and bench_duplex.py read
    assert soak_args.base == "http://127.0.0.1:8080"
    assert "RANDOM-WEIGHT TEST VOICE" in (tmp_path / "logs" / "agent.log").read_text()
    assert read_chosen(tmp_path / "missing.env") == {}


# ---- the module itself ---------------------------------------------------------------------------------


def test_the_planner_imports_nothing_heavy():
    code = ("import sys, agent.launch.__main__; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'livekit', 'tts_engine', 'numpy', "
            "'aiortc'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_command_line_with_given_facts(tmp_path):
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"answers": UP, "files": {TURN_MODEL: "file"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNI_", "TTS_", "LIVEKIT_", "AGENT_", "DIRECT_"))}
    args = [sys.executable, "-m", "agent.launch", "plan", "--run-dir", str(tmp_path), "--facts", str(facts)]
    ok = subprocess.run(args, cwd=ROOT, env=env | OMNI, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "[start_all] transport: direct" in ok.stdout and read_chosen(tmp_path / "chosen.env")["MODE"] == "direct"
    bad = subprocess.run(args, cwd=ROOT, env=env | OMNI | {"AGENT_TRANSPORT": "x"}, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == ["[start_all] ERROR: AGENT_TRANSPORT=x is not a transport",
                                       "[start_all]   fix: use auto (the default), livekit or direct"]
