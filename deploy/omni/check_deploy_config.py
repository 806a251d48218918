"""Load deploy configs with the pinned vLLM-Omni's own loader, on a machine without a GPU.

Run it with the interpreter of the check environment (deploy/omni/check_venv.sh builds it: vllm-omni
without its dependencies, plus omegaconf), from anywhere:

    .venv-omni-check/bin/python deploy/omni/check_deploy_config.py deploy/omni/qwen3_omni_thinker_only.yaml

vllm_omni/config/stage_config.py imports vLLM's scheduler classes at module level (vLLM needs CUDA
torch) and uses nothing of them but their dotted names while it merges a deploy config; the Qwen3-Omni
pipeline module imports transformers' config class for a resolver decorator; the package __init__
files import the whole serving stack. Those imports get stand-ins with the same dotted names, and the
__init__ files are skipped. What reads the YAML is the release's own code: load_deploy_config (with
base_config overlays), the OMNI_PIPELINES entry the `pipeline:` key names, merge_pipeline_deploy (with
the CUDA platform's overrides, as on the GPU machine) and StageConfig.to_omegaconf.

Prints one JSON object per file; --release-facts adds one about the release itself (its bundled
Qwen3-Omni default and the `vllm serve` flags start_all uses).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import sys
import types
from pathlib import Path
from typing import Any

SERVE_FLAGS = ("--omni", "--deploy-config", "--stage-init-timeout", "--init-timeout")


def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def install_stand_ins(package_dir: Path) -> None:
    """Packages whose __init__ is not run (their submodules load from the release's files) and
    stand-ins for the imports that need vLLM, torch or fastapi."""
    for name in ("vllm_omni", "vllm_omni.config", "vllm_omni.core", "vllm_omni.core.sched",
                 "vllm_omni.model_executor", "vllm_omni.model_executor.models",
                 "vllm_omni.model_executor.models.qwen3_omni"):
        _module(name, __path__=[str(package_dir.joinpath(*name.split(".")[1:]))])
    for name in ("vllm", "vllm.v1", "vllm.v1.core", "vllm.v1.core.sched"):
        _module(name, __path__=[])
    scheduler = type("Scheduler", (), {"__module__": "vllm.v1.core.sched.scheduler"})
    _module("vllm.logger", init_logger=logging.getLogger)
    _module("vllm.v1.core.sched.scheduler", Scheduler=scheduler)
    ar = "vllm_omni.core.sched.omni_ar_scheduler"
    ar_sync = type("OmniARScheduler", (scheduler,), {"__module__": ar})
    _module(ar, OmniARScheduler=ar_sync,
            OmniARAsyncScheduler=type("OmniARAsyncScheduler", (ar_sync,), {"__module__": ar}))
    gen = "vllm_omni.core.sched.omni_generation_scheduler"
    _module(gen, OmniGenerationScheduler=type("OmniGenerationScheduler", (scheduler,), {"__module__": gen}))
    capability = type("OmniServingCapability", (), {"COMPLETIONS": "/v1/completions", "IMAGE_EDITS": "/v1/images/edits"})
    _module("vllm_omni.config.endpoint_policy", OmniServingCapability=capability,
            EndpointRestriction=lambda capability, reason: (capability, reason))
    pretrained = type("PretrainedConfig", (), {})
    _module("transformers", PretrainedConfig=pretrained,
            Qwen3OmniMoeConfig=type("Qwen3OmniMoeConfig", (pretrained,), {}))
    # what merge_pipeline_deploy asks for the platform overrides: the GPU machine's
    _module("vllm_omni.platforms", current_omni_platform=types.SimpleNamespace(device_name="cuda"))


def registered_pipeline(package_dir: Path, key: str) -> Any:
    """The PipelineConfig OMNI_PIPELINES maps `key` to, read from the registry's source (importing the
    registry would import every model's pipeline module)."""
    tree = ast.parse((package_dir / "config" / "pipeline_registry.py").read_text())
    imported = {alias.asname or alias.name: node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    for node in ast.walk(tree):
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(target, ast.Name) \
                and target.id == "OMNI_PIPELINES" and isinstance(node.value, ast.Dict):
            for k, v in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == key:
                    if not isinstance(v, ast.Name) or v.id not in imported:
                        raise SystemExit(f"OMNI_PIPELINES[{key!r}] is not an imported PipelineConfig")
                    return getattr(importlib.import_module(imported[v.id]), v.id)
    raise SystemExit(f"pipeline {key!r} is not registered in this vLLM-Omni's OMNI_PIPELINES")


def load(path: Path, package_dir: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf
    from vllm_omni.config import stage_config as sc

    deploy = sc.load_deploy_config(path)
    if not deploy.pipeline:
        raise SystemExit(f"{path}: no `pipeline:` key, so vLLM-Omni would pick the model's default topology")
    pipeline = registered_pipeline(package_dir, deploy.pipeline)
    stages = sc.merge_pipeline_deploy(pipeline, deploy)
    extras = {s.stage_id: sorted(s.engine_extras) for s in deploy.stages}
    # the serving path rejects a stage engine argument no structured stage config declares
    # (omni_config._validate_stage_engine_override_ownership): the untyped ones must be declared there
    declared = {n.target.id for n in ast.walk(ast.parse((package_dir / "config" / "omni_config.py").read_text()))
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    out: dict[str, Any] = {"file": str(path), "pipeline": pipeline.model_type, "async_chunk": deploy.async_chunk,
                           "stages": []}
    for stage in stages:
        resolved = OmegaConf.to_container(stage.to_omegaconf(), resolve=True)
        out["stages"].append({"stage_id": stage.stage_id, "model_stage": stage.model_stage,
                              "final_output": stage.final_output, "final_output_type": stage.final_output_type,
                              "input_sources": list(stage.input_sources), "scheduler_cls": stage.scheduler_cls,
                              "engine_args": resolved["engine_args"], "runtime": resolved["runtime"],
                              "default_sampling_params": resolved.get("default_sampling_params"),
                              "untyped_engine_args": {name: name in declared for name in extras.get(stage.stage_id, [])}})
    return out


def release_facts(package_dir: Path) -> dict[str, Any]:
    from vllm_omni.config import stage_config as sc

    default = sc.load_deploy_config(package_dir / "deploy" / "qwen3_omni_moe.yaml")
    serve = ast.parse((package_dir / "entrypoints" / "cli" / "serve.py").read_text())
    flags = {n.args[0].value for n in ast.walk(serve) if isinstance(n, ast.Call) and n.args
             and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument"
             and isinstance(n.args[0], ast.Constant)}
    return {"vllm_omni_version": importlib.metadata.version("vllm-omni"),
            "qwen3_omni_default": [{"stage_id": s.stage_id, "devices": s.devices,
                                    "gpu_memory_utilization": s.gpu_memory_utilization} for s in default.stages],
            "serve_flags": {flag: flag in flags for flag in SERVE_FLAGS}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="*", type=Path)
    ap.add_argument("--release-facts", action="store_true")
    a = ap.parse_args()
    spec = importlib.util.find_spec("vllm_omni")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("vllm_omni is not installed in this interpreter: run deploy/omni/check_venv.sh")
    package_dir = Path(list(spec.submodule_search_locations)[0])
    install_stand_ins(package_dir)
    if a.release_facts:
        print(json.dumps({"release": release_facts(package_dir)}, default=str))
    for path in a.configs:
        print(json.dumps(load(path.resolve(), package_dir), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
