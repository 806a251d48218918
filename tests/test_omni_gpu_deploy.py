"""vLLM-Omni beside the TTS engine on one GPU (deploy/omni, docs/omni-on-one-gpu.md), checked without one.

- the memory arithmetic of deploy/omni/gpu_split.py and footprint.py: thinker weights per variant,
  KV cache per token, the TTS engine's footprint (against the H200 measurement), the split on L40S /
  H100 / H200-sized GPUs, the error that names what to change;
- scripts/start_all.sh omni-plan (the dry path) against a fake nvidia-smi and a fake vLLM-Omni install;
- slow: the deploy config (and start_all's overlay) loaded with the pinned vLLM-Omni's own loader in
  .venv-omni-check; start_all start on the vLLM-Omni path end to end (agent first, the TTS share
  measured, vLLM-Omni - a fake server - started with the rest), and its failure when the rest is too
  small, which stops the agent it started.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deploy.omni import footprint as fp
from deploy.omni import gpu_split as gs
from testing.ports import free_port

ROOT = Path(__file__).resolve().parents[1]

START_ALL = ROOT / "scripts" / "start_all.sh"
DEPLOY_YAML = ROOT / "deploy" / "omni" / "qwen3_omni_thinker_only.yaml"
CHECK_VENV = ROOT / ".venv-omni-check"

# What the TTS engine held on an H200 (bf16, 16 streams, max_context 2048, idle after loading):
# free memory before -> after, MiB (docs/omni-on-one-gpu.md)
H200_TTS_MIB = {"0.6b": 8494, "1.7b": 9200}


# ---- the arithmetic ---------------------------------------------------------------------------------


def official_config() -> dict:
    """The fields of Qwen3-Omni-30B-A3B-Instruct's config.json the arithmetic reads."""
    text = {"num_hidden_layers": 48, "hidden_size": 2048, "num_attention_heads": 32, "num_key_value_heads": 4,
            "head_dim": 128, "num_experts": 128, "moe_intermediate_size": 768, "vocab_size": 151936,
            "tie_word_embeddings": False}
    audio = {"encoder_layers": 32, "d_model": 1280, "encoder_ffn_dim": 5120}
    return {"architectures": ["Qwen3OmniMoeForConditionalGeneration"],
            "thinker_config": {"text_config": text, "audio_config": audio}}


def test_thinker_shape_and_weights_per_variant():
    shape = fp.ThinkerShape.from_config(official_config())
    assert shape == fp.ThinkerShape()
    # the text model alone is Qwen3-30B-A3B's 30.53 B parameters; the audio encoder adds ~0.65 B
    text = shape.quantized_params + 2 * shape.vocab * shape.hidden + shape.layers * shape.hidden * shape.experts
    assert abs(text - 30.532e9) < 0.01e9
    assert abs(shape.full_precision_params - 1.282e9) < 0.01e9
    gib = {bits: shape.weight_bytes(bits) / fp.GIB for bits in (16, 8, 4)}
    assert gib[16] == pytest.approx(58.1, abs=0.1)
    assert gib[8] == pytest.approx(30.2, abs=0.1)
    assert gib[4] == pytest.approx(17.2, abs=0.1)
    assert shape.kv_bytes_per_token() == 96 * 1024  # 48 layers x (K, V) x 4 heads x 128 x bf16
    assert fp.ThinkerShape.from_config({"thinker_config": {"text_config": {"num_hidden_layers": 24}}}).layers == 24


@pytest.mark.parametrize("cfg,quantization,bits", [
    (official_config(), None, 16),
    (None, None, None),  # config.json not here: unknown
    (None, "fp8", 8),  # vLLM's online FP8 of the thinker's language model
    ({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}, None, 4),
    ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, None, 4),
    ({"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {
        "group_0": {"weights": {"num_bits": 4, "type": "int", "group_size": 32}}}}}, None, 4),
    ({"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {
        "group_0": {"weights": {"num_bits": 8, "type": "float"}}}}}, None, 8),
    ({"quantization_config": {"quant_method": "modelopt", "quant_algo": "FP8"}}, None, 8),
    ({"quantization_config": {"quant_method": "modelopt_fp4", "quant_algo": "NVFP4"}}, None, 4),
    ({"thinker_config": {"quantization_config": {"quant_method": "fp8"}}}, None, 8),
    ({"quantization_config": {"quant_method": "mystery"}}, None, None),
])
def test_weight_bits_read_from_the_checkpoint(cfg, quantization, bits):
    assert fp.weight_bits(cfg, quantization) == bits


