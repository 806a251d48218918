"""Teacher forcing: run a model over a GIVEN code sequence and keep its logits and audio.

Two runs of different precision (bf16 vs fp32, a CPU fast path vs the reference) cannot be compared
by generating freely: the first near-tie that resolves differently sends them down different code
sequences, and from then on nothing lines up. Fed the same codes, both compute the same quantities
frame by frame, so their logits and decoded audio can be compared directly.

The run follows the engine's dual-track path (`TTSEngine.open_stream`) with the engine's own step
functions: prompt from `PromptBuilder`, `talker_forward` on the runner's KV cache, the code
predictor's loop with the given codes chosen, and the runner's streaming codec decoder. Only the
token choice differs: nothing is sampled. The prompt is computed whole (no prefix cache).

    agreement = compare_runners(fp32_runner, bf16_runner, voice, text_ids, codes)
    # or, keeping each run's tensors:
    agreement = compare(teacher_force(fp32_runner, ...), teacher_force(bf16_runner, ...))

The runner must not be in use by an engine thread meanwhile (use a closed engine's runner, or one
built for the purpose); the run uses the runner's scratch slot and leaves it reset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .predictor_step import run_code_predictor
from .prompt import Voice
from .runner import ModelRunner, kv_bucket
from .talker_step import talker_forward


@dataclass(frozen=True)
class ForcedRun:
    """What a model computed along a fixed code sequence of T frames (fp32, on the CPU)."""

    talker_logits: torch.Tensor  # [T, V]: the codec-head logits that code 0 of frame t was chosen from
    predictor_logits: torch.Tensor  # [T, 15, C]: the logits that codes 1..15 of frame t were chosen from
    audio: torch.Tensor  # [T * SAMPLES_PER_FRAME]: the codes decoded by the streaming codec decoder, 24 kHz


@dataclass(frozen=True)
class Agreement:
    """How closely a test run follows a reference run along the same codes."""

    frames: int
    talker_cosine_mean: float  # cosine of the code-0 logit vectors, mean / worst over frames
    talker_cosine_min: float
    predictor_cosine_mean: float  # cosine of the codebook 1..15 logit vectors, over frames x codebooks
    predictor_cosine_min: float
    talker_argmax_agreement: float  # share of frames whose raw-logit argmax is the same in both runs
    predictor_argmax_agreement: float
    codec_snr_db: float  # reference audio vs test audio (inf when identical)


@dataclass(frozen=True)
class QualityGate:
    """What a precision must keep, teacher-forced along the same codes as the float32 reference
    (teacher_forcing.compare): logit cosine of the talker's code-0 and the predictor's codebook 1-15
    logits (mean and worst over frames), and the streaming codec's waveform SNR.

    Measured (12 frames, full-size random 0.6B, 2026-12-04): int8 talker cosine 0.9976 mean / 0.9974
    min, predictor 0.9952 / 0.9931, codec untouched (SNR inf); bf16 0.9999 / 0.9998 and 0.9998 /
    0.9997, codec 38.9 dB. Random weights are a hard case (no trained structure to absorb rounding);
    the gates leave about 2x the measured distance to 1.
    """

    logit_cosine_mean: float
    logit_cosine_min: float
    codec_snr_db: float

    def failures(self, agreement: Agreement) -> list[str]:
        """Each threshold the agreement misses, in words; empty when it passes."""
        a, out = agreement, []
        for part in ("talker", "predictor"):
            mean, worst = getattr(a, f"{part}_cosine_mean"), getattr(a, f"{part}_cosine_min")
            if mean < self.logit_cosine_mean:
                out.append(f"{part} logit cosine mean {mean:.5f} < {self.logit_cosine_mean}")
            if worst < self.logit_cosine_min:
                out.append(f"{part} logit cosine min {worst:.5f} < {self.logit_cosine_min}")
        if a.codec_snr_db < self.codec_snr_db:
            out.append(f"codec SNR {a.codec_snr_db:.1f} dB < {self.codec_snr_db} dB")
        return out


QUALITY_GATES = {
    # int8 linears; the codec in whatever dtype the config gives it (auto: bf16 for a full-size decoder)
    "int8": QualityGate(logit_cosine_mean=0.99, logit_cosine_min=0.985, codec_snr_db=25.0),
    "bf16": QualityGate(logit_cosine_mean=0.999, logit_cosine_min=0.998, codec_snr_db=25.0),
}


def text_track_id(text_ids: list[int], index: int, tts_eos_id: int, tts_pad_id: int) -> int:
    """The text-track token fed with talker step `index` (token 0 rides in the prompt): the text,
    then tts_eos once, then tts_pad - the rule `Utterance.text_id_for_talk` applies once text ended."""
    if index < len(text_ids):
        return text_ids[index]
    return tts_eos_id if index == len(text_ids) else tts_pad_id


@torch.inference_mode()
def teacher_force(runner: ModelRunner, voice: Voice, text_ids: list[int],
                  codes: torch.Tensor | np.ndarray) -> ForcedRun:
    """Run `runner`'s model over `codes` ([T, 16] codec ids, e.g. `TTSStream.codes`) as the engine
    would have generated them for a stream of `voice` fed `text_ids`."""
    if not text_ids:
        raise ValueError("teacher forcing needs at least one text token")
    dev = runner.device
    codes = torch.as_tensor(codes, dtype=torch.long).to(dev)
    if codes.ndim != 2 or codes.shape[1] != runner.tc.num_code_groups or codes.shape[0] < 1:
        raise ValueError(f"codes must be [frames, {runner.tc.num_code_groups}], got {tuple(codes.shape)}")
    frames = codes.shape[0]
    p, max_context = runner.prompts, runner.cfg.max_context
    prompt = torch.cat((p.fixed_prefix(voice), p.streaming_tail(voice, text_ids[0])), dim=1).to(runner.dtype)
    length = prompt.shape[1]
    if length + frames > max_context:
        raise ValueError(f"{frames} frames after a {length}-token prompt exceed max_context {max_context}")
    slots = torch.tensor([runner.scratch], device=dev)
    runner.decoder.reset(slots)
    hidden, logits = talker_forward(runner.talker, runner.cache, prompt, torch.arange(length, device=dev)[None],
                                    slots, kv_bucket(length, max_context))
    talker_logits, predictor_logits, audio = [], [], []
    for t in range(frames):
        frame = codes[t:t + 1]  # [1, 16]
        talker_logits.append(logits[0].float().cpu())
        step_logits, embed_sum = _forced_predictor(runner, hidden, frame)
        predictor_logits.append(step_logits.float().cpu())
        audio.append(runner.decode_fn(frame, slots)[0].float().cpu())
        if t + 1 == frames:
            break
        # the next talker step, as ModelRunner.talk_fn feeds it: the frame's embedding sum + one text token
        text_id = text_track_id(text_ids, t + 1, p.tts_eos_id, p.tts_pad_id)
        embeds = embed_sum[:, None] + p.text_embed([text_id])  # [1, 1, D]
        pos = length + t
        hidden, logits = talker_forward(runner.talker, runner.cache, embeds,
                                        torch.full((1, 1), pos, dtype=torch.long, device=dev), slots,
                                        kv_bucket(pos + 1, max_context))
    runner.decoder.reset(slots)
    return ForcedRun(talker_logits=torch.stack(talker_logits), predictor_logits=torch.stack(predictor_logits),
                     audio=torch.cat(audio))


def _forced_predictor(runner: ModelRunner, hidden: torch.Tensor,
                      frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The code predictor's loop with codebooks 1..15 of `frame` [1, 16] chosen as given:
    (the logits each step chose from [15, C], the frame's embedding sum [1, D])."""
    seen: list[torch.Tensor] = []

    def given(codebook: int, logits: torch.Tensor) -> torch.Tensor:
        seen.append(logits[0])
        return frame[:, codebook]

    _codes, embed_sum = run_code_predictor(runner.talker, hidden, frame[:, 0], given)
    return torch.stack(seen), embed_sum


