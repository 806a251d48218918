"""scripts/bench_duplex.py --browser: the same conversation, spoken by the page in real Chromium.

Chromium's fake microphone plays one WAV made up front - each utterance at a planned moment, every
other one talking over the reply to the one before - through the page's own getUserMedia (echo
cancellation, noise suppression and gain control on, as for a person). The page records, every
~5 ms on the host's wall clock, the level of its microphone and of the agent's audio as its WebAudio
graph receives it (after Chromium's jitter buffer and its audio rendering), and each agent packet
as the receiver hands it to playout, with its RTP audio-level header where the packets carry it
(direct mode) or its payload size (LiveKit mode, whose SFU drops the header; the page opened with
?measure=playout reads sizes through a pass-through encoded transform): `window.S.levels` (web/app.js).
Here those timelines become what was said (speech onsets and ends) and when the agent was audible
(heard: WebAudio; played: playout), on the host's monotonic clock, next to the trace records the page
received: bench_duplex's analysis takes it from there. What a loudspeaker and an ear add is not in it.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from .event_log import VOICED_RMS
from .utterances import RATE, Utterance

LEAD_S = 2.0  # silence before the first utterance (the call connects while the fake mic already plays)
BARGE_AFTER_S = 1.8  # after an utterance whose reply is talked over: its end -> the barge-in's onset
# after a barge-in, long enough for the reply to it to play out (the tiny test voice speaks until its
# frame cap, a few seconds for a short reply) before the next turn
NEXT_TURN_AFTER_S = 10.0
TAIL_S = 10.0
MIC_GAP_S = 0.3  # quieter stretches inside one utterance (between words) are shorter than this
# Told by size (LiveKit mode): while the agent is silent its Opus encoder is in DTX, a 2-byte frame with
# a 56-byte refresh every 400 ms; a reply is a run of packets of 60 bytes and more (docs/benchmarks.md,
# "Playout stamps in LiveKit mode"). After a reply the encoder sends silence at full size for ~160 ms
# before DTX, so size tells where a reply starts, not where it stops.
FULL_PACKET_BYTES = 20
RUN_PACKETS = 3  # a reply's start: this many full-size packets in a row
RUN_GAP_S = 0.03  # packets of one run go to playout 20 ms apart
# A refresh comes 400 ms after the DTX frame before it; a reply that follows a refresh at once would
# otherwise start a run 20 ms before its own first packet (one that falls there by chance starts 20 ms late)
DTX_REFRESH_S, DTX_REFRESH_TOLERANCE_S = 0.4, 0.01
CHROMIUM_FLAGS = ("--disable-gpu", "--disable-quic", "--disable-sync", "--use-fake-ui-for-media-stream",
                  "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
                  "--allow-loopback-in-peer-connection")


def microphone_wav(utterances: list[Utterance], path: Path) -> tuple[Path, float]:
    """The fake microphone's track: utterance k talks over the reply to k-1 when k is even (1-based),
    as scripts/soak.py --barge-in-every 2 does. Returns the WAV and its length in seconds."""
    pieces = [np.zeros(int(LEAD_S * RATE), np.int16)]
    for k, utt in enumerate(utterances, start=1):
        pieces.append(utt.pcm)
        after = BARGE_AFTER_S if k % 2 == 1 and k < len(utterances) else NEXT_TURN_AFTER_S
        pieces.append(np.zeros(int(after * RATE), np.int16))
    pieces.append(np.zeros(int(TAIL_S * RATE), np.int16))
    pcm = np.concatenate(pieces)
    sf.write(str(path), pcm, RATE, subtype="PCM_16")
    return path.resolve(), len(pcm) / RATE


def spans(levels: list[list[float]], threshold: float, max_gap_s: float) -> list[tuple[float, float]]:
    """(first, last) loud sample times of each stretch louder than `threshold`, bridging quiet gaps
    shorter than `max_gap_s`. Times as given (seconds)."""
    out: list[tuple[float, float]] = []
    for t, rms in levels:
        if rms <= threshold:
            continue
        if out and t - out[-1][1] <= max_gap_s:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def to_monotonic(levels: list[list[Any]]) -> list[list[Any]]:
    """The page's wall-clock ms -> this host's monotonic seconds (one host: one clock); the rest of
    each entry as it was."""
    offset = time.time() - time.monotonic()
    return [[t / 1000.0 - offset, *rest] for t, *rest in levels]


def voiced_packets(played: list[list[Any]]) -> dict[str, Any]:
    """When agent packets went to playout (`played`: [t, level, bytes] on one clock): every voiced one,
    told by the audio-level header where the packets carry it; else, told by size, only the first
    packet of each reply (each run of RUN_PACKETS full-size packets)."""
    if any(level is not None for _, level, _ in played):
        return {"played_at": [t for t, level, _ in played if level is not None and level > VOICED_RMS],
                "played_by": "audio level", "reply_starts_only": False}
    sized = [(t, size) for t, _, size in played if size is not None]
    starts, run = [], 0
    for k, (t, size) in enumerate(sized):
        gap = t - sized[k - 1][0] if k else None  # a run (run > 0) has a packet before it
        refresh = (gap is not None and sized[k - 1][1] <= FULL_PACKET_BYTES
                   and abs(gap - DTX_REFRESH_S) <= DTX_REFRESH_TOLERANCE_S)
        joined = run > 0 and gap is not None and gap <= RUN_GAP_S
        run = (run + 1 if joined else 1) if size > FULL_PACKET_BYTES and not refresh else 0
        if run == RUN_PACKETS:
            starts.append(sized[k - RUN_PACKETS + 1][0])
    return {"played_at": starts, "played_by": "payload size" if sized else None, "reply_starts_only": True}


def said_from_microphone(mic: list[list[float]], count: int) -> list[dict[str, Any]]:
    """What was said, from the page's microphone timeline: onset, true end, barging (even turns)."""
    found = spans(mic, VOICED_RMS, MIC_GAP_S)
    if len(found) != count:
        raise RuntimeError(f"the page's microphone heard {len(found)} utterances, {count} were played: "
                           "the call may have connected late (raise LEAD_S) or a pause split one")
    return [{"turn": k, "text": "", "barging": k % 2 == 0, "onset": start, "speech_end": end + 0.005,
             "sent_until": end + 0.005} for k, (start, end) in enumerate(found, start=1)]


