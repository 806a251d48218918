"""In-process streaming Qwen3-TTS engine: 20 ms packets as each codec frame decodes.

Never imports livekit or aiohttp: the agent wraps this engine, not the other way round.
"""

from .config import EngineConfig, FrameCapConfig, SamplingConfig, SchedulerConfig
from .engine import TTSEngine
from .errors import (
    EngineBusy,
    EngineClosed,
    InvalidTextError,
    StreamError,
    TTSEngineError,
    UnknownLanguageError,
    UnknownSpeakerError,
    UnsupportedModelError,
)
from .packets import AudioPacket
from .plan import Priority
from .stream import TTSStream
from .word_timing import WordTiming

__all__ = [
    "AudioPacket", "EngineBusy", "EngineClosed", "EngineConfig", "FrameCapConfig", "InvalidTextError",
    "Priority", "SamplingConfig", "SchedulerConfig", "StreamError", "TTSEngine", "TTSEngineError", "TTSStream", "UnknownLanguageError",
    "UnknownSpeakerError", "UnsupportedModelError", "WordTiming",
]
