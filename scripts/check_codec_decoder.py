#!/usr/bin/env python
"""Print how far the engine's streamed codec audio is from the package decoder's whole-utterance decode.

    ./.venv/bin/python scripts/check_codec_decoder.py                  # tiny and full-size decoder
    ./.venv/bin/python scripts/check_codec_decoder.py --sizes tiny --json out.json

The cases are the ones tests/test_codec_decoder.py asserts (same configurations, seeds, frame counts
and slots; fp32; transformer and ConvNeXt branches scaled to 1.0 so errors there are audible): the
tiny decoder over 100 frames (past the 72-frame attention window) and the full-size decoder
configuration with random weights over 80 frames. For each: max |streamed - whole| over all samples,
over the first frame, and over the frames past the window, with the signal's peak and RMS, the
max |diff| relative to the peak, and the tolerance the tests assert.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from qwen_tts.core.tokenizer_12hz import modeling_qwen3_tts_tokenizer_v2 as qm

from testing.tts_bench.common import load_average, log, machine_info
from tts_engine.architectures import FULL_DECODER, TINY_DECODER
from tts_engine.codec_decoder import SAMPLES_PER_FRAME, StreamingCodecDecoder
from tts_engine.tiny_checkpoint import build_speech_tokenizer

TESTS_ASSERT = 1e-4  # tests/test_codec_decoder.py TOL: max |diff| the tests accept
WINDOW = 72  # the decoder transformer's sliding window, in frames
# name -> (decoder config, frames, code seed, slot, slots): as tests/test_codec_decoder.py runs them
CASES = {
    "tiny": (TINY_DECODER, 100, 1, 1, 2),
    "full": (FULL_DECODER, 80, 50, 0, 1),
}


def scale_branches(decoder) -> None:
    """Random init scales the transformer (LayerScale 0.01) and ConvNeXt (gamma 1e-6) branches to almost
    nothing, which would hide errors there; at 1.0 they shape the audio fully (as the tests do)."""
    with torch.no_grad():
        for m in decoder.modules():
            if isinstance(m, qm.Qwen3TTSTokenizerV2DecoderLayerScale):
                m.scale.fill_(1.0)
            if isinstance(m, qm.Qwen3TTSTokenizerV2ConvNeXtBlock):
                m.gamma.fill_(1.0)


def measure(name: str) -> dict:
    config, frames, seed, slot, slots = CASES[name]
    start = time.perf_counter()
    decoder = build_speech_tokenizer(config, seed=0).decoder
    scale_branches(decoder)
    codes = torch.randint(0, 2048, (1, 16, frames), generator=torch.Generator().manual_seed(seed))  # [1, 16, T]
    with torch.inference_mode():
        whole = decoder(codes)[0, 0]  # [T * 1920]
        stream = StreamingCodecDecoder(decoder, max_slots=slots)
        index = torch.tensor([slot])
        streamed = torch.cat([stream.step(codes[:, :, t], index)[0] for t in range(frames)])
    diff = (streamed - whole).abs()
    past = diff[WINDOW * SAMPLES_PER_FRAME:]
    return {"decoder": name, "frames": frames, "code_seed": seed, "dtype": "float32",
            "max_abs_diff": diff.max().item(), "first_frame_max_abs_diff": diff[:SAMPLES_PER_FRAME].max().item(),
            "past_window_max_abs_diff": past.max().item() if past.numel() else None,
            "signal_peak": whole.abs().max().item(), "signal_rms": whole.pow(2).mean().sqrt().item(),
            "max_abs_diff_over_peak": (diff.max() / whole.abs().max()).item(),
            "tests_assert_max_abs_diff": TESTS_ASSERT, "seconds": time.perf_counter() - start}


def _e(value) -> str:
    return "-" if value is None else f"{value:.1e}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,full", help="comma list of: " + ", ".join(CASES))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the tests use 1)")
    ap.add_argument("--json", dest="json_out", help="write the results here")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.sizes.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        ap.error(f"--sizes takes {', '.join(CASES)}; got {args.sizes!r}")
    torch.set_num_threads(args.threads)
    machine = machine_info()
    results = []
    for name in names:
        log(f"{name} decoder ...")
        results.append(measure(name))
    machine["load_avg_end"] = load_average()
    print(f"streamed (one frame per step) vs whole-utterance decode, fp32, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}")
    for r in results:
        print(f"{r['decoder']} decoder, {r['frames']} frames: max |diff| {_e(r['max_abs_diff'])} "
              f"(first frame {_e(r['first_frame_max_abs_diff'])}, frames past the {WINDOW}-frame window "
              f"{_e(r['past_window_max_abs_diff'])}); signal peak {r['signal_peak']:.3f}, RMS {r['signal_rms']:.3f}, "
              f"max |diff| / peak {_e(r['max_abs_diff_over_peak'])}; "
              f"tests assert <= {r['tests_assert_max_abs_diff']:.0e}: "
              f"{'within' if r['max_abs_diff'] <= r['tests_assert_max_abs_diff'] else 'OVER'}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"machine": machine, "cases": results}, f, indent=2)
        log(f"results written to {args.json_out}")
    return 0 if all(r["max_abs_diff"] <= r["tests_assert_max_abs_diff"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