async def browser_call(base: str, utterances: list[Utterance], workdir: Path,
                       chromium: str | None = None) -> dict[str, Any]:
    """One call from the page; returns {mode, spoken, records, heard_at, errors}."""
    from playwright.async_api import async_playwright

    executable = chromium or shutil.which("chromium") or "/usr/bin/chromium"
    wav, seconds = microphone_wav(utterances, workdir / "microphone.wav")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=[
            *CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}%noloop"])
        try:
            page = await browser.new_page()
            await page.goto(base.rstrip("/") + "/?measure=playout")
            await page.click("#connect")
            deadline = time.monotonic() + 30
            while await page.evaluate("window.S.conn") != "connected":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the page did not connect: {await page.evaluate('window.S.errors')}")
                await asyncio.sleep(0.1)
            await asyncio.sleep(seconds)  # the whole track plays (it started with getUserMedia)
            state = await page.evaluate("({mode: S.mode, levels: S.levels, turns: S.turns, errors: S.errors, "
                                        "jitter: S.jitterBufferMs, heard: S.heard})")
            await page.click("#disconnect")
        finally:
            await browser.close()
    mic, agent = to_monotonic(state["levels"]["mic"]), to_monotonic(state["levels"]["agent"])
    packets = voiced_packets(to_monotonic(state["levels"]["played"]))
    return {"mode": state["mode"], "errors": state["errors"], "records": state["turns"],
            "page": {"jitter_buffer_ms": state["jitter"], "last_heard_ms": state["heard"],
                     "played_by": packets["played_by"]},
            "spoken": said_from_microphone(mic, len(utterances)),
            "heard_at": [t for t, rms in agent if rms > VOICED_RMS],
            "played_at": packets["played_at"], "reply_starts_only": packets["reply_starts_only"]}
