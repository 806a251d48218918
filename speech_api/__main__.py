"""`python -m speech_api [--host H] [--port P]`: the speech API alone, on its own engine.

Settings from the environment only here: SPEECH_API_* (speech_api/config.py) and the engine's TTS_*
(the agent's reader, so both processes take the same variables). Exit code 2 on a configuration
error (e.g. a non-loopback host without SPEECH_API_KEYS), 70 when the engine thread dies.

This edge is the one module here that imports the agent package (its TTS_* reader and its engine
watch); the library modules never do, and the agent's own edges mount the library (serve_beside).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys

from aiohttp import web

from agent.config import engine_config_from_env
from agent.observe.engine_watch import EXIT_ENGINE_DEAD, EngineWatch
from token_server.http_guard import KEEPALIVE_TIMEOUT_S
from tts_engine import TTSEngine

from .app import make_app
from .background import HANDLER_CANCELLATION
from .config import SpeechApiConfig

log = logging.getLogger("speech_api")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m speech_api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", help="bind address (default: SPEECH_API_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: SPEECH_API_PORT or 8880)")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        cfg = dataclasses.replace(SpeechApiConfig.from_env(), **overrides)
        # alone, no live call will ever want the slots the engine keeps for them: all go to the API
        engine_cfg = dataclasses.replace(engine_config_from_env(), live_reserve_slots=0)
    except ValueError as exc:
        parser.exit(2, f"speech_api: configuration error: {exc}\n")
    with TTSEngine(engine_cfg) as engine:
        if engine.is_test_voice:
            log.warning("TTS runs a RANDOM-WEIGHT TEST checkpoint: the voice is noise, not speech")
        log.info("serving http://%s:%d/v1/audio/speech (auth %s; voices %s)", cfg.host, cfg.port, cfg.auth_summary,
                 ", ".join(engine.speakers))
        serve(make_app(engine, cfg), cfg, watch=EngineWatch(lambda: engine.running, _stop_self))
        healthy = engine.running
    if not healthy:
        sys.exit(EXIT_ENGINE_DEAD)


def serve(app: web.Application, cfg: SpeechApiConfig, watch: EngineWatch) -> None:
    """Until SIGINT / SIGTERM; the watch sends this process SIGTERM when the engine thread dies."""
    watch.start()
    try:
        web.run_app(app, host=cfg.host, port=cfg.port, print=None, access_log=None,
                    keepalive_timeout=KEEPALIVE_TIMEOUT_S, handler_cancellation=HANDLER_CANCELLATION)
    finally:
        watch.stop()


def _stop_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)

if __name__ == "__main__":
    main()
