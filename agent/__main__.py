"""`python -m agent start|dev|connect ...`: the LiveKit worker (LIVEKIT_URL/API_KEY/API_SECRET,
OMNI_BASE_URL, the TTS_* and AGENT_* variables configure it; see the README).

Order for the commands that take jobs: the health server comes up (503 "loading"), the engine and
Silero load, the speech API starts on that engine when SPEECH_API_ENABLED=1 (its own port), then
livekit's CLI runs the worker, which registers; /healthz turns 200 after that."""

from __future__ import annotations

import logging
import os
import sys

from livekit.agents import cli

from speech_api import SpeechApiConfig, serve_beside

from .config import AgentConfig, WorkerConfig, engine_config_from_env
from .observe.engine_watch import EXIT_ENGINE_DEAD, EngineWatch
from .plugins.omni_config import OmniConfig
from .resources import SharedResources
from .transport.worker import WorkerState, make_server
from .transport.worker_health import WorkerHealthServer

JOB_COMMANDS = ("start", "dev", "connect")  # the CLI commands that run a worker which takes jobs


def main() -> None:
    wants_help = len(sys.argv) < 2 or any(a in ("-h", "--help") for a in sys.argv[1:])
    try:
        agent_cfg, engine_cfg, worker_cfg = AgentConfig.from_env(), engine_config_from_env(), WorkerConfig.from_env()
        speech_cfg = SpeechApiConfig.for_agent()
    except ValueError as exc:
        if not wants_help:
            sys.exit(f"agent: configuration error: {exc}")
        # help needs no configuration: show it with placeholders that are never used
        agent_cfg = AgentConfig(omni=OmniConfig(base_url="http://unset.invalid/v1"))
        engine_cfg = engine_config_from_env({"TTS_RANDOM_WEIGHTS": "0.6b"})
        worker_cfg = WorkerConfig()
        speech_cfg = None
    state = WorkerState(SharedResources(agent_cfg, engine_cfg), worker_cfg)
    server = make_server(state)
    if not wants_help and sys.argv[1] in JOB_COMMANDS:
        if not worker_cfg.livekit_url:
            sys.exit("agent: configuration error: LIVEKIT_URL is not set: the worker registers with a LiveKit "
                     "server (e.g. ws://127.0.0.1:7880); for no LiveKit server use direct mode (python -m agent.direct)")
        # livekit's CLI sets up logging only inside run_app: until then (the model load) log plainly
        root = logging.getLogger()
        loading_log = logging.StreamHandler(sys.stdout)
        loading_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(loading_log)
        root.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
        health = WorkerHealthServer(lambda reachable: state.status(livekit_reachable=reachable,
                                                                   draining=server.draining),
                                    state.metrics.exposition, worker_cfg.livekit_url,
                                    worker_cfg.host, worker_cfg.health_port)
        try:
            health.start()
        except OSError as exc:
            sys.exit(f"agent: cannot serve health on {worker_cfg.host}:{worker_cfg.health_port} ({exc}): "
                     "stop what holds the port or set AGENT_HEALTH_PORT")
        try:
            state.resources.load_all()  # before registering: a job must never wait for a model
        finally:
            root.removeHandler(loading_log)
        # a dead engine: the worker already reports itself full; leave at once for the supervisor
        # (draining would keep voiceless sessions open until their users hang up)
        EngineWatch(lambda: state.resources.ready, _exit_engine_dead).start()
        if speech_cfg is not None:  # a daemon thread: it ends with the process, as the jobs do
            try:
                serve_beside(state.resources.engine, speech_cfg)
            except OSError as exc:
                sys.exit(f"agent: cannot serve the speech API on {speech_cfg.host}:{speech_cfg.port} ({exc}): "
                         "stop what holds the port or set SPEECH_API_PORT")
    cli.run_app(server)


def _exit_engine_dead() -> None:
    logging.shutdown()
    os._exit(EXIT_ENGINE_DEAD)


if __name__ == "__main__":
    main()
