"""`python -m token_server [--host H] [--port P]`: settings from the environment (see config.py).

Exit code 2 when the configuration is missing or invalid (e.g. no LIVEKIT_API_KEY/SECRET)."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from aiohttp import web

from .app import make_app
from .config import TokenServerConfig
from .http_guard import KEEPALIVE_TIMEOUT_S

logger = logging.getLogger("token_server")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m token_server", description=__doc__)
    parser.add_argument("--host", help=f"bind address (default: TOKEN_SERVER_HOST or {TokenServerConfig.host})")
    parser.add_argument("--port", type=int, help=f"port (default: TOKEN_SERVER_PORT or {TokenServerConfig.port})")
    parser.add_argument("--allow-dev-keys", action="store_true",
                        help="direct mode without LIVEKIT_API_KEY/SECRET: use a random key pair for this "
                             "process only (to try the page; an agent cannot verify these tokens)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        cfg = TokenServerConfig.from_env(allow_dev_keys=args.allow_dev_keys)
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        cfg = dataclasses.replace(cfg, **overrides)
    except ValueError as exc:
        parser.exit(2, f"token_server: configuration error: {exc}\n")

    logger.info("mode=%s: the page will connect to %s", cfg.mode, cfg.client_url)
    logger.info("serving http://%s:%d (page from %s, tokens valid %d s)", cfg.host, cfg.port, cfg.web_dir,
                cfg.token_ttl_s)
    web.run_app(make_app(cfg), host=cfg.host, port=cfg.port, print=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)


if __name__ == "__main__":
    main()
