"""Synthetic harness results in the shared schemas (edge.bench.trial/1, edge.manifest/1, edge.eval/1).

The claims, report and check tests judge these instead of timing real runs: verdict logic must be tested on
exact, known numbers, and real timings on a shared 2-core machine are not exact. Each record follows the
schema in the project's shared contract, so the same code reads the harness's real output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge._io import append_jsonl, write_json

HOST = {"id": "host", "kind": "host", "name": "host (Synthetic x86 CPU)",
        "fingerprint": {"cpu_model": "Synthetic x86 CPU", "usable_cpus": 2, "logical_cpus": 2, "machine": "x86_64",
                        "os": "Linux-6.1-x86_64", "versions": {"onnxruntime": "1.31.1", "ai_edge_litert": "2.3.0"}}}
IPHONE = {"id": "ssh://mac-mini", "kind": "ssh", "name": "iPhone 12",
          "fingerprint": {"model": "iPhone13,2", "os": "iOS 16.0"}}
PIXEL = {"id": "adb:PIXEL7", "kind": "adb", "name": "Pixel 7",
         "fingerprint": {"model": "Pixel 7", "soc": "Tensor G2", "abi": "arm64-v8a"}}


def trial(model: str | None, median_ms: float, *, k: int = 0, target: str = "tflite", precision: str = "fp32",
          device: dict[str, Any] = HOST, threads: int = 1, runs: int = 40, spread: float = 0.02,
          run_id: str = "run-1", seed: int = 0, artifact: str | None = None, samples: bool = True,
          timestamp: str = "2026-11-25T12:00:00+00:00") -> dict[str, Any]:
    """One trial record whose samples have the given median (log-normal, ``spread`` relative sd)."""
    rng = np.random.default_rng(seed * 1000 + k)
    s = median_ms * np.exp(rng.normal(0.0, spread, size=runs))
    s = s * (median_ms / float(np.median(s)))
    trimmed = float(np.mean(np.sort(s)[runs // 10:runs - runs // 10]))
    runtime = {"tflite": "litert", "onnx": "onnxruntime", "coreml": "coreml"}[target]
    art = artifact or f"out/{model}/{target}-{precision}/model.{ {'coreml': 'mlpackage'}.get(target, target)}"
    return {
        "schema": "edge.bench.trial/1", "run_id": run_id, "trial": k, "artifact": art,
        "artifact_sha256": f"sha-{model}-{target}-{precision}", "model": model, "target": target,
        "precision": precision, "device": device, "runtime": runtime,
        "delegate": "xnnpack" if target == "tflite" else None, "threads": threads, "cores": None,
        "runs": runs, "warmup": 5,
        "latency_ms": {"median": float(np.median(s)), "p10": float(np.percentile(s, 10)),
                       "p90": float(np.percentile(s, 90)), "trimmed_mean": trimmed,
                       "min": float(s.min()), "max": float(s.max()), "mean": float(s.mean()), "std": float(s.std()),
                       "first": float(s[0] * 1.5), "init": 12.0},
        "samples_ms": [float(x) for x in s] if samples else [],
        "peak_memory_mb": 40.0, "delegate_coverage": None, "temperature_c": None, "max_freq_khz": None,
        "op_profile": None, "timestamp": timestamp,
    }


def write_trials(path: Path, model: str, medians: list[float], **kw: Any) -> Path:
    for k, m in enumerate(medians):
        append_jsonl(path, trial(model, m, k=k, **kw))
    return path


def manifest(model: str, target: str = "tflite", precision: str = "fp32", *, size_bytes: int = 5_000_000,
             sqnr_db: float | None = 35.0, top1_agree: float = 1.0, ops: dict[str, int] | None = None,
             passed: bool = True) -> dict[str, Any]:
    ops = ops or {"CONV_2D": 40, "RESHAPE": 2, "TRANSPOSE": 0}
    quant = None
    if precision.startswith("int8") or precision == "w8a16":
        quant = {"mode": precision, "calibration": {"images": 32},
                 "fidelity": {"sqnr_db": sqnr_db, "top1_agree": top1_agree}, "recommended_runtime": target}
    return {
        "schema": "edge.manifest/1", "model": model, "family": model.split("-")[0], "variant_options": {},
        "checkpoint": None, "activations": "synthetic", "target": target, "precision": precision,
        "artifact": {"file": {"tflite": "model.tflite", "onnx": "model.onnx", "coreml": "model.mlpackage"}[target],
                     "sha256": f"sha-{model}-{target}-{precision}", "size_bytes": size_bytes},
        "inputs": [{"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32", "layout": "NCHW",
                    "quantization": None}],
        "outputs": [{"name": "logits", "shape": [1, 1000], "dtype": "float32", "layout": "NC", "quantization": None}],
        "preprocess": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize": 256,
                       "crop_pct": 0.875, "interpolation": "bilinear"},
        "img_size": 224, "channels_last": False,
        "tools": {"torch": "2.13.0", "ai_edge_litert": "2.3.0", "onnxruntime": "1.31.1", "coremltools": "9.0"},
        "ops": {"histogram": ops, "total": sum(ops.values()),
                "layout": {"transpose": ops.get("TRANSPOSE", 0), "reshape": ops.get("RESHAPE", 0)}},
        "numerics": {"passed": passed, "runtime": "litert", "thresholds": {},
                     "outputs": {"logits": {"max_abs": 1e-4, "max_rel": 1e-3, "cosine": 0.9999,
                                            "sqnr_db": sqnr_db, "top1_agree": top1_agree, "top5_agree": 1.0}},
                     "failures": [] if passed else ["logits: cosine 0.2 < 0.999"]},
        "quantization": quant, "status": "ok" if passed else "failed-numerics",
        "stage_seconds": {"trace": 1.0, "convert": 2.0, "verify": 0.5, "write": 0.1},
        "created": "2026-11-25T12:00:00+00:00",
    }


def write_manifest(root: Path, model: str, target: str = "tflite", precision: str = "fp32", **kw: Any) -> Path:
    d = root / model / f"{target}-{precision}"
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "manifest.json", manifest(model, target, precision, **kw))
    return d
