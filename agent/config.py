"""The agent's configuration: one dataclass per concern; environment variables are read only in
`from_env` (the edge), and every one of them is listed in the README's configuration table."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tts_engine import EngineConfig

from .duplex import DuplexConfig
from .echo_gate import EchoGateConfig
from .omni_config import LLMConfig, OmniConfig
from .tts_plugin import VoiceOptions


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
    and then the local Smart Turn model deciding whether to answer now (agent/turn_end.py)."""

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
    def from_env(cls, env: dict[str, str] | None = None) -> AgentConfig:
        e = os.environ if env is None else env
        base_url = e.get("OMNI_BASE_URL", "")
        if not base_url:
            raise ValueError("OMNI_BASE_URL is not set: point it at a vLLM-Omni (or OpenAI-compatible) server, "
                             "e.g. http://127.0.0.1:8091/v1")
        omni = OmniConfig(
            base_url=base_url, api_key=e.get("OMNI_API_KEY", "EMPTY"),
            model=e.get("OMNI_MODEL", "Qwen/Qwen3-Omni-30B-A3B-Instruct"),
            stt_style=e.get("OMNI_STT_STYLE", "chat_audio"),  # type: ignore[arg-type]
            stt_model=e.get("OMNI_STT_MODEL") or None, stt_language=e.get("AGENT_LANGUAGE_CODE", "en"),
            request_timeout_s=float(e.get("OMNI_TIMEOUT_S", "15")),
            plain_string_content=e.get("OMNI_PLAIN_STRING_CONTENT", "0") == "1")
        llm = LLMConfig(
            system_prompt=e.get("AGENT_SYSTEM_PROMPT", LLMConfig.system_prompt),
            max_tokens=int(e.get("LLM_MAX_TOKENS", "200")), temperature=float(e.get("LLM_TEMPERATURE", "0.7")),
            history_max_turns=int(e.get("LLM_HISTORY_TURNS", "12")),
            send_modalities=e.get("OMNI_SEND_MODALITIES", "1") == "1")
        return cls(
            omni=omni, llm=llm,
            voice=VoiceOptions(speaker=e.get("TTS_SPEAKER", "ryan"), language=e.get("TTS_LANGUAGE", "english")),
            duplex=DuplexConfig(barge_in_min_speech_s=float(e.get("BARGE_IN_MIN_SPEECH_S", "0")),
                                false_interruption=e.get("FALSE_INTERRUPTION", "resume"),  # type: ignore[arg-type]
                                early_pause_threshold=_early_pause(e.get("BARGE_IN_EARLY_PAUSE", ""))),
            echo=EchoGateConfig(enabled=e.get("ECHO_GATE", "1") == "1",
                                min_ratio=float(e.get("ECHO_GATE_RATIO", str(EchoGateConfig.min_ratio))),
                                adaptive=e.get("ECHO_GATE_ADAPTIVE", "1") == "1"),
            turn=_turn_config(e),
            traces_dir=e.get("AGENT_TRACES_DIR", "traces"),
            greeting=e.get("AGENT_GREETING") or None)


# where scripts/install_turn_model.sh puts the Smart Turn model (the repository's tool folder)
DEFAULT_TURN_MODEL = Path(__file__).resolve().parents[1] / ".tools" / "smart-turn" / "smart-turn-v3.2-cpu.onnx"


def _turn_config(e: dict[str, str] | os._Environ[str]) -> TurnConfig:
    """AGENT_END_OF_TURN: smart_turn, vad, or auto (default: smart_turn when its model is installed)."""
    mode = e.get("AGENT_END_OF_TURN", "auto").strip().lower() or "auto"
    model = e.get("AGENT_TURN_MODEL") or str(DEFAULT_TURN_MODEL)
    if mode == "auto":
        mode = "smart_turn" if Path(model).is_file() else "vad"
    elif mode == "smart_turn" and not Path(model).is_file():
        raise ValueError(f"AGENT_END_OF_TURN=smart_turn but the model {model} is missing: run "
                         "scripts/install_turn_model.sh (or set AGENT_TURN_MODEL, or AGENT_END_OF_TURN=vad)")
    return TurnConfig(end_of_turn=mode, smart_turn_model=model if mode == "smart_turn" else "")  # type: ignore[arg-type]


def _early_pause(raw: str) -> float | None:
    """BARGE_IN_EARLY_PAUSE: a speech probability, "off", or empty for the default."""
    raw = raw.strip().lower()
    if not raw:
        return DuplexConfig.early_pause_threshold
    if raw in ("off", "0", "none"):
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"BARGE_IN_EARLY_PAUSE={raw!r}: give a speech probability in (0, 1) or 'off'") from None


def engine_config_from_env(env: dict[str, str] | None = None) -> EngineConfig:
    """The TTS engine's settings from the environment (the README's table lists each variable)."""
    e = os.environ if env is None else env
    device = e.get("TTS_DEVICE", "cpu")
    graphs = e.get("TTS_CUDA_GRAPHS")
    return EngineConfig(
        model=e.get("TTS_MODEL") or None, random_weights=e.get("TTS_RANDOM_WEIGHTS") or None,
        device=device, dtype=e.get("TTS_DTYPE") or None, seed=int(e.get("TTS_SEED", "0")),
        max_streams=int(e.get("TTS_MAX_STREAMS", "16")),
        cuda_graphs=None if graphs is None else graphs == "1",
        output_sample_rate=int(e.get("TTS_OUTPUT_RATE", "24000")))


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
    def from_env(cls, env: dict[str, str] | None = None) -> WorkerConfig:
        e = os.environ if env is None else env
        defaults = cls()
        return cls(livekit_url=e.get("LIVEKIT_URL", ""), agent_name=e.get("AGENT_NAME", ""),
                   max_sessions=_int(e, "AGENT_MAX_SESSIONS", defaults.max_sessions),
                   host=e.get("AGENT_HOST") or defaults.host,
                   health_port=_int(e, "AGENT_HEALTH_PORT", defaults.health_port))


def _int(env: dict[str, str] | os._Environ[str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
