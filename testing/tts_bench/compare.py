"""Engine vs package, like for like: each comparison names what each side's time includes, and
gives the ratio both ways (engine/package and package/engine), so no figure needs a footnote."""

from __future__ import annotations

from .common import ratio

# (key, title, unit, engine side includes, package side includes); {F} is the frame count,
# {chunk} / {ctx} the package's chunked_decode defaults
COMPARISONS = (
    ("generate", "generate, end to end (prefill in both)", "ms/frame",
     "prompt build + prefill + F x (15-codebook predictor + talker step), step functions, eager; / F",
     "generate() for F frames: input building + prefill + F x (predictor generate + talker step); / F"),
    ("generate_steady", "generate, steady state (prefill out of both)", "ms/frame",
     "mean of one 15-codebook predictor + one talker step",
     "generate() minus its prefill (call start -> end of the first talker forward), / F"),
    ("prefill", "prefill alone", "ms",
     "prompt build + one talker forward over the prompt (no prefix cache)",
     "call start -> end of the first talker forward (input building, HF set-up, the forward)"),
    ("codec_vs_default", "codec vs the package's default decode", "ms/frame",
     "stateful decoder step, 1 frame -> 1920 samples (exact)",
     "chunked_decode(chunk_size={chunk}, left_context_size={ctx}) as generate_custom_voice decodes: "
     "{chunks} chunk(s) for F frames; / F"),
    ("codec_vs_whole", "codec vs whole-utterance decode", "ms/frame",
     "stateful decoder step, 1 frame -> 1920 samples (exact)",
     "decoder(codes) over all F frames at once (not streamable); / F"),
    ("codec_vs_windowed", "codec vs windowed decode, this utterance", "ms/frame",
     "stateful decoder step, 1 frame -> 1920 samples (exact)",
     "per new frame, decode it again with up to {ctx} frames of left context (approximate); mean over F"),
    ("codec_vs_windowed_steady", "codec vs windowed decode, 26-frame window", "ms/frame",
     "stateful decoder step, 1 frame -> 1920 samples (exact)",
     "one new frame + {ctx} frames of context, as every frame past the {ctx}th costs"),
    ("text_to_audio", "text to all audio, one utterance", "ms",
     "public API, 1 stream: open_stream -> last 20 ms packet (prefill with the prefix cache, generate, "
     "stateful decode, packetizing), p50",
     "generate() for F frames + the default chunked decode, medians added"),
)


def comparisons(split: dict, base: dict, streams: list[dict], frames: int) -> list[dict]:
    """One dict per comparison: engine_ms, package_ms, both ratios and what each side includes."""
    talker, predictor, codec = (split[name]["mean"] for name in ("talker", "predictor", "codec"))
    engine_prefill = split["prefill"]["p50"]
    one = next((s for s in streams if s["streams"] == 1), None)
    chunk = base.get("codec_default_args", {})
    package_text_to_audio = None
    if base.get("generate_total_ms") is not None and base.get("codec_default_ms_per_frame") is not None:
        package_text_to_audio = base["generate_total_ms"] + base["codec_default_ms_per_frame"] * frames
    values = {
        "generate": ((engine_prefill + frames * (talker + predictor)) / frames, base.get("generate_ms_per_frame")),
        "generate_steady": (talker + predictor, base.get("generate_steady_ms_per_frame")),
        "prefill": (engine_prefill, base.get("prefill_ms")),
        "codec_vs_default": (codec, base.get("codec_default_ms_per_frame")),
        "codec_vs_whole": (codec, base.get("codec_whole_ms_per_frame")),
        "codec_vs_windowed": (codec, base.get("codec_windowed_ms_per_frame")),
        "codec_vs_windowed_steady": (codec, base.get("codec_windowed_steady_ms_per_frame")),
        "text_to_audio": (one["wall_ms"]["p50"] if one else None, package_text_to_audio),
    }
    fill = {"chunk": chunk.get("chunk_size", "?"), "ctx": chunk.get("left_context_size", 25),
            "chunks": chunk.get("chunks", "?")}
    out = []
    for key, title, unit, engine_inc, package_inc in COMPARISONS:
        engine_ms, package_ms = values[key]
        out.append({"key": key, "title": title, "unit": unit, "frames": frames,
                    "engine_includes": engine_inc.format(**fill), "package_includes": package_inc.format(**fill),
                    "engine_ms": engine_ms, "package_ms": package_ms,
                    "engine_over_package": ratio(engine_ms, package_ms),
                    "package_over_engine": ratio(package_ms, engine_ms)})
    return out


def sentence(c: dict) -> str:
    """'engine X = r x the package's Y (package = 1/r x engine)', in the comparison's unit."""
    if c["engine_over_package"] is None:
        return f"{c['title']}: not measured"
    unit = c["unit"]
    return (f"{c['title']}: engine {c['engine_ms']:.2f} {unit} = {c['engine_over_package']:.3f}x the package's "
            f"{c['package_ms']:.2f} {unit}; package = {c['package_over_engine']:.3f}x the engine")