def test_tts_engine_estimate_matches_the_h200_measurement():
    assert fp.TTS_KV_BYTES_PER_TOKEN == 112 * 1024
    # the engine's own stats() on the H200: kv_cache_bytes of 16 streams + the scratch slot
    assert 17 * 2048 * fp.TTS_KV_BYTES_PER_TOKEN == 3_992_977_408
    for size, measured in H200_TTS_MIB.items():
        estimate = fp.tts_engine_bytes(size, 16) / fp.MIB
        assert measured <= estimate <= measured * 1.15, (size, estimate)  # never below what was measured
    # 4 streams instead of 16: 12 slots x 2048 tokens x 112 KiB less
    assert (fp.tts_engine_bytes("0.6b", 16) - fp.tts_engine_bytes("0.6b", 4)) / fp.MIB == pytest.approx(
        12 * 224 + 12 * fp.TTS_CODEC_STATE_MIB_PER_SLOT)
    assert fp.tts_engine_bytes("0.6b", 16, dtype_bytes=4) > fp.tts_engine_bytes("0.6b", 16) + 5 * fp.GIB


def test_tts_size_from_the_checkpoint(tmp_path):
    for hidden, size in ((1024, "0.6b"), (2048, "1.7b")):
        folder = tmp_path / size
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"talker_config": {"hidden_size": hidden}}))
        assert fp.tts_size(str(folder), None) == size
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "TINY_TEST_CHECKPOINT").write_text("")
    assert fp.tts_size(str(tmp_path / "tiny"), None) == "tiny"
    assert fp.tts_size(None, "1.7b") == "1.7b"
    assert fp.tts_size("Some/not-cached-model", None) is None  # offline (conftest): nothing to read


def test_find_config_reads_the_hugging_face_cache(tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--Org--Omni-AWQ"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text(
        json.dumps({"quantization_config": {"quant_method": "awq", "bits": 4}}))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert fp.weight_bits(fp.find_config("Org/Omni-AWQ"), None) == 4
    assert fp.find_config("Org/not-there") is None  # HF_HUB_OFFLINE=1: the hub is not asked
    assert fp.find_config(str(tmp_path / "no-such-folder")) is None


def split(total: int, free_after: int, tts: int, bits: int | None, **kw) -> gs.Split:
    return gs.Split(gpu=gs.GpuMemory("GPU", total, free_after + tts), tts_mib=tts, tts_how="measured: test",
                    free_after_tts_mib=free_after, margin_mib=kw.get("margin_mib", 2048),
                    max_model_len=kw.get("max_model_len", 8192), bits=bits, shape=fp.ThinkerShape())


# (GPU as CUDA sees it, MiB: total, free with the 0.6B engine loaded) -> which thinker variants fit
GPUS = {"L40S 48 GB": (45_590, 36_590), "H100 80 GB": (81_090, 72_090), "H200 141 GB": (143_155, 134_661)}


@pytest.mark.parametrize("gpu,bits,fits", [
    ("L40S 48 GB", 16, False), ("L40S 48 GB", 8, True), ("L40S 48 GB", 4, True),
    ("H100 80 GB", 16, True), ("H100 80 GB", 8, True), ("H200 141 GB", 16, True),
])
def test_split_per_gpu(gpu, bits, fits):
    total, free_after = GPUS[gpu]
    s = split(total, free_after, H200_TTS_MIB["0.6b"], bits)
    assert s.fits is fits
    # the fraction hands vLLM at most what is left minus the margin, and misses it by < 1e-4 of the GPU
    budget = s.utilization * total
    assert free_after - 2048 - total * 1e-4 <= budget <= free_after - 2048
    assert s.vllm_mib == free_after - 2048


