"""The benchmark's printed report: a few aligned tables built from the results dictionary."""

from __future__ import annotations


def _f(value, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{unit}"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
            for row in rows]


def format_report(res: dict) -> str:
    cfg, model = res["config"], res["model"]
    lines = [f"Qwen3-TTS engine benchmark: {model['name']} on {cfg['device']} ({cfg['dtype']}), "
             f"{cfg['threads']} torch thread(s), {cfg['frames']} frames per stream, {cfg['runs']} runs",
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
    lines += _table(rows)
    lines.append(f"real-time budget per frame: 80 ms; eager single-stream total = "
                 f"{_f(split['total']['mean'] / 80.0, 2)}x real time")
    if res.get("peak_gpu_mem_bytes") is not None:
        lines.append(f"peak GPU memory (engine): {res['peak_gpu_mem_bytes'] / 2**20:.0f} MiB")
    base = res.get("baseline")
    if base:
        ratios = res["ratios"]
        lines += ["", "qwen-tts package baseline (same model, same device)"]
        rows = [["per frame", "engine ms", "package ms", "engine/package"],
                ["generate (talker+predictor)", _f(split["talker"]["mean"] + split["predictor"]["mean"], 2),
                 _f(base["generate_ms_per_frame"], 2), _f(ratios["generate"], 3)],
                ["codec vs windowed (this utterance)", _f(split["codec"]["mean"], 2),
                 _f(base["codec_windowed_ms_per_frame"], 2), _f(ratios["codec_vs_windowed"], 3)],
                ["codec vs windowed (26-frame window)", _f(split["codec"]["mean"], 2),
                 _f(base["codec_windowed_steady_ms_per_frame"], 2), _f(ratios["codec_vs_windowed_steady"], 3)],
                ["codec vs whole-utterance decode", _f(split["codec"]["mean"], 2),
                 _f(base["codec_whole_ms_per_frame"], 2), _f(ratios["codec_vs_whole"], 3)]]
        lines += _table(rows)
        if base.get("peak_gpu_mem_bytes") is not None:
            lines.append(f"peak GPU memory (package path): {base['peak_gpu_mem_bytes'] / 2**20:.0f} MiB")
    return "\n".join(lines)
