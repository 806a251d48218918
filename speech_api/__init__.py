"""OpenAI-compatible speech API over the in-process TTS engine (aiohttp; the engine knows no HTTP).

    from speech_api import SpeechApiConfig, make_app, serve_beside
    app = make_app(engine, SpeechApiConfig(api_keys=("...",)))   # serve it, or mount it:
    parent_app.add_subapp("/speech", app)                       # -> /speech/v1/audio/speech
    serve_beside(engine, cfg)        # what the agent processes do: own thread, loop and port

`python -m speech_api` serves it alone (settings from the environment: SPEECH_API_* and TTS_*).
"""

from .app import SERVICE_KEY, SpeechService, make_app
from .background import BackgroundServer, serve_beside
from .config import ConfigError, SpeechApiConfig
from .timestamps import FrameObserver, NoTimestamps, WordTimestamps

__all__ = ["SERVICE_KEY", "BackgroundServer", "ConfigError", "FrameObserver", "NoTimestamps", "SpeechApiConfig",
           "SpeechService", "WordTimestamps", "make_app", "serve_beside"]
