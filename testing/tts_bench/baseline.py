"""The qwen-tts package's own path on the engine's model, as the benchmark's baseline.

generate: `Qwen3TTSForConditionalGeneration.generate` with inputs built as `generate_custom_voice`
builds them (its assistant template, the processor's tokenizer, dual-track text with
non_streaming_mode=False). Its min_new_tokens is fixed at 2, so a model that emits EOS early would
shorten the run; EOS is masked at the codec head instead, the same effect as the engine's
min_new_tokens = frames + 1. Each call is timed end to end, and a hook on the talker marks the end
of its first forward (the prompt prefill), so the prefill can be counted on both sides or on
neither: prefill = call start -> end of that forward (input building, HF set-up, the forward);
per frame = the rest / frames.

decoder, on the codes of one engine utterance: (a) the package's default, what
`generate_custom_voice` returns audio through (`speech_tokenizer.decode` -> `chunked_decode` with
its default chunk_size=300, left_context_size=25: one whole decode for utterances up to 300
frames); (b) whole-utterance `decoder(codes)`; (c) the package's streaming answer, windowed
re-decoding as in `chunked_decode(chunk_size=1, left_context_size=25)`: every new frame decodes
`codes[..., t - ctx : t + 1]` again with up to 25 frames of left context - over this utterance, and
the sustained 26-frame window.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import statistics
import time
from collections.abc import Iterator

import numpy as np
import torch
from qwen_tts import Qwen3TTSModel

from .common import is_cuda, log, synchronize, timed

LEFT_CONTEXT = 25  # chunked_decode's default left_context_size


@contextlib.contextmanager
def eos_masked(talker) -> Iterator[None]:
    eos = talker.config.codec_eos_token_id

    def mask(_module, _inputs, logits: torch.Tensor) -> torch.Tensor:
        return logits.index_fill(-1, torch.tensor([eos], device=logits.device), float("-inf"))

    handle = talker.codec_head.register_forward_hook(mask)
    try:
        yield
    finally:
        handle.remove()


def _generate(engine, text: str, speaker: str, language: str, new_tokens: int, seed: int) -> torch.Tensor:
    model, rules = engine.loaded.model, engine.runner.rules
    # the package's template method does not use its instance
    prompt = Qwen3TTSModel._build_assistant_text(None, text)  # type: ignore[arg-type]
    input_ids = engine.loaded.tokenizer(prompt, return_tensors="pt", padding=True)["input_ids"].to(model.device)
    torch.manual_seed(seed)
    with torch.inference_mode(), eos_masked(model.talker):
        codes, _hidden = model.generate(
            input_ids=[input_ids], instruct_ids=[None], languages=[language], speakers=[speaker],
            non_streaming_mode=False, max_new_tokens=new_tokens, do_sample=rules.do_sample, top_k=rules.top_k,
            top_p=rules.top_p, temperature=rules.temperature, repetition_penalty=rules.repetition_penalty,
            subtalker_dosample=rules.subtalker_do_sample, subtalker_top_k=rules.subtalker_top_k,
            subtalker_top_p=rules.subtalker_top_p, subtalker_temperature=rules.subtalker_temperature)
    return codes[0]  # [frames, 16]


def _timed_generate(engine, text: str, speaker: str, language: str, new_tokens: int,
                    seed: int) -> tuple[torch.Tensor, float, float, int]:
    """(codes, seconds in all, seconds to the end of the prompt prefill, prompt length)."""
    dev = str(engine.runner.device)
    marks: list[tuple[float, int]] = []

    def after_forward(_module, _args, kwargs, _output) -> None:
        if not marks:  # the talker's first forward in a generate call is the prompt prefill
            synchronize(dev)
            embeds = kwargs.get("inputs_embeds")
            marks.append((time.perf_counter(), -1 if embeds is None else embeds.shape[1]))

    handle = engine.loaded.model.talker.register_forward_hook(after_forward, with_kwargs=True)
    try:
        synchronize(dev)
        start = time.perf_counter()
        codes = _generate(engine, text, speaker, language, new_tokens, seed)
        synchronize(dev)
        end = time.perf_counter()
    finally:
        handle.remove()
    return codes, end - start, marks[0][0] - start, marks[0][1]


def package_generate(engine, text: str, speaker: str, language: str, frames: int, runs: int) -> dict:
    """The package's generate for `frames` frames (frames + 1 new tokens): end to end (prefill
    included), its prefill alone, and the rest per frame (prefill excluded); medians over runs."""
    _generate(engine, text, speaker, language, 3, seed=0)  # warm-up: lazy init and HF set-up
    totals, prefills = [], []
    prompt_tokens = -1
    for run in range(runs):
        codes, seconds, prefill, prompt_tokens = _timed_generate(engine, text, speaker, language, frames + 1, run)
        if codes.shape[0] != frames:
            raise RuntimeError(f"package generate gave {codes.shape[0]} frames, expected {frames}")
        totals.append(seconds)
        prefills.append(prefill)
        log(f"  package generate run {run + 1}/{runs}: {seconds:.2f} s for {frames} frames "
            f"(prefill {prefill * 1000:.0f} ms)")
    total_ms = statistics.median(totals) * 1000
    steady = [(t - p) / frames for t, p in zip(totals, prefills, strict=True)]
    return {"generate_total_ms": total_ms,
            "generate_ms_per_frame": total_ms / frames,  # prefill included, spread over the frames
            "prefill_ms": statistics.median(prefills) * 1000,
            "generate_steady_ms_per_frame": statistics.median(steady) * 1000,  # prefill excluded
            "prompt_tokens": prompt_tokens, "runs": runs}


def default_decode_args(decoder) -> dict[str, int]:
    """chunk_size / left_context_size defaults of the package's own `chunked_decode` (read, not assumed)."""
    params = inspect.signature(type(decoder).chunked_decode).parameters
    return {"chunk_size": params["chunk_size"].default, "left_context_size": params["left_context_size"].default}


