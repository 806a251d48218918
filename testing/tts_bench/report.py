"""The benchmark's printed report: a few aligned tables built from the results dictionary."""

from __future__ import annotations

from .compare import sentence


def _f(value, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{unit}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
            for row in rows]


# --precision NAME -> (EngineConfig.dtype, .quantize, .codec_dtype); auto: what the engine picks here
PRECISIONS = {"fp32": ("float32", "none", "float32"), "bf16": ("bfloat16", "none", "bfloat16"),
              "int8": ("float32", "int8", "float32"), "int8+bf16codec": ("float32", "int8", "bfloat16"),
              "auto": (None, "auto", None)}


def format_precision_summary(variants: list[dict]) -> str:
    """One row per (precision, stream count): per-frame split (1 stream, eager), first packet, RTF,
    underruns; then the package's generate (fp32 variant) timed like for like."""
    rows = [["precision", "streams", "talker ms", "predictor ms", "codec ms", "total ms", "TTFP p50 ms",
             "RTF/stream", "underruns", "load avg"]]
    package: list[dict] = []
    for res in variants:
        cfg, split = res["config"], res["frame_split_ms"]
        name = cfg.get("precision") or cfg["dtype"]
        for s in res["streams"]:
            one = s["streams"] == 1
            rows.append([name, str(s["streams"]),
                         *(_f(split[k]["mean"]) if one else "" for k in ("talker", "predictor", "codec", "total")),
                         _f(s["ttfp_ms"]["p50"], 0), _f(s["rtf_stream"]["mean"], 2),
                         f"{s['underruns']}/{s['packets']}", str(cfg["machine"].get("load_avg_end"))])
        if res.get("baseline") and not package:
            package = [c for c in res["comparisons"] if c.get("package_ms") is not None
                       and c["key"] in ("generate", "generate_steady", "codec_vs_default", "codec_vs_whole")]
    lines = ["", "side by side (per-frame split: 1 stream, eager, mean; RTF = wall / audio per stream):"]
    lines += _table(rows)
    for c in package:  # talker + predictor above is the engine's side of "generate, steady state"
        lines.append(f"qwen-tts package, {c['title']}: {_f(c['package_ms'], 1)} {c['unit']} "
                     f"(engine fp32 {_f(c['engine_ms'], 1)}); package side: {c['package_includes']}")
    return "\n".join(lines)


def format_report(res: dict) -> str:
    cfg, model = res["config"], res["model"]
    lines = [f"Qwen3-TTS engine benchmark: {model['name']} on {cfg['device']} ({cfg['dtype']}), "
             f"{cfg['threads']} torch thread(s), {cfg['frames']} frames per stream, {cfg['runs']} runs",
             *_machine_lines(cfg.get("machine")),
             f"model load: {_f(model['load_s'], 2)} s"
             + (f" (+ tiny checkpoint build {_f(model['build_s'], 2)} s)" if model.get("build_s") else ""), ""]
    rows = [["streams", "TTFP p50 ms", "TTFP p95 ms", "RTF/stream", "RTF throughput", "underruns"]]
    for s in res["streams"]:
        rows.append([str(s["streams"]), _f(s["ttfp_ms"]["p50"]), _f(s["ttfp_ms"]["p95"]),
                     _f(s["rtf_stream"]["mean"], 3), _f(s["rtf_throughput"], 3),
                     f"{s['underruns']}/{s['packets']} ({100 * s['underrun_rate']:.1f}%)"])
    lines += _table(rows) + [""]
    split = res["frame_split_ms"]
    rows = [["per frame (1 stream, eager)", "mean ms", "p50 ms", "p95 ms"]]
    for name in ("talker", "predictor", "codec", "total"):
        rows.append([name, _f(split[name]["mean"], 2), _f(split[name]["p50"], 2), _f(split[name]["p95"], 2)])
    if "prefill" in split:
        rows.append([f"prefill, once per utterance ({split['prompt_tokens']} tokens)", _f(split["prefill"]["mean"], 2),
                     _f(split["prefill"]["p50"], 2), _f(split["prefill"]["p95"], 2)])
    lines += _table(rows)
    lines.append(f"real-time budget per frame: 80 ms; eager single-stream total = "
                 f"{_f(split['total']['mean'] / 80.0, 2)}x real time")
    if res.get("peak_gpu_mem_bytes") is not None:
        lines.append(f"peak GPU memory (engine): {res['peak_gpu_mem_bytes'] / 2**20:.0f} MiB")
    base = res.get("baseline")
    if base:
        lines += ["", f"qwen-tts package baseline (same model, same device, same text, {cfg['frames']} frames; "
                  f"prompt {base.get('prompt_tokens', '?')} tokens in the package, "
                  f"{split.get('prompt_tokens', '?')} in the engine)"]
        rows = [["comparison", "unit", "engine", "package", "engine/package", "package/engine"]]
        for c in res["comparisons"]:
            rows.append([c["title"], c["unit"], _f(c["engine_ms"], 2), _f(c["package_ms"], 2),
                         _f(c["engine_over_package"], 3), _f(c["package_over_engine"], 3)])
        lines += _table(rows) + ["", "in words:"]
        lines += [f"  {sentence(c)}" for c in res["comparisons"]]
        lines += ["", "what each side includes (F = frames per utterance):"]
        for c in res["comparisons"]:
            lines += [f"  {c['title']}", f"    engine:  {c['engine_includes']}", f"    package: {c['package_includes']}"]
        if base.get("peak_gpu_mem_bytes") is not None:
            lines.append(f"peak GPU memory (package path): {base['peak_gpu_mem_bytes'] / 2**20:.0f} MiB")
    return "\n".join(lines)


def _machine_lines(machine: dict | None) -> list[str]:
    if not machine:
        return []
    flags = machine.get("cpu_flags") or {}
    have = [name for name, on in flags.items() if on]
    load = machine.get("load_avg_start")
    end = machine.get("load_avg_end")
    return [f"machine: {machine.get('cpu_model')}, {machine.get('cpus_usable') or machine.get('cpu_count')} CPUs, "
            f"flags: {' '.join(have) or '-'}; torch {machine.get('torch')} "
            f"(CPU kernels {machine.get('torch_cpu_capability')}), {machine.get('torch_threads')} thread(s)"
            + (f"; GPU {machine['cuda_device']}" if machine.get("cuda_device") else ""),
            f"load average (1/5/15 min): {load} at start, {end} at end; nice {machine.get('nice')}"]
