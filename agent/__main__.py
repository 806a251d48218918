"""`python -m agent start|dev|connect ...`: the LiveKit worker (LIVEKIT_URL/API_KEY/API_SECRET,
OMNI_BASE_URL and the TTS_* variables configure it; see the README)."""

from __future__ import annotations

import os
import sys

from livekit.agents import cli

from .config import AgentConfig, engine_config_from_env
from .omni_config import OmniConfig
from .worker import SharedResources, make_server


def main() -> None:
    wants_help = len(sys.argv) < 2 or any(a in ("-h", "--help") for a in sys.argv[1:])
    try:
        agent_cfg, engine_cfg = AgentConfig.from_env(), engine_config_from_env()
    except ValueError as exc:
        if not wants_help:
            sys.exit(f"agent: configuration error: {exc}")
        # help needs no configuration: show it with placeholders that are never used
        agent_cfg = AgentConfig(omni=OmniConfig(base_url="http://unset.invalid/v1"))
        engine_cfg = engine_config_from_env({"TTS_RANDOM_WEIGHTS": "0.6b"})
    try:
        metrics_port = _port("AGENT_METRICS_PORT")
        health_port = _port("AGENT_HEALTH_PORT")
    except ValueError as exc:
        sys.exit(f"agent: configuration error: {exc}")
    server = make_server(SharedResources(agent_cfg, engine_cfg), agent_name=os.environ.get("AGENT_NAME", ""),
                         metrics_port=metrics_port, health_port=health_port)
    cli.run_app(server)


def _port(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{name}={raw!r} is not a port number (1..65535)")
    return int(raw)


if __name__ == "__main__":
    main()
