"""`python -m agent.launch plan|omni-plan|omni-split --run-dir DIR`: start_all.sh's planner (see __init__)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import Console, GivenFacts, LaunchError, OmniOnGpu, Planner, SystemProbes, read_chosen
from .plan import start_settings
from .probes import Probes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.launch", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, text in (("plan", "start's choices and fail-fast checks; writes RUN_DIR/chosen.env"),
                       ("omni-plan", "how start would split the GPU with vLLM-Omni, and its command; starts nothing"),
                       ("omni-split", "the split with the TTS engine's share measured; writes RUN_DIR/omni-deploy.yaml")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--run-dir", type=Path, required=True)
        p.add_argument("--facts", type=Path, help="a JSON object of GivenFacts fields: decide from them, probe nothing")
        if name == "omni-split":
            p.add_argument("--tts-measured-from", type=int, required=True, metavar="MIB",
                           help="free GPU memory before the TTS engine loaded")
    a = ap.parse_args(argv)
    console = Console(sys.stdout, sys.stderr)
    probes: Probes = GivenFacts(**json.loads(a.facts.read_text())) if a.facts else SystemProbes(console.detail)
    try:
        if a.cmd == "plan":
            planner = Planner(os.environ, probes, console, a.run_dir, previous=read_chosen(a.run_dir / "chosen.env"))
            planner.start().write(a.run_dir)
        else:
            omni = OmniOnGpu(dict(os.environ), start_settings(os.environ), probes, console, a.run_dir)
            if a.cmd == "omni-plan":
                omni.plan_only()
            else:
                omni.split_measured(a.tts_measured_from)
    except LaunchError as failure:
        console.error(failure)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
