"""The agent's configuration: one dataclass per concern; environment variables are read only in
`from_env` (the edge), as the *_ENV tables at the end say, and every one of them is listed in the
README's configuration table (tests/test_config_table.py holds the two together)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from token_server.env import FLAG, INTEGER, NUMBER, EnvSpec, Parser, Var
from tts_engine import EngineConfig

from .plugins.omni_config import LLMConfig, OmniConfig
from .plugins.tts_plugin import VoiceOptions
from .session.duplex import DuplexConfig
from .session.echo_gate import EchoGateConfig


@dataclass(frozen=True)
class VADConfig:
    """Silero VAD (its model ships in the livekit-plugins-silero wheel: nothing is downloaded)."""

    min_speech_s: float = 0.05  # speech before START_OF_SPEECH: the barge-in detection delay
    min_silence_s: float = 0.35  # silence before END_OF_SPEECH: where a turn starts
    activation_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.min_speech_s <= 2 or not 0 < self.min_silence_s <= 5:
            raise ValueError("VAD durations must be positive and small (seconds)")
        if not 0 < self.activation_threshold < 1:
            raise ValueError("VAD activation_threshold must be in (0, 1)")


@dataclass(frozen=True)
class TurnConfig:
    """End-of-turn rules, all local (no cloud turn model): VAD silence alone, or a short VAD silence
    and then the local Smart Turn model deciding whether to answer now (agent/session/turn_end.py)."""

    endpointing_min_delay_s: float = 0.05  # extra wait after END_OF_SPEECH before replying
    endpointing_max_delay_s: float = 3.0
    preemptive_generation: bool = False  # True starts the LLM during endpointing (extra requests)
    end_of_turn: Literal["vad", "smart_turn"] = "vad"
    smart_turn_model: str = ""  # the ONNX file (scripts/install_turn_model.sh puts it in .tools/smart-turn/)
    smart_turn_min_silence_s: float = 0.2  # the VAD's silence before the model is asked
    smart_turn_threshold: float = 0.5  # below this probability the turn is taken as unfinished ...
    smart_turn_max_delay_s: float = 0.8  # ... and the agent waits this much longer for more speech

    def __post_init__(self) -> None:
        if not 0 <= self.endpointing_min_delay_s <= self.endpointing_max_delay_s:
            raise ValueError("endpointing delays must satisfy 0 <= min <= max")
        if self.end_of_turn not in ("vad", "smart_turn"):
            raise ValueError("end_of_turn (AGENT_END_OF_TURN) must be 'vad' or 'smart_turn'")
        if self.end_of_turn == "smart_turn" and not self.smart_turn_model:
            raise ValueError("end_of_turn 'smart_turn' needs smart_turn_model (AGENT_TURN_MODEL): the ONNX file")
        if not 0 < self.smart_turn_threshold < 1 or not 0 < self.smart_turn_min_silence_s <= 5:
            raise ValueError("smart_turn_threshold must be in (0, 1) and smart_turn_min_silence_s in (0, 5]")
        if not self.endpointing_min_delay_s <= self.smart_turn_max_delay_s <= 10:
            raise ValueError("smart_turn_max_delay_s must be in [endpointing_min_delay_s, 10]")


@dataclass(frozen=True)
class AgentConfig:
    omni: OmniConfig
    llm: LLMConfig = field(default_factory=LLMConfig)
    voice: VoiceOptions = field(default_factory=VoiceOptions)
    vad: VADConfig = field(default_factory=VADConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    duplex: DuplexConfig = field(default_factory=DuplexConfig)
    echo: EchoGateConfig = field(default_factory=EchoGateConfig)
    traces_dir: str = "traces"
    greeting: str | None = None  # said when a session starts; None = wait for the user
    max_consecutive_errors: int = 1000  # failed turns in a row before a session gives up

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentConfig:
        e = os.environ if env is None else env
        return AGENT_ENV.build(e, omni=OMNI_ENV.build(e), llm=LLM_ENV.build(e), voice=VOICE_ENV.build(e),
                               duplex=DUPLEX_ENV.build(e), echo=ECHO_ENV.build(e), turn=TURN_ENV.build(e).resolve())


# where scripts/install_turn_model.sh puts the Smart Turn model (the repository's tool folder)
DEFAULT_TURN_MODEL = Path(__file__).resolve().parents[1] / ".tools" / "smart-turn" / "smart-turn-v3.2-cpu.onnx"


@dataclass(frozen=True)
class TurnChoice:
    """AGENT_END_OF_TURN / AGENT_TURN_MODEL as asked for; `resolve` makes the TurnConfig."""

    end_of_turn: str = "auto"  # smart_turn, vad, or auto: smart_turn when its model is installed
    model: str = str(DEFAULT_TURN_MODEL)

    def resolve(self) -> TurnConfig:
        mode = self.end_of_turn
        if mode == "auto":
            mode = "smart_turn" if Path(self.model).is_file() else "vad"
        elif mode == "smart_turn" and not Path(self.model).is_file():
            raise ValueError(f"AGENT_END_OF_TURN=smart_turn but the model {self.model} is missing: run "
                             "scripts/install_turn_model.sh (or set AGENT_TURN_MODEL, or AGENT_END_OF_TURN=vad)")
        return TurnConfig(end_of_turn=mode,  # type: ignore[arg-type]  # TurnConfig rejects others
                          smart_turn_model=self.model if mode == "smart_turn" else "")


def _early_pause(raw: str) -> float | None:
    """BARGE_IN_EARLY_PAUSE(_DBFS): a number, or "off" (also 0, none) for no such early pause."""
    return None if raw.lower() in ("off", "0", "none") else float(raw)


def engine_config_from_env(env: Mapping[str, str] | None = None) -> EngineConfig:
    """The TTS engine's settings from the environment (ENGINE_ENV; the README's table lists each variable)."""
    return ENGINE_ENV.build(os.environ if env is None else env)


@dataclass(frozen=True)
class WorkerConfig:
    """The LiveKit worker process: its capacity, and where its health and metrics server listens."""

    livekit_url: str = ""  # the server it registers with (livekit-agents reads LIVEKIT_URL itself too)
    agent_name: str = ""  # "" = automatic dispatch to every new room; a name = explicit dispatch only
    # conversations one worker takes: at this many it reports load 1.0 and the server sends new rooms
    # to another worker (the engine's stream slots bound it too: TTS_MAX_STREAMS)
    max_sessions: int = 4
    host: str = "127.0.0.1"  # the health/metrics server's bind address (0.0.0.0 for a scraper elsewhere)
    health_port: int = 8081  # GET /healthz and GET /metrics

    def __post_init__(self) -> None:
        if not 1 <= self.max_sessions <= 1000:
            raise ValueError(f"max_sessions (AGENT_MAX_SESSIONS) must be in 1..1000, got {self.max_sessions}")
        if not 0 <= self.health_port <= 65535:
            raise ValueError(f"health_port (AGENT_HEALTH_PORT) must be in 0..65535, got {self.health_port}")
        if not self.host:
            raise ValueError("host (AGENT_HOST) must not be empty")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        return WORKER_ENV.build(os.environ if env is None else env)


# ---- which variable sets which field (an unset one leaves the field's default) -----------------------

OMNI_ENV = EnvSpec(OmniConfig, (
    Var("OMNI_BASE_URL", "base_url",
        hint="point it at a vLLM-Omni (or OpenAI-compatible) server, e.g. http://127.0.0.1:8091/v1"),
    Var("OMNI_API_KEY", "api_key"), Var("OMNI_MODEL", "model"), Var("OMNI_STT_STYLE", "stt_style"),
    Var("OMNI_STT_MODEL", "stt_model"), Var("AGENT_LANGUAGE_CODE", "stt_language"),
    Var("OMNI_TIMEOUT_S", "request_timeout_s", NUMBER),
    Var("OMNI_PLAIN_STRING_CONTENT", "plain_string_content", FLAG)))
LLM_ENV = EnvSpec(LLMConfig, (
    Var("AGENT_SYSTEM_PROMPT", "system_prompt"), Var("LLM_MAX_TOKENS", "max_tokens", INTEGER),
    Var("LLM_TEMPERATURE", "temperature", NUMBER), Var("LLM_HISTORY_TURNS", "history_max_turns", INTEGER),
    Var("OMNI_SEND_MODALITIES", "send_modalities", FLAG)))
VOICE_ENV = EnvSpec(VoiceOptions, (Var("TTS_SPEAKER", "speaker"), Var("TTS_LANGUAGE", "language")))
DUPLEX_ENV = EnvSpec(DuplexConfig, (
    Var("BARGE_IN_MIN_SPEECH_S", "barge_in_min_speech_s", NUMBER), Var("FALSE_INTERRUPTION", "false_interruption"),
    Var("BARGE_IN_EARLY_PAUSE", "early_pause_threshold",
        Parser("a speech probability in (0, 1) or 'off'", _early_pause)),
    Var("BARGE_IN_EARLY_PAUSE_DBFS", "early_pause_dbfs", Parser("a level in dBFS (e.g. -40) or 'off'", _early_pause))))
ECHO_ENV = EnvSpec(EchoGateConfig, (
    Var("ECHO_GATE", "enabled", FLAG), Var("ECHO_GATE_ADAPTIVE", "adaptive", FLAG),
    Var("ECHO_GATE_RATIO", "min_ratio", NUMBER)))
TURN_ENV = EnvSpec(TurnChoice, (
    Var("AGENT_END_OF_TURN", "end_of_turn", Parser("auto, vad or smart_turn", str.lower)),
    Var("AGENT_TURN_MODEL", "model")))
AGENT_ENV = EnvSpec(AgentConfig, (Var("AGENT_TRACES_DIR", "traces_dir"), Var("AGENT_GREETING", "greeting")))
ENGINE_ENV = EnvSpec(EngineConfig, (
    Var("TTS_MODEL", "model"), Var("TTS_RANDOM_WEIGHTS", "random_weights"), Var("TTS_DEVICE", "device"),
    Var("TTS_DTYPE", "dtype"), Var("TTS_QUANTIZE", "quantize"), Var("TTS_CODEC_DTYPE", "codec_dtype"),
    Var("TTS_SEED", "seed", INTEGER), Var("TTS_MAX_STREAMS", "max_streams", INTEGER),
    Var("TTS_LIVE_RESERVE_SLOTS", "live_reserve_slots", INTEGER),
    Var("TTS_CUDA_GRAPHS", "cuda_graphs", FLAG), Var("TTS_CPU_THREADS", "cpu_threads", INTEGER), Var("TTS_OUTPUT_RATE", "output_sample_rate", INTEGER)))
WORKER_ENV = EnvSpec(WorkerConfig, (
    Var("LIVEKIT_URL", "livekit_url"), Var("AGENT_NAME", "agent_name"),
    Var("AGENT_MAX_SESSIONS", "max_sessions", INTEGER), Var("AGENT_HOST", "host"),
    Var("AGENT_HEALTH_PORT", "health_port", INTEGER)))