def test_split_at_the_edge_and_max_model_len():
    shape = fp.ThinkerShape()
    weights = shape.weight_bytes(8) / fp.MIB
    kv_8k = 8192 * shape.kv_bytes_per_token() / fp.MIB
    edge = int(weights + fp.THINKER_RUNTIME_GIB * 1024 + kv_8k) + 2048 + 1
    assert split(45_000, edge, 8000, 8).fits
    assert not split(45_000, edge - 2, 8000, 8).fits
    assert split(45_000, edge - 2, 8000, 8, max_model_len=4096).fits  # a shorter context fits again
    assert split(45_000, edge + 500, 8000, 8, margin_mib=2600).fits is False  # a larger margin does not
    assert split(45_000, 100, 8000, 8).utilization == 0.0


def test_the_error_points_to_what_fits():
    total, free_after = GPUS["L40S 48 GB"]
    error, fix = gs.problem(split(total, free_after, H200_TTS_MIB["0.6b"], 16))
    assert error.startswith("not enough GPU memory left for the Qwen3-Omni thinker after the TTS engine took 8.3 GiB")
    assert "bf16 weights (~58.1 GiB)" in error and "max_model_len 8192" in error
    for hint in ("OMNI_QUANTIZATION=fp8", "AWQ 4-bit", "OMNI_MAX_MODEL_LEN", "TTS_MAX_STREAMS", "larger GPU"):
        assert hint in fix
    _, fix4 = gs.problem(split(20_000, 15_000, 5000, 4))
    assert "OMNI_QUANTIZATION" not in fix4 and "AWQ" not in fix4 and "OMNI_MAX_MODEL_LEN" in fix4


