"""The regression checks. Each returns a Check; the audio and codes they produce are collected in an
Outputs object so the loop and audio-sanity checks look at everything the run generated."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tts_engine.teacher_forcing import snr_db

from . import golden

SAMPLES_PER_FRAME = 1920
LOOP_MIN_LEN = 8  # frames (0.64 s): shorter repeats occur in real speech (held vowels, silence)
LOOP_MAX_COPIES = 3  # back-to-back copies of one n-gram allowed
MIN_RMS = 1e-3
CLIP_LEVEL = 0.999
MAX_CLIPPED = 0.01  # share of samples at |x| >= CLIP_LEVEL


@dataclass
class Check:
    number: int
    name: str
    status: str  # PASS, FAIL or SKIP
    summary: str
    details: dict = field(default_factory=dict)


@dataclass
class Outputs:
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # label -> [frames, 16]
    audio: dict[str, np.ndarray] = field(default_factory=dict)  # label -> int16 or float32 samples


def _stream(engine, text: str, speaker: str, language: str, max_frames: int | None, seed: int | None = None,
            word_by_word: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(codes, int16 pcm) of one stream; word_by_word pushes the text the way an LLM writes it."""
    stream = engine.open_stream(speaker=speaker, language=language, max_frames=max_frames, seed=seed)
    chunks = [w + " " for w in text.split(" ")[:-1]] + [text.split(" ")[-1]] if word_by_word else [text]
    for chunk in chunks:
        stream.push_text(chunk)
        if word_by_word:
            time.sleep(0.005)  # let the engine catch up and wait for text, as it does behind an LLM
    stream.end_text()
    pcm = np.concatenate([p.pcm for p in stream])
    return stream.codes, pcm


