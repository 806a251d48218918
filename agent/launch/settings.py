"""What scripts/start_all.sh itself reads (the README's second configuration table): one dataclass, its
defaults the only ones, read through START_ENV like every service's settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from token_server.env import INTEGER, NUMBER, PATH, EnvSpec, Var

ROOT = Path(__file__).resolve().parents[2]  # the repository: start_all.sh runs everything from here


@dataclass(frozen=True)
class StartSettings:
    transport: str = "auto"  # AGENT_TRANSPORT: auto | livekit | direct (the planner says what is wrong)
    omni_local_port: int = 8091  # the Omni server started here: vLLM-Omni, or the stand-ins' router
    whisper_port: int = 8092  # the stand-ins' Whisper server ...
    llm_port: int = 8093  # ... and llama.cpp server
    livekit_port: int = 7880  # the project's LiveKit server: signalling; WebRTC on TCP +1 and UDP +2
    livekit_bind: str = "127.0.0.1"
    livekit_node_ip: str = ""  # the LAN address browsers elsewhere reach (LIVEKIT_BIND=0.0.0.0)
    omni_venv: Path = ROOT / ".venv-omni"  # vLLM-Omni's own environment (else `vllm` on PATH)
    start_timeout_s: int | None = None  # every health-check wait; None: each service's own
    # vLLM-Omni on the GPU: None leaves deploy/omni/gpu_split.py's defaults (the one place they live)
    omni_max_model_len: int | None = None
    omni_gpu_margin_gib: float | None = None
    omni_quantization: str = ""
    # Where the agent listens: DirectServerConfig's and WorkerConfig's defaults, restated here because
    # their modules load the voice pipeline (torch, livekit), which the planner must not; the README
    # test (tests/test_config_table.py) holds each equal to the README and to the agent's own.
    direct_host: str = "127.0.0.1"
    direct_port: int = 8081
    agent_host: str = "127.0.0.1"
    agent_health_port: int = 8081


START_ENV = EnvSpec(StartSettings, (
    Var("AGENT_TRANSPORT", "transport"), Var("OMNI_LOCAL_PORT", "omni_local_port", INTEGER),
    Var("WHISPER_PORT", "whisper_port", INTEGER), Var("LLM_PORT", "llm_port", INTEGER),
    Var("LIVEKIT_PORT", "livekit_port", INTEGER), Var("LIVEKIT_BIND", "livekit_bind"),
    Var("LIVEKIT_NODE_IP", "livekit_node_ip"), Var("OMNI_VENV", "omni_venv", PATH),
    Var("START_TIMEOUT_S", "start_timeout_s", INTEGER), Var("OMNI_MAX_MODEL_LEN", "omni_max_model_len", INTEGER),
    Var("OMNI_GPU_MARGIN_GIB", "omni_gpu_margin_gib", NUMBER), Var("OMNI_QUANTIZATION", "omni_quantization"),
    Var("DIRECT_HOST", "direct_host"), Var("DIRECT_PORT", "direct_port", INTEGER),
    Var("AGENT_HOST", "agent_host"), Var("AGENT_HEALTH_PORT", "agent_health_port", INTEGER)))

DEFAULT_TTS_HUB_ID = "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice"  # the voice start looks for when TTS_MODEL is unset
