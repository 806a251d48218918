"""Token selection on the device: the package's logits rules, with counter-based random numbers.

Random numbers come from a hash of (stream seed, step counter, salt, vocab index) instead of a
global generator: each stream's random numbers depend only on its own seed and position, never on
which other streams share its batch, and nothing needs a host round trip. (Its logits can still
differ in the last bits between batch sizes - GEMM kernels are not batch-invariant - so a near-tie
may resolve differently when batched; a fixed seed reproduces exactly for the same batching.) Sampling
is the exponential race (argmax of p / E with E ~ Exp(1)), equivalent to a categorical draw.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # murmur3-style finalizer on values held in int64 (low 32 bits are exact despite signed wrap)
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _MASK32
    x = ((x ^ (x >> 15)) * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def counter_uniform(seed: torch.Tensor, counter: torch.Tensor, salt: int, n: int) -> torch.Tensor:
    """[B, n] uniform floats in (0, 1), a pure function of (seed[b], counter[b], salt, index)."""
    # seed, counter: [B] int64
    base = _mix32((seed * 0x9E3779B1 + counter * 0x85EBCA77 + salt * 0xC2B2AE3D) & _MASK32)  # [B]
    idx = torch.arange(n, device=seed.device, dtype=torch.int64)
    x = _mix32((base[:, None] ^ (idx[None, :] * 0x27D4EB2F)) & _MASK32)  # [B, n]
    return ((x >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """HF's TopK then TopP warpers (order and tie rules as in transformers 4.57)."""
    # logits: [B, V] float32
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= (1 - top_p)
        remove_sorted[..., -1:] = False  # always keep the most likely token
        remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def choose_tokens(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int, top_p: float,
    seed: torch.Tensor, counter: torch.Tensor, salt: int,
) -> torch.Tensor:
    """[B] token ids from processed logits [B, V]: greedy argmax or a seeded sample."""
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = filter_top_k_top_p(logits / temperature, top_k, top_p)
    probs = logits.softmax(dim=-1)
    race = -torch.log(counter_uniform(seed, counter, salt, logits.shape[-1]))  # Exp(1) noise
    return (probs / race).argmax(dim=-1)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """HF RepetitionPenaltyLogitsProcessor with the token history held as a [B, V] bool mask."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def talker_logit_mask(vocab_size: int, eos_id: int, device: torch.device | str) -> torch.Tensor:
    """[V] additive mask: -inf on the package's suppressed ids (the top 1024 except EOS)."""
    mask = torch.zeros(vocab_size, dtype=torch.float32, device=device)
    mask[vocab_size - 1024:] = float("-inf")
    mask[eos_id] = 0.0
    return mask
