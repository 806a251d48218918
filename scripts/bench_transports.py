#!/usr/bin/env python3
"""Direct WebRTC vs LiveKit, side by side in one run, measured where the person is.

    .venv/bin/python scripts/bench_transports.py --turns 20 --json bench_transports.json

For each transport it brings the whole system up with scripts/start_all.sh (AGENT_TRANSPORT=direct,
then livekit: the project's own LiveKit server), on free ports and a run folder of its own, and
talks to it with scripts/soak.py: the soak's client (an aiortc peer, or a LiveKit room participant)
speaks espeak-ng utterances in real time and barges in on every other reply (--barge-in-every 2).
Both transports get the same work: the same utterances, the same STT + LLM (the fake vLLM-Omni,
testing/fake_omni.py, which answers at once, unless --omni-url names a real one) and the same tiny
TTS engine.

Per transport it reports p50/p95 of:
  client voice-to-voice   end of our utterance -> first agent audio frame arriving at the client
                          (includes the VAD's end-of-speech wait, STT, LLM, TTS, both jitter buffers);
  client barge-in         onset of our barging speech -> the last frame of the cut reply arriving;
  trace cancel->silence   the agent's own figure: cut decided -> its output silent (traces);
  trace voice-to-voice    the agent's own figure: VAD end of speech -> first frame handed over.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testing.ports import free_port, free_port_block

ROOT = Path(__file__).resolve().parents[1]
MODES = ("direct", "livekit")
ROWS = (("client voice-to-voice", "client_voice_to_voice_ms"),
        ("client barge-in -> silence", "client_barge_in_to_silence_ms"),
        ("trace cancel -> silence", "cancel_to_silence_ms"),
        ("trace voice-to-voice", "voice_to_voice_ms"))


def run_mode(mode: str, omni_url: str, args: argparse.Namespace, work: Path, keep: Path) -> dict[str, Any]:
    run_dir = work / f"run-{mode}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "AGENT_", "DIRECT_", "TOKEN_SERVER_"))}
    env |= {"AGENT_TRANSPORT": mode, "RUN_DIR": str(run_dir), "OMNI_BASE_URL": omni_url,
            "TOKEN_SERVER_PORT": str(free_port()), "DIRECT_PORT": str(free_port()),
            "AGENT_HEALTH_PORT": str(free_port()), "LIVEKIT_PORT": str(free_port_block(3)),
            "AGENT_TRACES_DIR": str(keep / f"traces-{mode}"), "HF_HUB_OFFLINE": "1"}
    start_all = ["bash", str(ROOT / "scripts" / "start_all.sh")]
    print(f"[bench_transports] {mode}: starting the system (scripts/start_all.sh start)", file=sys.stderr, flush=True)
    started = subprocess.run([*start_all, "start"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        raise SystemExit(f"bench_transports: start_all failed in {mode} mode:\n{started.stdout}{started.stderr}")
    try:
        report_path = keep / f"soak-{mode}.json"  # kept: every turn's trace record, for a second look
        print(f"[bench_transports] {mode}: soak of {args.turns} turns", file=sys.stderr, flush=True)
        soak = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), "--turns", str(args.turns),
                               "--barge-in-every", str(args.barge_in_every), "--json", str(report_path),
                               "--run-dir", str(run_dir)], env=env, cwd=ROOT, text=True, timeout=3600,
                              stdout=subprocess.PIPE)
        print(soak.stdout, file=sys.stderr)
        report = json.loads(report_path.read_text())
    finally:
        subprocess.run([*start_all, "stop"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    return {"passed": report["passed"], "failures": report["failures"], "stages": report["latency"]["stages"],
            "turns": report["turns_completed"], "barge_ins": report["barge_ins"]}


def fmt(stats: dict[str, Any] | None) -> str:
    if not stats or stats.get("n", 0) == 0:
        return "-"
    return f"{stats['p50']:.0f} / {stats['p95']:.0f} (n={stats['n']})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=20, help="utterances per transport (default 20)")
    ap.add_argument("--barge-in-every", type=int, default=2, help="talk over every Nth reply (default 2)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, default direct,livekit")
    ap.add_argument("--omni-url", help="a real Omni endpoint instead of the fake one (both modes use it)")
    ap.add_argument("--json", metavar="OUT", required=True)
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        ap.error(f"--modes takes {', '.join(MODES)}")

    results: dict[str, Any] = {}
    keep = Path(args.json).resolve().parent / (Path(args.json).stem + "-soaks")
    keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-transports-") as tmp:
        work = Path(tmp)
        if args.omni_url:
            for mode in modes:
                results[mode] = run_mode(mode, args.omni_url, args, work, keep)
        else:
            from testing.fake_omni import FakeOmni, FakeOmniThread
            from testing.utterances import SENTENCES

            sentences = itertools.cycle(SENTENCES)
            fake = FakeOmni(transcripts=lambda _wav: next(sentences), reply=lambda _m: "Sure thing, here it is.")
            with FakeOmniThread(fake) as omni:
                for mode in modes:
                    results[mode] = run_mode(mode, omni.url, args, work, keep)

    out = {"date": time.strftime("%Y-%m-%d"), "turns": args.turns, "barge_in_every": args.barge_in_every,
           "omni": args.omni_url or "fake", "results": results}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"{'ms, p50 / p95':<30}" + "".join(f"{m:>26}" for m in modes))
    for label, key in ROWS:
        print(f"{label:<30}" + "".join(f"{fmt(results[m]['stages'].get(key)):>26}" for m in modes))
    for mode in modes:
        if not results[mode]["passed"]:
            print(f"{mode}: soak FAILED: {results[mode]['failures']}")
    print(f"report: {args.json} (each transport's soak report and plot in {keep})")
    return 0 if all(results[m]["passed"] for m in modes) else 1


if __name__ == "__main__":
    sys.exit(main())