def snr_db(reference: torch.Tensor | np.ndarray, test: torch.Tensor | np.ndarray) -> float:
    """10 log10(|ref|^2 / |ref - test|^2) in float64: inf when identical."""
    ref = torch.as_tensor(reference).double().flatten()
    x = torch.as_tensor(test).double().flatten()
    if ref.shape != x.shape:
        raise ValueError(f"cannot compare {ref.numel()} samples with {x.numel()}")
    noise = float(((ref - x) ** 2).sum())
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(float((ref ** 2).sum()), 1e-300) / noise)


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.double(), b.double(), dim=-1).flatten()


def compare(reference: ForcedRun, test: ForcedRun) -> Agreement:
    if reference.talker_logits.shape != test.talker_logits.shape:
        raise ValueError("the two runs followed different code sequences or models")
    talker = _cosines(reference.talker_logits, test.talker_logits)
    predictor = _cosines(reference.predictor_logits, test.predictor_logits)
    same_talker = reference.talker_logits.argmax(-1) == test.talker_logits.argmax(-1)
    same_predictor = reference.predictor_logits.argmax(-1) == test.predictor_logits.argmax(-1)
    return Agreement(
        frames=reference.talker_logits.shape[0],
        talker_cosine_mean=float(talker.mean()), talker_cosine_min=float(talker.min()),
        predictor_cosine_mean=float(predictor.mean()), predictor_cosine_min=float(predictor.min()),
        talker_argmax_agreement=float(same_talker.double().mean()),
        predictor_argmax_agreement=float(same_predictor.double().mean()),
        codec_snr_db=snr_db(reference.audio, test.audio))


def compare_runners(reference: ModelRunner, test: ModelRunner, voice: Voice, text_ids: list[int],
                    codes: torch.Tensor | np.ndarray) -> Agreement:
    """Teacher-force both runners (e.g. an fp32 reference and a bf16 or quantized fast path, loaded
    from the same weights) along the same codes, and compare them."""
    return compare(teacher_force(reference, voice, text_ids, codes), teacher_force(test, voice, text_ids, codes))
