#!/usr/bin/env python3
"""Barge-in and voice-to-voice as the listener hears them: every stage, on one clock.

    scripts/start_all.sh start      # any mode; AGENT_TRANSPORT=direct or livekit to choose
    .venv/bin/python scripts/bench_duplex.py --barge-ins 20 --json bench_duplex.json [--png bench_duplex.png]

Drives the RUNNING system as a user with the soak's client (an aiortc peer in direct mode, a LiveKit
room participant in LiveKit mode): it speaks 2N+1 espeak-ng utterances in real time and talks over
every other reply 0.8 s after the agent starts it (N barge-ins, 2N+1 turns). The client runs on the
agent's host, so both read the same monotonic clock: the agent's stamps (each trace record's
"clock") and the client's own (when it spoke, when each agent audio frame arrived) are one timeline.

Per barge-in, ms after our speech onset (the first loud sample we sent):
  agent_onset      where the agent places the onset (its VAD's START_OF_SPEECH, backdated)
  paused           the agent's output was silenced (the first hot VAD window: the early pause)
  vad_detected     the VAD's START_OF_SPEECH reached the duplex controller
  cut              the cut was issued (output cleared, engine streams and LLM cancelled)
  agent_silent     the agent's last audio left it (end of the frame in flight)
  played_silent    (--browser) the cut reply's last packet left the page's jitter buffer for playout
  heard_silent     the last agent audio frame arrived here: the stop latency a person hears
Per turn, ms after our true end of speech (the last loud sample we sent):
  agent_end        where the agent places the end (END_OF_SPEECH, backdated by the silence waited)
  end_of_speech    the VAD's END_OF_SPEECH (its silence wait ends)
  stt_done         the transcript is in
  committed        the turn is committed and the LLM asked (after livekit's end-of-turn delay and,
                   with AGENT_END_OF_TURN=smart_turn, the turn model's verdict)
  llm_first_token, tts_first_audio, published (first frame handed to the transport)
  played           (--browser) its first packet left the page's jitter buffer for playout
  heard            the first agent audio frame of the reply arrived here: voice-to-voice as heard
and per turn: endpointing_wait (end_of_speech + committed - stt_done: deciding the turn was over),
model_time (STT + LLM first token + TTS first audio, from the trace) and what the listener waited
beyond both (heard - endpointing_wait - model_time: queues, transports, the wire).
With --calls K the barge-ins are spread over K calls made one after another, and every stage is
pooled over all of them; the report also gives each call's wait from the first frame published to the
reply at the listener. That wait is set largely when a call connects (the phases of the room source's
10 ms tick, the 20 ms Opus packets and the receiver's jitter buffer and 10 ms pull), so one call is one
sample of it: several calls give the fairer p95.
Writes p50/p95/max of each (JSON) and a plot of every event's timeline (PNG); the calls and the
analysis are testing/duplex_bench.py's, the plot testing/plots.py's. Loopback only: the
clocks are one only on one host. Numbers cover the network stack and the client's receive path
(aiortc / the LiveKit SDK), not a loudspeaker. With --browser the page in real Chromium is the user
(testing/browser_call.py): its own microphone and its WebAudio graph after Chromium's jitter buffer
are the two timelines, each utterance at a planned moment instead of in reaction to the agent; and
each agent packet as Chromium hands it to playout (played, played_silent), told voiced by its RTP
audio-level header in direct mode. In LiveKit mode the SFU drops the header: the page, opened with
?measure=playout, reads payload sizes through a pass-through encoded transform, which tell where each
reply starts (played) but not where a cut reply stops (played_silent is left unmeasured there).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from testing.duplex_bench import run_bench, summary
from testing.plots import duplex_timeline
from testing.soak import add_call_args
from testing.soak_report import fill_endpoints, write_report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--barge-ins", type=int, default=20, help="barge-ins to make (2N+1 turns; default 20)")
    ap.add_argument("--calls", type=int, default=1,
                    help="spread the barge-ins over this many calls, one after another, and pool them (default 1)")
    ap.add_argument("--json", metavar="OUT", required=True, help="write the JSON report here")
    ap.add_argument("--png", metavar="OUT", help="timeline plot (default: the JSON path with .png)")
    ap.add_argument("--browser", action="store_true",
                    help="speak through the page in real Chromium (Debian's chromium) instead of the soak's client")
    add_call_args(ap)
    args = ap.parse_args(argv)
    if args.barge_ins < 1:
        ap.error("--barge-ins must be >= 1")
    if not 1 <= args.calls <= args.barge_ins:
        ap.error("--calls must be between 1 and --barge-ins (every call makes at least one barge-in)")
    fill_endpoints(args)
    report = asyncio.run(run_bench(args))
    title = f"bench_duplex, {report['mode']} mode, {report['client']}"
    where = write_report(report, args.json, args.png, lambda png: duplex_timeline(report, png, title))
    print(summary(report, f"{report['mode']} mode, client {report['client']}") + where)
    return 0 if not report["failures"] and report["barge_ins_counted"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
