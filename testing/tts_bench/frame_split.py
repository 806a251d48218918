"""Per-frame time of the engine's three stages, timed by calling its step functions directly.

One stream, eager (no CUDA graphs), so each stage's own cost shows: `talker_forward` (one talker
step), `predict_codebooks` (codebooks 1-15) and `runner.decoder.step` (one codec frame -> 1920
samples). Before the frames, the prefill: building the prompt embeddings and one talker forward
over them (no prefix cache), timed on its own so that comparisons can put it in or leave it out.
Runs on the last stream slot, which the engine hands out last: call it only while no stream is
open, so the engine thread never touches that slot meanwhile.
"""

from __future__ import annotations

from typing import Any

import torch

from tts_engine.predictor_step import predict_codebooks
from tts_engine.prompt import resolve_voice
from tts_engine.runner import kv_bucket
from tts_engine.talker_step import talker_forward
from tts_engine.text_input import IncrementalTokenizer

from .common import ms_summary, timed

STAGES = ("talker", "predictor", "codec")


def _prefill(engine, voice, tokens: list[int], slots: torch.Tensor):
    """Prompt embeddings + one talker forward over them -> (hidden, code0, prompt length)."""
    r, p = engine.runner, engine.runner.prompts
    # the dual-track prompt: fixed voice prefix, then the first text token on the codec BOS
    prompt = torch.cat((p.fixed_prefix(voice), p.text_embed(tokens[:1]) + p.codec_embed([voice.codec_prefix[-1]])),
                       dim=1).to(r.dtype)  # [1, L, D]
    length = prompt.shape[1]
    hidden, logits = talker_forward(r.talker, r.cache, prompt, torch.arange(length, device=r.device)[None],
                                    slots, kv_bucket(length, engine.config.max_context))
    # greedy over codebook-0 ids only: which token is chosen does not change the cost
    code0 = logits[:, :engine.loaded.speech_decoder.config.codebook_size].argmax(-1)
    return hidden, code0, length


def _frames(engine, voice, tokens: list[int], frames: int, slot: int,
            prefills: int = 1) -> tuple[dict[str, list[float]], int]:
    """({stage: seconds per call}, prompt length); the prefill runs `prefills` times (same KV rows)."""
    r = engine.runner
    dev, max_context = str(r.device), engine.config.max_context
    p = r.prompts
    codebook_size = engine.loaded.speech_decoder.config.codebook_size
    slots = torch.tensor([slot], device=r.device)
    seed = torch.zeros(1, dtype=torch.long, device=r.device)
    r.decoder.reset(slots)
    times: dict[str, list[float]] = {name: [] for name in (*STAGES, "prefill")}
    for _ in range(prefills):  # each rewrites the same cache rows 0..L-1: the last one is what the frames see
        (hidden, code0, length), t = timed(dev, _prefill, engine, voice, tokens, slots)
        times["prefill"].append(t)
    for f in range(frames):
        counter = torch.full((1,), f, dtype=torch.long, device=r.device)
        (codes, embed_sum), t = timed(dev, predict_codebooks, r.talker, hidden, code0, r.rules, seed, counter)
        times["predictor"].append(t)
        _, t = timed(dev, r.decoder.step, codes, slots)
        times["codec"].append(t)
        k = f + 1  # frame f is followed by text token f+1, then tts_eos, then tts_pad
        text_id = tokens[k] if k < len(tokens) else (p.tts_eos_id if k == len(tokens) else p.tts_pad_id)
        embeds = embed_sum[:, None] + p.text_embed([text_id])  # [1, 1, D]
        pos = length + f
        positions = torch.full((1, 1), pos, dtype=torch.long, device=r.device)
        (hidden, logits), t = timed(dev, talker_forward, r.talker, r.cache, embeds, positions, slots,
                                    kv_bucket(pos + 1, max_context))
        times["talker"].append(t)
        code0 = logits[:, :codebook_size].argmax(-1)
    r.decoder.reset(slots)
    return times, length


def measure_frame_split(engine, frames: int, speaker: str, language: str, text: str,
                        warmup_frames: int = 2, prefills: int = 1) -> dict[str, Any]:
    """{stage: ms summary} for talker, predictor, codec and their per-frame total; the prefill
    (`prefills` samples, prompt building included) and the prompt length in tokens."""
    voice = resolve_voice(engine.loaded.talker_config, speaker, language, engine.languages)
    tokens = IncrementalTokenizer(engine.text_tokenizer).tokenize_all(text)
    slot = engine.config.max_streams - 1
    with torch.inference_mode():
        _frames(engine, voice, tokens, warmup_frames, slot)  # lazy init, allocator, kernel selection
        times, length = _frames(engine, voice, tokens, frames, slot, prefills)
    total = [sum(parts) for parts in zip(*(times[name] for name in STAGES), strict=True)]
    return {**{name: ms_summary(times[name]) for name in STAGES}, "total": ms_summary(total),
            "prefill": ms_summary(times["prefill"]), "prompt_tokens": length}
