"""What every conversation of one agent process shares: the TTS engine (one model copy, one GPU
owner) and the Silero model. Both transports use it: the direct-mode server and the LiveKit worker,
whose jobs run as threads of the same process."""

from __future__ import annotations

import logging
import threading
import time

from livekit.agents import vad as lk_vad

from tts_engine import EngineConfig, TTSEngine

from .config import AgentConfig
from .session.pipeline import load_vad
from .session.turn_end import SmartTurnModel

log = logging.getLogger(__name__)


class SharedResources:
    """Process-wide singletons, created once on first use (or up front by `load_all`)."""

    def __init__(self, agent_cfg: AgentConfig, engine_cfg: EngineConfig) -> None:
        self.agent_cfg = agent_cfg
        self.engine_cfg = engine_cfg
        self._lock = threading.Lock()
        self._engine: TTSEngine | None = None
        self._vad: lk_vad.VAD | None = None
        self._turn_model: SmartTurnModel | None = None

    @property
    def engine(self) -> TTSEngine:
        with self._lock:
            if self._engine is None:
                self._engine = TTSEngine(self.engine_cfg)
                if self._engine.is_test_voice:
                    log.warning("TTS runs a RANDOM-WEIGHT TEST checkpoint (%s): the voice is noise, not speech",
                                self._engine.loaded.name)
            return self._engine

    @property
    def vad(self) -> lk_vad.VAD:
        with self._lock:
            if self._vad is None:
                self._vad = load_vad(self.agent_cfg)
            return self._vad

    @property
    def turn_model(self) -> SmartTurnModel | None:
        """The end-of-turn model, when the configuration asks for one (None: VAD-only endpointing)."""
        path = self.agent_cfg.turn.smart_turn_model
        if self.agent_cfg.turn.end_of_turn != "smart_turn" or not path:
            return None
        with self._lock:
            if self._turn_model is None:
                self._turn_model = SmartTurnModel(path)
            return self._turn_model

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def ready(self) -> bool:
        """Both models are loaded and the engine thread is serving."""
        engine = self._engine
        return engine is not None and self._vad is not None and engine.running

    def load_all(self) -> None:
        """Load the engine (weights, CUDA graphs) and Silero now, logging how long it took."""
        started = time.monotonic()
        source = self.engine_cfg.model or f"random weights {self.engine_cfg.random_weights}"
        log.info("loading the TTS engine (%s on %s) and Silero", source, self.engine_cfg.device)
        engine, _vad, turn_model = self.engine, self.vad, self.turn_model
        log.info("models loaded in %.1f s (engine: %d stream slots; end of turn: %s)", time.monotonic() - started,
                 engine.config.max_streams, turn_model.path.name if turn_model is not None else "VAD silence only")

    def load(self) -> float:
        """0..1: the share of TTS stream slots in use (0 before the engine exists)."""
        engine = self._engine
        return engine.load() if engine is not None else 0.0

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None
