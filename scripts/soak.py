#!/usr/bin/env python3
"""Soak test: talk to the RUNNING system as a real client and check that it holds up.

    .venv/bin/python scripts/soak.py --turns 10 --json soak.json [--png soak.png] [--base http://127.0.0.1:8080]
                                     [--sessions 4]

Gets a token from the token server and, in direct mode, connects to the agent's offer URL as an
aiortc WebRTC client (testing/direct_client.py) with the "agent-events" data channel (what the page does). It speaks N
utterances (espeak-ng, several voices and speeds, made up front) as its microphone in real time,
each after the previous reply finished, and barges in on every 5th turn (starts speaking ~0.8 s
after the agent started its reply). It collects every "turn" trace record and checks:
  - every utterance became a completed turn; 0 errors (error events, turns with an error, timeouts);
  - every turn's trace has all required keys and non-negative durations;
  - after hanging up, the agent's /healthz shows 0 peers and 0 active engine streams (no leak);
  - no service started by scripts/start_all.sh (pid files in RUN_DIR, default run/) died or grew
    its memory (RSS, and GPU memory with nvidia-smi) by more than --max-growth-mb.
Writes a JSON report (--json) and a latency plot (--png, default: next to the JSON), prints a
summary; exit 0 only when every check passed. With --sessions N, N such calls run at once (each
its own token, room and client); the checks hold for each, the leak check once all have hung up.
With --max-failed-turns K (a soak against a server injecting faults), up to K turns per session
may end in an error; every other turn must still complete and no session may be lost.

LiveKit mode (the token server says which): the client is a LiveKit participant in the room instead
(testing/livekit_client.py), and the leak check reads the worker's /metrics (0 active sessions,
0 engine streams) instead of the direct agent's /healthz.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from testing.plots import trace_plot
from testing.soak import BARGE_IN_EVERY, add_call_args, run_soak
from testing.soak_report import fill_endpoints, format_summary, write_report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=10, help="utterances to speak (default 10)")
    ap.add_argument("--json", metavar="OUT", required=True, help="write the JSON report here")
    ap.add_argument("--png", metavar="OUT", help="latency plot (default: the JSON path with .png)")
    add_call_args(ap)
    ap.add_argument("--leak-timeout", type=float, default=15.0, help="seconds for the agent to drop the call")
    ap.add_argument("--max-growth-mb", type=float, default=300.0, help="allowed memory growth per service")
    ap.add_argument("--max-failed-turns", type=int, default=0,
                    help="turns per session that may end in an error (a soak with injected faults; default 0)")
    ap.add_argument("--sessions", type=int, default=1,
                    help="concurrent calls, each its own client, token and room, all speaking at once (default 1)")
    ap.add_argument("--barge-in-every", type=int, default=BARGE_IN_EVERY,
                    help=f"talk over every Nth reply (default {BARGE_IN_EVERY}; 2 = every other turn)")
    args = ap.parse_args(argv)
    if args.turns < 1:
        ap.error("--turns must be >= 1")
    if args.sessions < 1:
        ap.error("--sessions must be >= 1")
    if args.barge_in_every < 2:
        ap.error("--barge-in-every must be >= 2 (a barge-in talks over the reply to the turn before)")
    fill_endpoints(args)
    report = asyncio.run(run_soak(args))
    where = write_report(report, args.json, args.png, lambda png: trace_plot(report["turns"], png))
    print(format_summary(report) + where)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