def package_decoder(engine, codes: np.ndarray, runs: int) -> dict:
    """Package decoder cost per frame: its default chunked decode, whole-utterance decode, and
    windowed re-decoding per frame."""
    decoder = engine.loaded.speech_decoder
    dev = str(next(decoder.parameters()).device)
    frames = codes.shape[0]
    c = torch.as_tensor(codes.T[None].copy(), device=dev)  # [1, 16, frames]
    window = torch.randint(0, decoder.config.codebook_size, (1, c.shape[1], LEFT_CONTEXT + 1), device=dev)
    # every window length is a new input shape: one untimed pass first, so first-call costs
    # (allocator, kernel selection) do not count against the package
    windows = []
    for t in range(frames):
        ctx = LEFT_CONTEXT if t - LEFT_CONTEXT > 0 else t  # chunked_decode's context rule
        windows.append(c[..., t - ctx: t + 1])
    defaults = default_decode_args(decoder)
    with torch.inference_mode():
        for codes_in in [c, window, *windows]:
            decoder(codes_in)
        decoder.chunked_decode(c)
        default = [timed(dev, decoder.chunked_decode, c)[1] / frames for _ in range(runs)]
        whole = [timed(dev, decoder, c)[1] / frames for _ in range(runs)]
        windowed = [timed(dev, decoder, codes_in)[1] for codes_in in windows]
        # the sustained cost once a stream is longer than the context: a 26-frame window per frame
        # (speed does not depend on code values, so random codes serve)
        steady = [timed(dev, decoder, window)[1] for _ in range(runs)]
    return {"codec_default_ms_per_frame": statistics.median(default) * 1000,
            "codec_default_args": {**defaults, "chunks": math.ceil(frames / defaults["chunk_size"])},
            "codec_whole_ms_per_frame": statistics.median(whole) * 1000,
            "codec_windowed_ms_per_frame": float(np.mean(windowed)) * 1000,
            "codec_windowed_steady_ms_per_frame": statistics.median(steady) * 1000,
            "frames": frames}


def measure_baseline(engine, text: str, speaker: str, language: str, frames: int, runs: int) -> dict:
    stream = engine.open_stream(speaker=speaker, language=language, max_frames=frames)
    stream.push_text(text)
    stream.end_text()
    for _ in stream:
        pass
    if is_cuda(str(engine.runner.device)):
        torch.cuda.reset_peak_memory_stats()
    result = {**package_generate(engine, text, speaker, language, frames, runs),
              **package_decoder(engine, stream.codes, runs)}
    if is_cuda(str(engine.runner.device)):
        result["peak_gpu_mem_bytes"] = torch.cuda.max_memory_allocated()
    return result