def test_plan_command_prints_the_split_and_writes_the_overlay(tmp_path, capsys):
    overlay = tmp_path / "omni-deploy.yaml"
    rc = gs.main(["plan", "--gpu-total-mib", "45590", "--gpu-free-mib", "45090", "--gpu-name", "NVIDIA L40S",
                  "--tts-measured-from", "53590", "--quantization", "fp8", "--max-model-len", "4096",
                  "--overlay", str(overlay)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "the TTS engine 8.3 GiB (measured: 52.3 GiB -> 44.0 GiB free)" in out
    util = float(re.search(r"^gpu_memory_utilization=(\S+)$", out, re.M).group(1))
    assert util == pytest.approx((45_090 - 2048) / 45_590, abs=1e-4)
    text = overlay.read_text()
    assert f'base_config: "{DEPLOY_YAML}"' in text and "quantization: fp8" in text
    assert f"gpu_memory_utilization: {util:.4f}" in text and "max_model_len: 4096" in text

    rc = gs.main(["plan", "--gpu-total-mib", "45590", "--gpu-free-mib", "36590", "--tts-device", "cpu",
                  "--model", str(tmp_path)])  # no config.json there: judged as 4-bit, with a note
    out = capsys.readouterr().out
    assert rc == 0 and "weights judged as 4-bit" in out and "TTS_DEVICE=cpu" in out

    folder = tmp_path / "bf16"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(official_config()))
    rc = gs.main(["plan", "--gpu-total-mib", "45590", "--gpu-free-mib", "45090", "--model", str(folder),
                  "--tts-model", "", "--overlay", str(tmp_path / "not-written.yaml")])
    out = capsys.readouterr().out
    assert rc == 2 and "\nerror: not enough GPU memory left for the Qwen3-Omni thinker" in out and "\nfix: " in out
    assert "0.6b (assumed)" in out and not (tmp_path / "not-written.yaml").exists()


def test_versions_and_pins_agree():
    pins = dict(re.findall(r"^([\w-]+)==(\S+)$", (ROOT / "deploy" / "omni" / "requirements.txt").read_text(), re.M))
    assert pins["vllm-omni"] == gs.PINNED_VLLM_OMNI
    assert pins["vllm"].split(".")[:2] == pins["vllm-omni"].split(".")[:2]  # vLLM-Omni X.Y runs on vLLM X.Y
    assert gs.check_version(gs.PINNED_VLLM_OMNI)[0] == 0
    assert gs.check_version("0.32.0rc1")[0] == 1
    assert gs.check_version("0.28.0")[0] == 1
    assert gs.check_version("0.26.0")[0] == 2 and "0.28.0" in gs.check_version("0.26.0")[1]
    assert gs.check_version("0.11.0rc1")[0] == 2
    assert gs.check_version("unknown")[0] == 1


# ---- fakes: a GPU and a vLLM-Omni install --------------------------------------------------------------


def fake_tools(tmp_path: Path, version: str = gs.PINNED_VLLM_OMNI) -> dict[str, str]:
    """A bin folder with a fake nvidia-smi, and an OMNI_VENV whose `vllm serve` answers /v1/models
    and records its command line. The fake GPU reports FAKE_GPU="name,total,free_before,free_after"
    (MiB): free_after once the run's agent has a pid file, as if its TTS engine had loaded."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import os, sys
        name, total, before, after = os.environ["FAKE_GPU"].split(",")
        if "-L" in sys.argv:
            print(f"GPU 0: {{name}} (UUID: GPU-fake)")
            sys.exit(0)
        free = int(after if os.path.exists(os.path.join(os.environ["RUN_DIR"], "pids", "agent.pid")) else before)
        print(f"{{name}}, {{int(total) - free}}, {{free}}")
        """))
    smi.chmod(0o755)
    venv = tmp_path / "omni-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "vllm_omni").mkdir()
    (site / "vllm_omni" / "__init__.py").write_text("")
    dist = site / f"vllm_omni-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm-omni\nVersion: {version}\n")
    vllm = venv / "bin" / "vllm"
    vllm.write_text(textwrap.dedent(f"""\
        #!{venv / "bin" / "python"}
        import http.server, json, os, sys
        args = sys.argv[1:]
        opt = lambda name: args[args.index(name) + 1]
        with open(os.environ["FAKE_VLLM_RECORD"], "w") as f:
            json.dump({{"argv": args, "deploy": open(opt("--deploy-config")).read()}}, f)
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({{"data": [{{"id": args[1]}}]}}).encode()
                self.send_response(200 if self.path == "/v1/models" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        http.server.ThreadingHTTPServer((opt("--host"), int(opt("--port"))), Handler).serve_forever()
        """))
    vllm.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "OMNI_VENV": str(venv),
            "FAKE_VLLM_RECORD": str(tmp_path / "vllm-argv.json")}


@pytest.fixture
def omni_env(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMNI_", "TTS_", "LIVEKIT_", "DIRECT_", "TOKEN_SERVER_", "AGENT_", "CUDA_"))}
    env |= {"RUN_DIR": str(tmp_path / "run"), "TOKEN_SERVER_PORT": str(free_port()),
            "DIRECT_PORT": str(free_port()), "OMNI_LOCAL_PORT": str(free_port()),
            "AGENT_TRACES_DIR": str(tmp_path / "traces"), "AGENT_TRANSPORT": "direct", "TTS_DEVICE": "cpu",
            "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "STOP_TIMEOUT_S": "10",
            "FAKE_GPU": "NVIDIA L40S,45590,45090,36590"}
    env |= fake_tools(tmp_path)
    yield env
    start_all("stop", env, timeout=60)


def start_all(command: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(START_ALL), command], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def bf16_model(tmp_path: Path) -> str:
    folder = tmp_path / "qwen3-omni-bf16"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(official_config()))
    return str(folder)


# ---- start_all's dry path --------------------------------------------------------------------------------


