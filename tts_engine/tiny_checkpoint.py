"""Build a tiny random-weight Qwen3-TTS-12Hz CustomVoice checkpoint offline.

    python -m tts_engine.tiny_checkpoint OUT_DIR

The folder loads through `qwen_tts.Qwen3TTSModel.from_pretrained(OUT_DIR)` exactly like a released
checkpoint: same file layout, same codec token-id layout, a byte-level BPE text tokenizer with the
Qwen2 pre-tokenizer and the special tokens the prompt template needs. Widths are toy-sized so the
whole engine runs in tests in seconds. The voice is noise-like: it is a TEST voice, not speech.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from . import architectures as arch
from .frames import CODEBOOKS, DECODER_RATE, SAMPLES_PER_FRAME

log = logging.getLogger(__name__)

# Qwen2's pre-tokenizer split (contractions, letters, single digits, punctuation, newlines, spaces).
QWEN2_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>"]
TRAINING_TEXT = [
    "Hello world, this is a tiny test of the Qwen three text to speech model.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "How can I help you today? Sure, let me think about that for a second.",
    "你好，欢迎使用语音合成服务。今天天气很好。",
]


def build_text_tokenizer():
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    # "assistant\n" must merge into few tokens: the package slices the prompt's first 3 tokens as
    # "<|im_start|>assistant\n", so the corpus repeats the role words many times.
    corpus = ["assistant\nuser\nsystem\n"] * 200 + TRAINING_TEXT * 20
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token=None, additional_special_tokens=SPECIAL_TOKENS[1:])
    role = tokenizer("<|im_start|>assistant\n")["input_ids"]
    if len(role) != 3:
        raise RuntimeError(f"tokenizer splits the role prefix into {len(role)} tokens, need 3")
    return tokenizer


def special_text_ids(tokenizer) -> dict[str, int]:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return dict(
        im_start_token_id=ids["<|im_start|>"], im_end_token_id=ids["<|im_end|>"],
        tts_pad_token_id=ids["<tts_pad>"], tts_bos_token_id=ids["<tts_text_bos>"],
        tts_eos_token_id=ids["<tts_text_eod>"],
    )


def randomize_speech_decoder(decoder: torch.nn.Module) -> None:
    """Give a freshly constructed speech decoder audible random weights.

    Its codebooks initialise to zero and its convolutions to tiny values, which decode to silence:
    a silent decoder would make every audio test vacuous.
    """
    with torch.no_grad():
        for name, param in decoder.named_parameters():
            if name.endswith(("embedding_sum", "embed_sum")):
                param.normal_()
        for module in decoder.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d, torch.nn.Linear)):
                module.reset_parameters()


def build_speech_tokenizer(decoder_config: dict, seed: int = 0):
    """A 12 Hz speech tokenizer model (small encoder + the given decoder) with random weights."""
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model

    torch.manual_seed(seed)
    config = Qwen3TTSTokenizerV2Config(
        encoder_config=dict(arch.SMALL_ENCODER), decoder_config=dict(decoder_config),
        encoder_valid_num_quantizers=CODEBOOKS, decode_upsample_rate=SAMPLES_PER_FRAME,
        encode_downsample_rate=SAMPLES_PER_FRAME)
    config.architectures = ["Qwen3TTSTokenizerV2Model"]
    model = Qwen3TTSTokenizerV2Model(config).eval()
    randomize_speech_decoder(model.decoder)
    return model


def build_tiny_checkpoint(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny checkpoint to `out_dir` and return its path."""
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration, Qwen3TTSProcessor
    from transformers import EncodecFeatureExtractor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = build_text_tokenizer()
    talker = dict(arch.TINY_TALKER, text_vocab_size=len(tokenizer))
    config = Qwen3TTSConfig(
        talker_config=talker, speaker_encoder_config={}, tokenizer_type="qwen3_tts_tokenizer_12hz",
        tts_model_size="0b6", tts_model_type="custom_voice", **special_text_ids(tokenizer))
    config.architectures = ["Qwen3TTSForConditionalGeneration"]
    model = Qwen3TTSForConditionalGeneration(config).eval()
    with torch.no_grad():
        # HF's init gives the text path outputs ~100x smaller than the codec embeddings, so the
        # generated codes would not depend on the text at all and text-streaming tests would pass
        # vacuously. Give the text track the same weight as the codec track.
        model.talker.model.text_embedding.weight.normal_(0.0, 0.1)
        for layer in (model.talker.text_projection.linear_fc1, model.talker.text_projection.linear_fc2):
            layer.reset_parameters()
        # Random weights would stop at a random frame; a zero EOS row makes every utterance run to
        # its frame cap, so lengths are predictable in tests. (EOS handling is tested separately.)
        model.talker.codec_head.weight[arch.CODEC_SPECIAL_IDS["codec_eos_token_id"]].zero_()
    model.save_pretrained(out)
    # Qwen3TTSSpeakerEncoderConfig takes no **kwargs: the 'model_type' that to_dict() writes makes
    # from_pretrained fail, so it is dropped from the saved config.
    config_path = out / "config.json"
    saved = json.loads(config_path.read_text())
    saved["speaker_encoder_config"].pop("model_type", None)
    config_path.write_text(json.dumps(saved, indent=2))
    (out / "generation_config.json").write_text(json.dumps(dict(
        do_sample=True, top_k=50, top_p=1.0, temperature=0.9, repetition_penalty=1.05,
        subtalker_dosample=True, subtalker_top_k=50, subtalker_top_p=1.0, subtalker_temperature=0.9,
        max_new_tokens=8192), indent=2))
    Qwen3TTSProcessor(tokenizer=tokenizer).save_pretrained(out)

    speech_tokenizer = build_speech_tokenizer(arch.TINY_DECODER, seed=seed)
    speech_dir = out / "speech_tokenizer"
    speech_tokenizer.save_pretrained(speech_dir)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=DECODER_RATE).save_pretrained(speech_dir)
    (out / "TINY_TEST_CHECKPOINT").write_text(
        "Random weights built by tts_engine.tiny_checkpoint: a test voice, not speech.\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = build_tiny_checkpoint(args.out_dir, seed=args.seed)
    print(f"tiny Qwen3-TTS checkpoint written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
