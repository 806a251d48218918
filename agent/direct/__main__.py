"""`python -m agent.direct`: the direct-mode agent (WebRTC signalling over HTTP, no LiveKit server).

Configuration comes from the environment: OMNI_* / TTS_* / AGENT_* as for the LiveKit worker, plus
DIRECT_* and LIVEKIT_API_KEY / LIVEKIT_API_SECRET (the token server's pair); see README.md here.
The engine and Silero load before the server listens, so /healthz answers once it can serve.
SPEECH_API_ENABLED=1 also serves the speech API (speech_api/) on the same engine, on its own port.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from aiohttp import web

from speech_api import SpeechApiConfig, serve_beside
from token_server.http_guard import KEEPALIVE_TIMEOUT_S

from ..config import AgentConfig, engine_config_from_env
from ..observe.engine_watch import EXIT_ENGINE_DEAD, EngineWatch
from ..resources import SharedResources
from .config import DirectServerConfig
from .server import make_app


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = DirectServerConfig.from_env()
        agent_cfg, engine_cfg = AgentConfig.from_env(), engine_config_from_env()
        speech_cfg = SpeechApiConfig.for_agent()
    except ValueError as exc:
        sys.exit(f"agent.direct: configuration error: {exc}")
    resources = SharedResources(agent_cfg, engine_cfg)  # one engine and one VAD for every peer
    engine, vad, turn_model = resources.engine, resources.vad, resources.turn_model
    # a dead engine: stop serving (peers get their "bye"), then exit non-zero for the supervisor
    watch = EngineWatch(lambda: engine.running, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    speech = None
    try:
        if speech_cfg is not None:
            try:
                speech = serve_beside(engine, speech_cfg)
            except OSError as exc:
                sys.exit(f"agent.direct: cannot serve the speech API on {speech_cfg.host}:{speech_cfg.port} "
                         f"({exc}): stop what holds the port or set SPEECH_API_PORT")
        app = make_app(cfg, agent_cfg, engine, vad, turn_model)
        print(f"direct mode: offers to http://{cfg.host}:{cfg.port}/api/offer "
              f"(ICE on {', '.join(cfg.ice_host_addresses)}; pages from {', '.join(cfg.allowed_origins)})",
              flush=True)
        web.run_app(app, host=cfg.host, port=cfg.port, print=None, access_log=None,
                    keepalive_timeout=KEEPALIVE_TIMEOUT_S)
    finally:
        watch.stop()
        if speech is not None:
            speech.close()  # its streams are cut before the engine goes
        dead = not engine.running
        resources.close()
    if dead:
        sys.exit(EXIT_ENGINE_DEAD)


if __name__ == "__main__":
    main()
