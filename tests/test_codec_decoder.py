"""StreamingCodecDecoder: frame-by-frame decoding equals the package's whole-utterance decode."""

from __future__ import annotations

import pytest
import torch
from qwen_tts.core.tokenizer_12hz import modeling_qwen3_tts_tokenizer_v2 as qm

from tts_engine.architectures import FULL_DECODER, TINY_DECODER
from tts_engine.codec_decoder import SAMPLES_PER_FRAME, StreamingCodecDecoder
from tts_engine.tiny_checkpoint import build_speech_tokenizer

torch.set_num_threads(1)  # tiny ops crawl with 2 OpenMP threads on a loaded 2-core box

TOL = 1e-4


def _sensitive(decoder):
    """Random init scales the transformer (LayerScale 0.01) and ConvNeXt (gamma 1e-6) branches to
    almost nothing, which would hide errors there; at 1.0 they shape the audio fully."""
    with torch.no_grad():
        for m in decoder.modules():
            if isinstance(m, qm.Qwen3TTSTokenizerV2DecoderLayerScale):
                m.scale.fill_(1.0)
            if isinstance(m, qm.Qwen3TTSTokenizerV2ConvNeXtBlock):
                m.gamma.fill_(1.0)
    return decoder


@pytest.fixture(scope="module")
def tiny_decoder():
    return _sensitive(build_speech_tokenizer(TINY_DECODER, seed=0).decoder)


def _codes(frames: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 2048, (1, 16, frames), generator=torch.Generator().manual_seed(seed))


def _stream(stream: StreamingCodecDecoder, codes: torch.Tensor, slot: int = 0) -> torch.Tensor:
    """codes: [1, 16, T] -> [T * 1920], one step per frame on one slot."""
    slots = torch.tensor([slot])
    return torch.cat([stream.step(codes[:, :, t], slots)[0] for t in range(codes.shape[-1])])


def _assert_audible(wav: torch.Tensor) -> None:
    # an exactness test on silence or on a clipped square wave would prove nothing
    assert wav.std() > 0.01
    assert (wav.abs() >= 1).float().mean() < 0.2


def test_tiny_stream_equals_whole_decode_past_the_window(tiny_decoder):
    codes = _codes(100, seed=1)  # > 72 frames: the KV ring wraps and the window slides
    with torch.inference_mode():
        whole = tiny_decoder(codes)[0, 0]  # [100 * 1920]
        stream = StreamingCodecDecoder(tiny_decoder, max_slots=2)
        streamed = _stream(stream, codes, slot=1)
    _assert_audible(whole)
    assert streamed.shape == whole.shape == (100 * SAMPLES_PER_FRAME,)
    assert (streamed - whole).abs().max() <= TOL
    assert stream.positions.tolist() == [0, 100]


def test_transformer_ring_equals_sliding_window_attention(tiny_decoder):
    # The transformer alone, tighter than the audio check: catches ring/mask/RoPE slips even where
    # the conv stack would attenuate them.
    codes = _codes(150, seed=2)
    with torch.inference_mode():
        x = tiny_decoder.pre_conv(tiny_decoder.quantizer.decode(codes))  # [1, latent, 150]
        ref = tiny_decoder.pre_transformer(inputs_embeds=x.transpose(1, 2)).last_hidden_state[0]
        stream = StreamingCodecDecoder(tiny_decoder, max_slots=1)
        slots = torch.tensor([0])
        rows = [stream._transformer_step(x[:, :, t], slots, torch.tensor([t])) for t in range(150)]
    got = torch.cat(rows)  # [150, latent]
    assert (got - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_batched_slots_interleaved_and_reused(tiny_decoder):
    # (slot, start step, frames): slots start at different steps; slot 0 is reset and reused.
    plan = [(0, 0, 30), (1, 3, 25), (2, 6, 40), (3, 9, 20), (0, 32, 15)]
    codes = [_codes(n, seed=10 + i) for i, (_, _, n) in enumerate(plan)]
    out: list[list[torch.Tensor]] = [[] for _ in plan]
    with torch.inference_mode():
        stream = StreamingCodecDecoder(tiny_decoder, max_slots=4)
        for step in range(max(start + n for _, start, n in plan)):
            active = [i for i, (_, start, n) in enumerate(plan) if start <= step < start + n]
            for i in active:
                if plan[i][1] == step:
                    stream.reset([plan[i][0]])
            active.reverse()  # rows need not be in slot order
            batch = torch.cat([codes[i][:, :, step - plan[i][1]] for i in active])  # [B, 16]
            slots = torch.tensor([plan[i][0] for i in active])
            audio = stream.step(batch, slots)  # [B, 1920]
            assert audio.shape == (len(active), SAMPLES_PER_FRAME)
            for row, i in enumerate(active):
                out[i].append(audio[row])
        for i in range(len(plan)):
            whole = tiny_decoder(codes[i])[0, 0]
            assert (torch.cat(out[i]) - whole).abs().max() <= TOL, f"utterance {i}"


def test_reset_gives_a_fresh_slot(tiny_decoder):
    first, second = _codes(40, seed=20), _codes(12, seed=21)
    with torch.inference_mode():
        used = StreamingCodecDecoder(tiny_decoder, max_slots=3)
        _stream(used, first, slot=2)
        used.reset(torch.tensor([2]))
        assert used.positions[2] == 0
        after_reset = _stream(used, second, slot=2)
        fresh = _stream(StreamingCodecDecoder(tiny_decoder, max_slots=3), second, slot=2)
        no_reset = StreamingCodecDecoder(tiny_decoder, max_slots=3)
        _stream(no_reset, first, slot=2)
        continued = _stream(no_reset, second, slot=2)
    assert torch.equal(after_reset, fresh)
    # without the reset the carried state changes the audio: the check above is not vacuous
    assert (continued - fresh).abs().max() > 1e-2


def test_reset_leaves_other_slots_alone(tiny_decoder):
    codes = _codes(20, seed=30)
    with torch.inference_mode():
        stream = StreamingCodecDecoder(tiny_decoder, max_slots=2)
        head = _stream(stream, codes[:, :, :10], slot=0)
        _stream(stream, codes[:, :, :5], slot=1)
        stream.reset([1])
        tail = _stream(stream, codes[:, :, 10:], slot=0)
        whole = tiny_decoder(codes)[0, 0]
    assert (torch.cat([head, tail]) - whole).abs().max() <= TOL


def test_state_is_preallocated_per_slot(tiny_decoder):
    one = StreamingCodecDecoder(tiny_decoder, max_slots=1).state_bytes()
    eight = StreamingCodecDecoder(tiny_decoder, max_slots=8)
    assert one > 0 and eight.state_bytes() == 8 * one
    before = eight.state_bytes()
    with torch.inference_mode():
        _stream(eight, _codes(5, seed=40), slot=7)
    assert eight.state_bytes() == before  # nothing grows while decoding


def test_full_size_stream_equals_whole_decode():
    decoder = _sensitive(build_speech_tokenizer(FULL_DECODER, seed=0).decoder)
    codes = _codes(80, seed=50)  # the full config keeps the 72-frame window too
    with torch.inference_mode():
        whole = decoder(codes)[0, 0]
        streamed = _stream(StreamingCodecDecoder(decoder, max_slots=1), codes)
    _assert_audible(whole)
    assert (streamed - whole).abs().max() <= TOL