def determinism(number: int, engine, runs: int, frames: int, out: Outputs) -> Check:
    """Sampling with a fixed seed: every run must give bit-identical audio (offline and streamed)."""
    text, seed = "Sure, let me think about that for a second.", 1234
    offline, streamed = [], []
    for _ in range(runs):
        offline.append(engine.synthesize(text, speaker="ryan", language="english", max_frames=frames, seed=seed)[0])
        streamed.append(_stream(engine, text, "ryan", "english", frames, seed=seed))
    same_offline = sum(a.tobytes() == offline[0].tobytes() for a in offline)
    same_stream = sum(c.tobytes() == streamed[0][0].tobytes() and p.tobytes() == streamed[0][1].tobytes()
                      for c, p in streamed)
    out.audio["sampled offline"] = offline[0]
    out.codes["sampled stream"], out.audio["sampled stream"] = streamed[0]
    ok = same_offline == runs and same_stream == runs
    return Check(number, "determinism", "PASS" if ok else "FAIL",
                 f"{runs} runs, seed {seed}, do_sample=True: {same_offline}/{runs} offline and "
                 f"{same_stream}/{runs} streamed runs identical to the first",
                 {"runs": runs, "frames": int(len(offline[0]) // SAMPLES_PER_FRAME),
                  "identical_offline": same_offline, "identical_stream": same_stream})


def golden_snr(number: int, engine, golden_path: Path, fingerprint: str | None, min_snr_db: float,
               out: Outputs) -> Check:
    """Greedy output against the stored golden of the tiny checkpoint (SNR in dB)."""
    name = "golden SNR"
    if fingerprint is None:
        return Check(number, name, "SKIP", f"{engine.loaded.name} is not a tiny test checkpoint; the golden is "
                     "only valid for the tiny checkpoint built with seed 0")
    if not golden_path.is_file():
        return Check(number, name, "FAIL", f"no golden at {golden_path}; write it with --write-golden")
    meta, expected = golden.load(golden_path)
    if meta["fingerprint"] != fingerprint:
        return Check(number, name, "SKIP", f"weights differ from the tiny seed-0 checkpoint the golden was made "
                     f"from (fingerprint {fingerprint[:12]} != {meta['fingerprint'][:12]}); the golden does not apply")
    cases = []
    for i, (case, (ref_codes, ref_audio)) in enumerate(zip(meta["cases"], expected, strict=True)):
        codes, audio = golden.render(engine, golden.GoldenCase(**case), meta["frames"])
        label = f"golden {i} ({case['mode']}, {case['speaker']}/{case['language']})"
        out.audio[label] = audio
        if codes is not None:
            out.codes[label] = codes
        same_length = len(ref_audio) == len(audio)  # a different length matches nothing: -inf
        cases.append({"case": i, **case, "snr_db": snr_db(ref_audio, audio) if same_length else -math.inf,
                      "samples": [int(len(ref_audio)), int(len(audio))],
                      "codes_match": None if codes is None else bool(np.array_equal(codes, ref_codes))})
    worst = min(c["snr_db"] for c in cases)
    return Check(number, name, "PASS" if worst >= min_snr_db else "FAIL",
                 f"min SNR {worst:.1f} dB over {len(cases)} cases (threshold {min_snr_db:.0f} dB)",
                 {"min_snr_db": worst, "threshold_db": min_snr_db, "cases": cases})


def stream_vs_offline(number: int, engine, out: Outputs) -> Check:
    """Greedy: text pushed word by word vs synthesize() of the same text: lengths within one frame."""
    text = "Hello world, how can I help you today?"
    codes, pcm = _stream(engine, text, "ryan", "english", None, word_by_word=True)
    wav, _rate = engine.synthesize(text, speaker="ryan", language="english")
    out.codes["greedy word-by-word stream"], out.audio["greedy word-by-word stream"] = codes, pcm
    out.audio["greedy offline"] = wav
    diff = abs(len(pcm) - len(wav))
    return Check(number, "stream vs offline length", "PASS" if diff <= SAMPLES_PER_FRAME else "FAIL",
                 f"streamed {len(pcm)} vs offline {len(wav)} samples (difference {diff}, allowed {SAMPLES_PER_FRAME})",
                 {"stream_samples": int(len(pcm)), "offline_samples": int(len(wav)), "difference": int(diff)})


def longest_repeat(seq: np.ndarray, min_len: int = LOOP_MIN_LEN) -> tuple[int, int, int]:
    """(copies, length, start) of the n-gram (n >= min_len) repeated back to back the most times."""
    s = [int(x) for x in seq]
    best = (1, 0, 0)
    for n in range(min_len, len(s) // 2 + 1):
        for i in range(len(s) - 2 * n + 1):
            copies = 1
            while s[i + copies * n: i + (copies + 1) * n] == s[i: i + n]:
                copies += 1
            best = max(best, (copies, n, i))
    return best


def repetition_loops(number: int, out: Outputs) -> Check:
    found = {}
    for label, codes in out.codes.items():
        copies, n, start = longest_repeat(codes[:, 0])
        found[label] = {"frames": int(len(codes)), "max_copies": copies, "ngram": n, "start": start}
    worst = max((f["max_copies"] for f in found.values()), default=1)
    return Check(number, "no repetition loops", "PASS" if worst <= LOOP_MAX_COPIES else "FAIL",
                 f"most back-to-back copies of a codebook-0 n-gram (n >= {LOOP_MIN_LEN}): {worst} "
                 f"(allowed {LOOP_MAX_COPIES}) over {len(found)} utterances", {"utterances": found})


def audio_sanity(number: int, out: Outputs) -> Check:
    """Not empty, finite, not silent, not clipped."""
    stats, bad = {}, []
    for label, audio in out.audio.items():
        x = golden.as_float(audio)
        finite = bool(np.isfinite(x).all())
        rms = float(np.sqrt(np.mean(x ** 2))) if len(x) and finite else 0.0
        clipped = float(np.mean(np.abs(x) >= CLIP_LEVEL)) if len(x) else 0.0
        stats[label] = {"samples": int(len(x)), "finite": finite, "rms": rms, "clipped": clipped}
        if not (len(x) and finite and rms > MIN_RMS and clipped < MAX_CLIPPED):
            bad.append(label)
    return Check(number, "audio sanity", "FAIL" if bad else "PASS",
                 f"{len(stats) - len(bad)}/{len(stats)} utterances non-empty, finite, RMS > {MIN_RMS:g}, "
                 f"< {MAX_CLIPPED:.0%} samples at |x| >= {CLIP_LEVEL}" + (f"; failing: {bad}" if bad else ""),
                 {"utterances": stats})
