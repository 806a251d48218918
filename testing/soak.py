"""The soak: calls to the RUNNING system as a real client, and what each call and all of them
together saw (scripts/soak.py is its command line; scripts/bench_duplex.py makes calls the same way).

A call speaks its utterances in real time, each after the previous reply finished, and talks over
every Nth reply; it collects every "turn" trace record the agent sends, the client's own timings
and, after all calls hung up, the service's view of leaks and the services' memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from .soak_report import latency_summary, memory_growth, sample_memory, service_pids, trace_problems

if TYPE_CHECKING:  # the clients pull in the agent package (torch): imported when a soak runs, not for --help
    from .direct_client import DirectClient
    from .event_log import Said
    from .livekit_client import LiveKitClient
    from .utterances import Utterance

    SoakClient = DirectClient | LiveKitClient

ROOT = Path(__file__).resolve().parents[1]  # the repository: start_all.sh's run folder is run/ here

BARGE_IN_EVERY = 5  # default of --barge-in-every
BARGE_IN_AFTER_S = 0.8  # after the agent starts speaking


class Soak:
    """One call of N turns; collects what went wrong in `failures` instead of stopping at the first."""

    def __init__(self, client: SoakClient, utterances: list[Utterance], turn_timeout_s: float,
                 max_reply_s: float, seed: int, barge_in_every: int = BARGE_IN_EVERY) -> None:
        self.client = client
        self.utterances = utterances
        self.turn_timeout_s = turn_timeout_s
        self.max_reply_s = max_reply_s
        self.rng = random.Random(seed)
        self.failures: list[str] = []
        self.timeouts = 0
        self.barge_ins_attempted = 0
        self.barge_ins_missed = 0  # the reply ended before our barge-in: nothing to interrupt
        self.barge_in_every = barge_in_every
        self.client_v2v_ms: list[float] = []
        # our speech onset -> the last agent audio frame to arrive after it, for each barge-in that
        # talked over a speaking agent: the stop latency a person on this end hears
        self.client_barge_in_ms: list[float] = []
        self.said: list[tuple[int, bool, Said]] = []  # (turn, talked over the reply before it, what was said)

    @property
    def spoken(self) -> list[dict[str, Any]]:
        """What we said, on this client's monotonic clock (its microphone's capture clock): {"turn",
        "text", "barging", "onset", "speech_end", "sent_until"} - scripts/bench_duplex.py lines it up."""
        return [{"turn": turn, "text": said.utt.text, "barging": barging, "onset": said.onset,
                 "speech_end": said.speech_end, "sent_until": said.sent_until} for turn, barging, said in self.said]

    def turns(self) -> list[dict[str, Any]]:
        return [m.data for m in self.client.of_type("turn")]

    async def run(self) -> None:
        c = self.client
        if not await c.wait_for(lambda: c.agent_state() == "listening", self.turn_timeout_s):
            self._timeout("the session never reached 'listening' after connecting")
            return
        barging = False  # this utterance talks over the reply to the previous one
        for i, utt in enumerate(self.utterances, start=1):
            if barging:
                self.barge_ins_attempted += 1
                if c.agent_state() != "speaking":
                    self.barge_ins_missed += 1
            else:
                await asyncio.sleep(self.rng.uniform(0.4, 1.2))  # a person's pause between turns
            self._progress(i, utt, barging)
            mark = len(c.messages)
            said = c.say(utt)
            self.said.append((i, barging, said))
            talked_over = barging
            barging = i < len(self.utterances) and (i + 1) % self.barge_in_every == 0
            if barging:
                barging = await self._reply_started(i, said, mark)
                if barging:
                    self._client_v2v(said)
                    await asyncio.sleep(BARGE_IN_AFTER_S)
            elif await self._reply_finished(i, said):
                self._client_v2v(said)
            if talked_over:
                self._client_barge_in(said)

    async def _reply_started(self, i: int, said: Said, mark: int) -> bool:
        """Wait until the agent speaks its reply to utterance i: a "speaking" state that came after our
        speech ended (one that came while we spoke answered the first half of a split utterance)."""
        c = self.client
        utt = said.utt

        def speaking() -> bool:
            return c.agent_state() == "speaking" and any(
                m.at > said.speech_end and m.data.get("state") == "speaking" for m in c.of_type("agent_state", mark))

        def failed() -> bool:  # the turn ended in an error (a fault soak): there is no reply to talk over
            return len(self.turns()) >= i and self.turns()[-1].get("error") is not None

        if await c.wait_for(lambda: speaking() or failed(), utt.seconds + self.turn_timeout_s):
            return speaking()
        self._timeout(f"turn {i}: the agent never started speaking after {utt.text!r}")
        return False

    def _closed_since(self, said: Said) -> bool:
        """A turn record closed after our speech ended and was not superseded (answered or failed). Counting
        records is not enough: on loaded cores one utterance can reach the agent as two turns, and
        the extra record would let the next utterance start before this one's reply - which then
        supersedes it, and every later turn after it."""
        return any(m.at > said.speech_end and not m.data.get("superseded") for m in self.client.of_type("turn"))

    async def _reply_finished(self, i: int, said: Said) -> bool:
        """Wait until utterance i's turn is recorded and the agent listens again: the reply must start
        within the turn timeout, and may then go on up to --max-reply (the test voice speaks noise up
        to the engine's frame cap, minutes for a long reply: long, but not a failure)."""
        c = self.client
        utt = said.utt

        def finished() -> bool:
            return len(self.turns()) >= i and self._closed_since(said) and c.agent_state() == "listening"

        def answering() -> bool:
            return finished() or c.agent_state() == "speaking"

        where = f"turn {i} ({utt.text!r}, voice {utt.voice}, speed {utt.speed})"
        if not await c.wait_for(answering, utt.seconds + self.turn_timeout_s):
            self._timeout(f"{where}: no reply within {self.turn_timeout_s:.0f} s; agent state {c.agent_state()}")
            return False
        if await c.wait_for(finished, self.max_reply_s):
            return True
        self._timeout(f"{where}: the reply did not end within {self.max_reply_s:.0f} s; "
                      f"agent state {c.agent_state()}")
        return False

    def _progress(self, i: int, utt: Utterance, barging: bool) -> None:
        """One line per turn on stderr (a 100-turn soak runs for about an hour): what the last turn
        measured and what comes next."""
        records = self.turns()
        last = records[-1] if records else {}
        done = (f"last turn: v2v {last.get('voice_to_voice_ms')} ms"
                f"{', interrupted' if last.get('interrupted') else ''}"
                f"{', ERROR ' + str(last.get('error')) if last.get('error') is not None else ''}; ") if last else ""
        print(f"[soak] {time.strftime('%H:%M:%S')} turn {i}/{len(self.utterances)}{' (barge-in)' if barging else ''}: "
              f"{done}{len(self.failures)} failure(s) so far; saying {utt.text!r} ({utt.voice}, {utt.speed} wpm)",
              file=sys.stderr, flush=True)

    def _client_v2v(self, said: Said) -> None:
        """Our true end of speech -> the first agent audio that arrived after our last frame left."""
        first = next((t for t in self.client.voiced_at if t > said.sent_until), None)
        if first is not None:
            self.client_v2v_ms.append(round((first - said.speech_end) * 1000, 1))

    def _client_barge_in(self, said: Said) -> None:
        """Agent audio arriving between our onset and our end is the cut reply still playing (its
        next reply cannot start before we stop): the last such frame is when it went silent here."""
        heard = [t for t in self.client.voiced_at if said.onset < t <= said.sent_until]
        if heard:
            self.client_barge_in_ms.append(round((heard[-1] - said.onset) * 1000, 1))

    def _timeout(self, message: str) -> None:
        self.timeouts += 1
        self.failures.append(f"timeout: {message}")


async def get_token(http: aiohttp.ClientSession, base: str, identity: str) -> dict[str, Any]:
    try:
        async with http.post(f"{base}/api/token", json={"identity": identity}) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise SystemExit(f"soak: the token server at {base} answered HTTP {resp.status}: {body[:300]}")
            return json.loads(body)
    except aiohttp.ClientError as exc:
        raise SystemExit(f"soak: cannot reach the token server at {base} ({exc}); start the system with "
                         "`scripts/start_all.sh start` or pass --base") from None


def make_client(mode: str | None, metrics_url: str | None) -> SoakClient:
    """The client for the mode the token server says the system runs in."""
    if mode == "direct":
        from .direct_client import DirectClient
        return DirectClient()
    if mode == "livekit":
        from .livekit_client import LiveKitClient
        if not metrics_url:
            raise SystemExit("soak: LiveKit mode needs the worker's /metrics for its leak check: start the system "
                             "with scripts/start_all.sh (it records the URL) or pass --metrics-url (http://HOST:AGENT_HEALTH_PORT/metrics)")
        return LiveKitClient(metrics_url)
    raise SystemExit(f"soak: the token server reports an unknown mode {mode!r} (expected direct or livekit)")


async def call(http: aiohttp.ClientSession, client: SoakClient, grant: dict[str, Any], run: Soak,
               connecting: asyncio.Lock) -> None:
    """One session from connect to hang-up; what goes wrong lands in `run.failures`. Connects one
    at a time (livekit's rtc FFI can panic on concurrent room connects in one process)."""
    try:
        async with connecting:
            await client.open(http, grant)
        await run.run()
        await asyncio.sleep(0.5)  # the last turn's trailing events
    except RuntimeError as exc:
        run.failures.append(str(exc))
    finally:
        await client.close(http)


async def run_soak(args: argparse.Namespace) -> dict[str, Any]:
    """Every call of a soak (the options of scripts/soak.py), then the report of them all."""
    from .utterances import make_utterances

    run_dir = Path(args.run_dir)
    pids = service_pids(run_dir)
    with tempfile.TemporaryDirectory(prefix="soak-speech-") as tmp:
        utterances = make_utterances(args.turns, Path(tmp))
    # no keep-alive: a lingering server-side connection is not what the leak check is about
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:
        base = args.base.rstrip("/")
        grants = [await get_token(http, base, f"soak-{os.getpid()}-{k}") for k in range(args.sessions)]
        clients = [make_client(grant.get("mode"), args.metrics_url) for grant in grants]
        # the same utterances in every session, each with its own pauses: they overlap differently
        runs = [Soak(client, utterances, args.turn_timeout, args.max_reply, args.seed + k, args.barge_in_every)
                for k, client in enumerate(clients)]
        mem_start = sample_memory(pids)
        started = time.monotonic()
        connecting = asyncio.Lock()
        await asyncio.gather(*(call(http, c, g, r, connecting) for c, g, r in zip(clients, grants, runs, strict=True)))
        duration = time.monotonic() - started
        leaks = await clients[0].leak_check(http, args.leak_timeout)  # the service's view: every session
    mem_end = sample_memory(pids)
    sessions = [session_report(args, run, client) for run, client in zip(runs, clients, strict=True)]
    return build_report(args, grants[0]["mode"], sessions, leaks, mem_start, mem_end, duration)


def session_report(args: argparse.Namespace, run: Soak, client: SoakClient) -> dict[str, Any]:
    """What one session saw: its turns, errors, trace problems and barge-ins."""
    records = run.turns()
    session_id = client.session_id()
    failures = list(run.failures)
    error_events = [m.data.get("message") for m in client.of_type("error")]
    failed_turns = [r for r in records if r.get("error") is not None]
    # --max-failed-turns: a fault soak injects failures; those turns may fail, every other must not
    tolerated = len(failed_turns) <= args.max_failed_turns
    if not tolerated:
        failures += [f"error event: {msg}" for msg in error_events]
        failures += [f"turn {r.get('turn_id')} failed: {r.get('error')}" for r in failed_turns]
    problems = [p for r in records for p in trace_problems(r, session_id)]
    failures += problems
    # a superseded turn's words went into the next turn, whose reply answered them: not a turn of its own
    completed = sum(1 for r in records if r.get("error") is None and not r.get("superseded"))
    if completed < args.turns - (len(failed_turns) if tolerated else 0):
        failures.append(f"only {completed} of {args.turns} turns completed")
    interrupted = sum(1 for r in records if r.get("interrupted"))
    expected_cuts = run.barge_ins_attempted - run.barge_ins_missed
    if interrupted < expected_cuts:
        failures.append(f"{expected_cuts} barge-in(s) talked over a speaking agent but only {interrupted} "
                        "turn(s) were interrupted")
    return {
        "session_id": session_id,
        # the agent's own word on its voice (the page shows a warning banner when true)
        "test_voice": next((m.data.get("test_voice") for m in client.of_type("session")), None),
        "turns_completed": completed, "turn_records": len(records),
        "errors": len(error_events) + len(failed_turns) + run.timeouts,
        "failed_turns": len(failed_turns), "error_events": error_events, "timeouts": run.timeouts,
        "traces_complete": not problems and len(records) >= args.turns, "trace_problems": problems,
        "barge_ins": {"attempted": run.barge_ins_attempted, "missed_reply_already_over": run.barge_ins_missed,
                      "interrupted_turns": interrupted},
        "client_v2v_ms": run.client_v2v_ms, "client_barge_in_ms": run.client_barge_in_ms,
        "utterances": [{"text": u.text, "voice": u.voice, "speed": u.speed, "seconds": round(u.seconds, 2)}
                       for u in run.utterances],
        "turns": records, "failures": failures, "passed": not failures,
    }


def build_report(args: argparse.Namespace, mode: str, sessions: list[dict[str, Any]], leaks: dict[str, Any],
                 mem_start: dict[str, Any], mem_end: dict[str, Any], duration: float) -> dict[str, Any]:
    """Every session's numbers summed (turns and latency over all of them), the service-wide leak and
    memory checks, and each session's own report under `sessions`."""
    many = len(sessions) > 1
    failures = [f"session {k + 1}: {f}" if many else f for k, s in enumerate(sessions) for f in s["failures"]]
    failures += leaks["problems"]
    growth, mem_failures = memory_growth(mem_start, mem_end, args.max_growth_mb)
    failures += mem_failures
    records = [r for s in sessions for r in s["turns"]]
    return {
        "mode": mode, "sessions_requested": args.sessions, "session_id": sessions[0]["session_id"],
        "session_ids": [s["session_id"] for s in sessions], "turns_requested": args.turns * args.sessions,
        "test_voice": sessions[0]["test_voice"],
        "turns_completed": sum(s["turns_completed"] for s in sessions),
        "turn_records": len(records), "errors": sum(s["errors"] for s in sessions),
        "failed_turns": sum(s["failed_turns"] for s in sessions),
        "error_events": [e for s in sessions for e in s["error_events"]],
        "timeouts": sum(s["timeouts"] for s in sessions),
        "traces_complete": all(s["traces_complete"] for s in sessions),
        "trace_problems": [p for s in sessions for p in s["trace_problems"]],
        "barge_ins": {key: sum(s["barge_ins"][key] for s in sessions) for key in sessions[0]["barge_ins"]},
        "latency": latency_summary(records, [v for s in sessions for v in s["client_v2v_ms"]],
                                   [v for s in sessions for v in s["client_barge_in_ms"]]),
        "memory": growth, "leaks": leaks, "duration_s": round(duration, 1),
        "utterances": sessions[0]["utterances"], "turns": records, "failures": failures, "passed": not failures,
        "sessions": [{k: v for k, v in s.items() if k not in ("turns", "utterances")} for s in sessions],
    }


def add_call_args(ap: argparse.ArgumentParser) -> None:
    """The options of one call against the running system (shared with scripts/bench_duplex.py)."""
    ap.add_argument("--run-dir", default=os.environ.get("RUN_DIR") or str(ROOT / "run"),
                    help="start_all.sh's run folder, for the services' pid files (default $RUN_DIR or run/)")
    ap.add_argument("--base", help="the token server (default: the page URL start_all.sh recorded in the run "
                    "folder, else http://127.0.0.1:$TOKEN_SERVER_PORT or :8080)")
    ap.add_argument("--metrics-url", help="LiveKit mode: the worker's Prometheus /metrics, for the leak check "
                    "(default: what start_all.sh recorded in the run folder)")
    ap.add_argument("--turn-timeout", type=float, default=60.0,
                    help="seconds for a reply to start after the utterance (default 60)")
    ap.add_argument("--max-reply", type=float, default=300.0,
                    help="seconds a reply may last (default 300: above the engine's 240 s frame cap)")
    ap.add_argument("--seed", type=int, default=0, help="pauses between turns are random with this seed")