def test_omni_plan_prints_the_split_and_the_command(omni_env):
    omni_env |= {"OMNI_QUANTIZATION": "fp8", "TTS_DEVICE": ""}
    done = start_all("omni-plan", omni_env, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "vLLM-Omni 0.30.0, the pinned release" in out
    assert "the TTS engine 8.3 GiB (estimated: 0.6b (assumed), 16 streams)" in out  # the default voice
    assert "thinker: 8-bit (FP8) weights ~30.2 GiB" in out
    assert f'base_config: "{DEPLOY_YAML}"' in out and "quantization: fp8" in out
    run_dir = omni_env["RUN_DIR"]
    assert (f"{omni_env['OMNI_VENV']}/bin/vllm serve Qwen/Qwen3-Omni-30B-A3B-Instruct --omni --deploy-config "
            f"{run_dir}/omni-deploy.yaml --host 127.0.0.1 --port {omni_env['OMNI_LOCAL_PORT']} "
            f"--stage-init-timeout 1800 --init-timeout 1800") in out
    assert "] started " not in out and not list(Path(run_dir).glob("pids/*.pid"))


def test_omni_plan_on_a_gpu_too_small_names_the_fix(omni_env, tmp_path):
    omni_env |= {"OMNI_MODEL": bf16_model(tmp_path), "TTS_RANDOM_WEIGHTS": "1.7b", "TTS_DEVICE": "cuda"}
    done = start_all("omni-plan", omni_env, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "ERROR: not enough GPU memory left for the Qwen3-Omni thinker after the TTS engine took 10.2 GiB" in out
    assert "fix: use the FP8 variant (OMNI_QUANTIZATION=fp8" in out
    assert "the TTS engine 10.2 GiB (estimated: 1.7b, 16 streams)" in out  # the split is shown too


def test_omni_plan_refuses_a_release_without_the_thinker_only_pipeline(omni_env, tmp_path):
    omni_env |= fake_tools(tmp_path / "old", version="0.14.0")
    done = start_all("omni-plan", omni_env, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "ERROR: vLLM-Omni 0.14.0 is older than 0.28.0" in out
    assert "pip install -r deploy/omni/requirements.txt" in out


def test_omni_plan_needs_a_gpu(omni_env):
    omni_env["PATH"] = ":".join(d for d in omni_env["PATH"].split(":") if not Path(d, "nvidia-smi").exists())
    done = start_all("omni-plan", omni_env, timeout=60)
    assert done.returncode != 0 and "no GPU here" in done.stderr, done.stdout + done.stderr


# ---- slow: the pinned loader, and start_all start on the vLLM-Omni path --------------------------------


@pytest.fixture(scope="module")
def omni_check_python() -> Path:
    """.venv-omni-check: the pinned vLLM-Omni without dependencies + omegaconf (seconds; cached)."""
    done = subprocess.run(["bash", str(ROOT / "deploy" / "omni" / "check_venv.sh"), str(CHECK_VENV)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return CHECK_VENV / "bin" / "python"


def load_with_pinned_loader(python: Path, *configs: Path, facts: bool = False) -> list[dict]:
    args = [str(python), str(ROOT / "deploy" / "omni" / "check_deploy_config.py"), *map(str, configs)]
    done = subprocess.run(args + (["--release-facts"] if facts else []), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.slow
def test_deploy_config_loads_with_the_pinned_loader(omni_check_python, tmp_path):
    facts, loaded = load_with_pinned_loader(omni_check_python, DEPLOY_YAML, facts=True)
    release = facts["release"]
    assert release["vllm_omni_version"] == gs.PINNED_VLLM_OMNI
    assert all(release["serve_flags"].values()), release["serve_flags"]  # the flags start_all passes
    # the release's own Qwen3-Omni default: what the issue describes (thinker on 0, talker + code2wav on 1)
    assert [(s["devices"], s["gpu_memory_utilization"]) for s in release["qwen3_omni_default"]] == [
        ("0", 0.9), ("1", 0.6), ("1", 0.1)]

    assert loaded["pipeline"] == "qwen3_omni_moe_thinker_only" and loaded["async_chunk"] is False
    (stage,) = loaded["stages"]  # one stage: the thinker, text out
    assert (stage["model_stage"], stage["final_output"], stage["final_output_type"]) == ("thinker", True, "text")
    assert stage["input_sources"] == [] and stage["runtime"]["devices"] == "0"
    args = stage["engine_args"]
    assert args["engine_output_type"] == "text" and args["model_arch"] == "Qwen3OmniMoeForConditionalGeneration"
    assert (args["max_model_len"], args["max_num_seqs"], args["enable_prefix_caching"]) == (8192, 8, True)
    assert args["gpu_memory_utilization"] == 0.9  # a GPU of its own; start_all's overlay sets the split
    assert args["limit_mm_per_prompt"] == {"audio": 1, "image": 0, "video": 0}
    assert args["compilation_config"] == {"custom_ops": ["+rotary_embedding"]}  # the CUDA platform override
    assert stage["scheduler_cls"] == "vllm_omni.core.sched.omni_ar_scheduler.OmniARAsyncScheduler"
    # every key is a typed field of the loader, or one the serving path's stage config declares
    assert stage["untyped_engine_args"] == {"limit_mm_per_prompt": True}

    overlay = tmp_path / "omni-deploy.yaml"
    assert gs.main(["plan", "--gpu-total-mib", "81090", "--gpu-free-mib", "72090", "--tts-measured-from", "80584",
                    "--quantization", "fp8", "--max-model-len", "16384", "--overlay", str(overlay)]) == 0
    (merged,) = load_with_pinned_loader(omni_check_python, overlay)
    args = merged["stages"][0]["engine_args"]
    assert args["gpu_memory_utilization"] == pytest.approx((72_090 - 2048) / 81_090, abs=1e-4)
    assert (args["max_model_len"], args["quantization"], args["max_num_seqs"]) == (16384, "fp8", 8)


@pytest.mark.slow
@pytest.mark.system
def test_start_measures_the_tts_engine_then_gives_vllm_omni_the_rest(omni_env, omni_check_python):
    omni_env["OMNI_QUANTIZATION"] = "fp8"
    started = start_all("start", omni_env)
    out = started.stdout + started.stderr
    assert started.returncode == 0, out
    assert "STT + LLM: vllm-omni" in out and "vLLM-Omni 0.30.0, the pinned release" in out
    assert out.index("] started agent") < out.index("] started vllm_omni")  # the engine loads first
    assert "the TTS engine 8.3 GiB (measured: 44.0 GiB -> 35.7 GiB free)" in out
    util = math.floor((36_590 - 2048) / 45_590 * 10_000) / 10_000  # rounded down
    assert f"vLLM-Omni gets 33.7 GiB = gpu_memory_utilization {util:.4f}" in out
    record = json.loads(Path(omni_env["FAKE_VLLM_RECORD"]).read_text())
    run_dir = omni_env["RUN_DIR"]
    assert record["argv"][:5] == ["serve", "Qwen/Qwen3-Omni-30B-A3B-Instruct", "--omni", "--deploy-config",
                                  f"{run_dir}/omni-deploy.yaml"]
    (loaded,) = load_with_pinned_loader(omni_check_python, Path(run_dir) / "omni-deploy.yaml")
    assert loaded["stages"][0]["engine_args"]["gpu_memory_utilization"] == pytest.approx(util, abs=1e-4)
    status = start_all("status", omni_env, timeout=60)
    assert status.returncode == 0 and "vllm_omni" in status.stdout, status.stdout + status.stderr
    stopped = start_all("stop", omni_env, timeout=60)
    assert stopped.returncode == 0 and not list(Path(run_dir).glob("pids/*.pid")), stopped.stdout


@pytest.mark.slow
@pytest.mark.system
def test_start_fails_when_the_tts_engine_leaves_too_little(omni_env, tmp_path):
    # before the engine: room for bf16 weights; with it loaded, 20 GiB free
    omni_env |= {"OMNI_MODEL": bf16_model(tmp_path), "FAKE_GPU": "NVIDIA L40S,81090,80590,20480"}
    started = start_all("start", omni_env)
    out = started.stdout + started.stderr
    assert started.returncode != 0, out
    assert "] started agent" in out and "] started vllm_omni" not in out
    assert "ERROR: not enough GPU memory left for the Qwen3-Omni thinker after the TTS engine took 58.7 GiB" in out
    assert "fix: use the FP8 variant (OMNI_QUANTIZATION=fp8" in out
    assert "start failed: stopping what was started" in out and "stopped agent" in out
    assert not list(Path(omni_env["RUN_DIR"]).glob("pids/*.pid"))
