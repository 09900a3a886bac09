#!/usr/bin/env python3
"""edge's small benchmark runner: time one model file with ONNX Runtime, LiteRT or Core ML; print JSON.

This file stands alone (standard library + numpy + the runtime it is asked for), because ``edge bench
--device ssh://board`` copies it to the board and runs it there with the board's Python. The host device
imports the same ``measure`` function, so host and ssh numbers come from one timing loop.

    python3 runner.py --model model.tflite [--runtime litert|onnxruntime|coreml] [--threads 1]
                      [--delegate xnnpack] [--runs 50] [--warmup 10] [--min-seconds 0] [--cpus 4,5,6,7]
                      [--op-profile DIR]

The last line of stdout is ``EDGE_RUNNER_JSON {...}``: per-inference times in ms, init and first-inference
times, peak memory growth, delegate coverage and an op profile where the runtime offers one. Errors are
the same line with ``{"error": ..., "hint": ...}`` and exit status 2.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import time
from collections import Counter
from typing import Any

MARK = "EDGE_RUNNER_JSON "


class RunnerError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def runtime_for(model: str, runtime: str | None = None) -> str:
    if runtime:
        return runtime
    low = model.lower().rstrip("/")
    if low.endswith(".tflite"):
        return "litert"
    if low.endswith(".onnx"):
        return "onnxruntime"
    if low.endswith((".mlpackage", ".mlmodel", ".mlmodelc")):
        return "coreml"
    raise RunnerError(f"cannot tell the runtime for {os.path.basename(model)}", "pass --runtime")


# ------------------------------------------------------------------------------------------ peak memory
class _PeakRss:
    """Resident-memory growth while the model loads and runs (Linux: VmHWM after a reset; macOS: maxrss)."""

    def __init__(self) -> None:
        self.base_kb = self._status("VmRSS")
        self.reset_ok = False
        if self.base_kb is not None:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS
                self.reset_ok = True
            except OSError:
                pass
        elif sys.platform == "darwin":
            import resource
            self.base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            self.reset_ok = True

    @staticmethod
    def _status(key: str) -> float | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return float(line.split()[1])
        except OSError:
            return None
        return None

    def growth_mb(self) -> float | None:
        if not self.reset_ok or self.base_kb is None:
            return None
        if sys.platform == "darwin":
            import resource
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        else:
            peak = self._status("VmHWM")
        return None if peak is None else max(0.0, (peak - self.base_kb) / 1024.0)


# ----------------------------------------------------------------------------------------------- inputs
def _random_input(shape: list[int], dtype: Any, rng: Any) -> Any:
    import numpy as np
    shape = [int(s) if s and int(s) > 0 else 1 for s in shape]
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dt)
    return np.zeros(shape, dtype=dt)


def _time_loop(call: Any, runs: int, warmup: int, min_seconds: float = 0.0) -> tuple[list[float], float]:
    """(ms per timed run, first-call ms). The first warm-up call is the cold one.

    Timed runs go on past ``runs`` until ``min_seconds`` have passed, as benchmark_model's ``--min_secs``: a
    device whose speed swings for a second at a time then gives trial medians that do not depend on which
    second the trial started in.
    """
    pc = time.perf_counter_ns
    first = None
    for _ in range(warmup):
        t0 = pc()
        call()
        if first is None:
            first = (pc() - t0) / 1e6
    samples = [0.0] * runs
    start = pc()
    for i in range(runs):
        t0 = pc()
        call()
        samples[i] = (pc() - t0) / 1e6
    end = start + int(min_seconds * 1e9)
    while True:  # the same two clock reads per run as above
        t0 = pc()
        if t0 >= end:
            break
        call()
        samples.append((pc() - t0) / 1e6)
    if first is None:
        first = samples[0] if samples else 0.0
    return samples, first


# ------------------------------------------------------------------------------------------------ LiteRT
def _litert_coverage(interp: Any) -> dict[str, Any] | None:
    """Nodes the delegate took: walk back from each DELEGATE node's outputs to its inputs. ``fallback_ops`` counts
    the op types left to the CPU kernels, which is what a user changes to get full delegation."""
    ops = interp._get_ops_details()
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    original = [o for o in ops if o["op_name"] != "DELEGATE"]
    if not delegates:
        return {"delegated": 0, "total": len(original), "fallback_ops": _op_counts(original)}
    producer = {int(t): o["index"] for o in original for t in o["outputs"]}
    by_index = {o["index"]: o for o in original}
    taken: set[int] = set()
    for d in delegates:
        stop = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in stop or t not in producer:
                continue
            seen.add(t)
            node = producer[t]
            if node not in taken:
                taken.add(node)
                stack.extend(int(x) for x in by_index[node]["inputs"] if int(x) >= 0)
    return {"delegated": len(taken), "total": len(original), "partitions": len(delegates),
            "fallback_ops": _op_counts([o for o in original if o["index"] not in taken])}


def _op_counts(ops: list[dict[str, Any]]) -> dict[str, int]:
    return dict(sorted(Counter(o["op_name"] for o in ops).items()))


def measure_litert(model: str, threads: int, runs: int, warmup: int, delegate: str | None,
                   op_profile_dir: str | None = None, min_seconds: float = 0.0) -> dict[str, Any]:
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, OpResolverType  # type: ignore
        except ImportError:
            raise RunnerError("LiteRT is not installed for this Python",
                              "pip install ai-edge-litert (or tflite-runtime) on the device") from None
    import numpy as np
    delegate = (delegate or "xnnpack").lower()
    if delegate not in ("xnnpack", "cpu"):
        raise RunnerError(f"delegate {delegate!r} is not available to the LiteRT Python interpreter",
                          "use xnnpack or cpu here; GPU/NNAPI/NPU run through benchmark_model on a phone")
    resolver = OpResolverType.AUTO if delegate == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    mem = _PeakRss()
    t0 = time.perf_counter_ns()
    interp = Interpreter(model_path=model, num_threads=threads, experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], _random_input(list(d["shape"]), d["dtype"], rng))
    samples, first = _time_loop(interp.invoke, runs, warmup, min_seconds)
    coverage = _litert_coverage(interp) if delegate == "xnnpack" else None
    if coverage is not None:
        coverage["delegate"] = "TfLiteXNNPackDelegate"
    notes = []
    if op_profile_dir:
        notes.append("the LiteRT Python interpreter exposes no per-op timings; run benchmark_model with "
                     "--op-profile for them")
    return {"runtime": "litert", "delegate": delegate, "samples_ms": samples, "init_ms": init_ms, "first_ms": first,
            "peak_memory_mb": mem.growth_mb(), "delegate_coverage": coverage, "op_profile": None, "notes": notes}


# -------------------------------------------------------------------------------------------- ONNX Runtime
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
                 "nnapi": "NnapiExecutionProvider", "qnn": "QNNExecutionProvider", "npu": "QNNExecutionProvider",
                 "coreml": "CoreMLExecutionProvider", "coreml-all": "CoreMLExecutionProvider",
                 "cuda": "CUDAExecutionProvider", "openvino": "OpenVINOExecutionProvider"}
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
             "tensor(bool)": "bool"}


# The same list as edge.export.targets.onnx.ORT_DISABLED_OPTIMIZERS (this file runs on devices without edge's
# export side): WeightBiasQuantization would quantize the layers an int8 export kept float, at load.
ORT_DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


def _ort_session(model: str, threads: int, delegate: str, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort
    provider = ORT_PROVIDERS.get(delegate)
    if provider is None:
        raise RunnerError(f"unknown ONNX Runtime delegate {delegate!r}", f"use one of: {', '.join(ORT_PROVIDERS)}")
    if provider not in ort.get_available_providers():
        raise RunnerError(f"{provider} is not in this onnxruntime build ({', '.join(ort.get_available_providers())})",
                          "install an onnxruntime package with that execution provider, or use --delegate cpu")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    providers: list[Any] = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    if provider == "XnnpackExecutionProvider":
        providers[0] = (provider, {"intra_op_num_threads": str(threads)})
        so.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(model, so, providers=providers, disabled_optimizers=ORT_DISABLED_OPTIMIZERS)
    except TypeError:  # an onnxruntime older than the disabled_optimizers argument (1.9)
        return ort.InferenceSession(model, so, providers=providers)


def measure_onnxruntime(model: str, threads: int, runs: int, warmup: int, delegate: str | None,
                        op_profile_dir: str | None = None, min_seconds: float = 0.0) -> dict[str, Any]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise RunnerError("onnxruntime is not installed for this Python", "pip install onnxruntime") from None
    import numpy as np
    delegate = (delegate or "cpu").lower()
    mem = _PeakRss()
    t0 = time.perf_counter_ns()
    sess = _ort_session(model, threads, delegate)
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    rng = np.random.default_rng(0)
    feeds = {i.name: _random_input(i.shape if isinstance(i.shape, list) else [1], ORT_TYPES.get(i.type, "float32"),
                                   rng) for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    run = sess.run
    samples, first = _time_loop(lambda: run(names, feeds), runs, warmup, min_seconds)
    peak = mem.growth_mb()
    op_profile = coverage = None
    if op_profile_dir:
        # a separate profiled session, so profiling overhead never touches the timed runs
        prefix = os.path.join(op_profile_dir, "ort_profile")
        psess = _ort_session(model, threads, delegate, profile_prefix=prefix)
        n = max(1, min(runs, 20))
        for _ in range(n + 1):
            psess.run(names, feeds)
        path = psess.end_profiling()
        with open(path) as f:
            events = json.load(f)
        op_profile, coverage = ort_profile_rows(events, n + 1, ORT_PROVIDERS[delegate])
    return {"runtime": "onnxruntime", "delegate": delegate, "samples_ms": samples, "init_ms": init_ms,
            "first_ms": first, "peak_memory_mb": peak, "delegate_coverage": coverage, "op_profile": op_profile,
            "notes": []}


def ort_profile_rows(events: list[dict[str, Any]], runs: int | None = None,
                     provider: str = "CPUExecutionProvider") -> tuple[list[dict], dict]:
    """Per-node average ms (run order) from an ORT profile trace, and the nodes ``provider`` took.

    ``runs`` None: each node is assumed to run once per inference (so runs = its call count).
    """
    nodes: dict[str, dict[str, Any]] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        n = nodes.setdefault(name[: -len("_kernel_time")], {"node": name[: -len("_kernel_time")],
                                                            "op": args.get("op_name"), "provider": args.get("provider"),
                                                            "_us": 0.0, "calls": 0, "_ts": e.get("ts", 0)})
        n["_us"] += float(e.get("dur", 0))
        n["calls"] += 1
    total = sum(n["_us"] for n in nodes.values()) or 1.0
    if runs is None:
        runs = max([n["calls"] for n in nodes.values()] or [1])
    rows = [{"node": n["node"], "op": n["op"], "provider": n["provider"], "avg_ms": n["_us"] / 1e3 / runs,
             "pct": 100.0 * n["_us"] / total, "calls": max(1, n["calls"] // runs)}
            for n in sorted(nodes.values(), key=lambda n: n["_ts"])]
    coverage = {"delegated": sum(1 for r in rows if r["provider"] == provider), "total": len(rows),
                "delegate": provider}
    return rows, coverage


# --------------------------------------------------------------------------------------------------- Core ML
COMPUTE_UNITS = {"coreml": "ALL", "coreml-all": "ALL", "coreml-ane": "CPU_AND_NE", "coreml-cpu": "CPU_ONLY",
                 "coreml-gpu": "CPU_AND_GPU", "ane": "CPU_AND_NE", "cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU",
                 "all": "ALL"}


def measure_coreml(model: str, threads: int, runs: int, warmup: int, delegate: str | None,
                   op_profile_dir: str | None = None, min_seconds: float = 0.0) -> dict[str, Any]:
    if sys.platform != "darwin":
        raise RunnerError(f"Core ML runs only on macOS (this is {platform.system()})",
                          "bench the .mlpackage on a Mac: --device ssh://user@mac (or a Mac device profile)")
    try:
        import coremltools as ct
    except ImportError:
        raise RunnerError("coremltools is not installed for this Python", "pip install coremltools") from None
    import numpy as np
    unit = COMPUTE_UNITS.get((delegate or "coreml-all").lower())
    if unit is None:
        raise RunnerError(f"unknown Core ML compute unit {delegate!r}", f"use one of: {', '.join(COMPUTE_UNITS)}")
    mem = _PeakRss()
    t0 = time.perf_counter_ns()
    mlmodel = ct.models.MLModel(model, compute_units=getattr(ct.ComputeUnit, unit))
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    rng = np.random.default_rng(0)
    feeds: dict[str, Any] = {}
    for inp in mlmodel.get_spec().description.input:
        kind = inp.type.WhichOneof("Type")
        if kind == "imageType":
            from PIL import Image
            it = inp.type.imageType
            feeds[inp.name] = Image.fromarray(rng.integers(0, 255, (it.height, it.width, 3), dtype=np.uint8))
        else:
            arr = inp.type.multiArrayType
            dt = {65568: "float32", 65552: "float16", 131104: "int32"}.get(arr.dataType, "float32")
            feeds[inp.name] = _random_input(list(arr.shape), dt, rng)
    samples, first = _time_loop(lambda: mlmodel.predict(feeds), runs, warmup, min_seconds)
    coverage, op_profile, notes = None, None, []
    if op_profile_dir:
        coverage, op_profile, note = _coreml_plan(model, unit)
        if note:
            notes.append(note)
    return {"runtime": "coreml", "delegate": (delegate or "coreml-all").lower(), "samples_ms": samples,
            "init_ms": init_ms, "first_ms": first, "peak_memory_mb": mem.growth_mb(), "delegate_coverage": coverage,
            "op_profile": op_profile, "notes": notes}


def _coreml_plan(model: str, unit: str) -> tuple[dict | None, list | None, str | None]:
    """Per-op planned device and estimated cost from MLComputePlan (macOS 14.4+); best effort."""
    try:
        import coremltools as ct
        from coremltools.models.compute_plan import MLComputePlan
        compiled = ct.models.utils.compile_model(model) if model.endswith(".mlpackage") else model
        plan = MLComputePlan.load_from_path(compiled, compute_units=getattr(ct.ComputeUnit, unit))
        rows = []
        program = plan.model_structure.program
        for fn in program.functions.values():
            for op in fn.block.operations:
                usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
                cost = plan.get_estimated_cost_for_mlprogram_operation(op)
                dev = type(usage.preferred_compute_device).__name__ if usage else None
                rows.append({"node": op.outputs[0].name if op.outputs else op.operator_name, "op": op.operator_name,
                             "provider": dev, "avg_ms": None, "pct": 100.0 * cost.weight if cost else None,
                             "calls": 1})
        ne = sum(1 for r in rows if r["provider"] and "NeuralEngine" in r["provider"])
        return {"delegated": ne, "total": len(rows), "delegate": "MLNeuralEngineComputeDevice"}, rows, None
    except Exception as e:  # noqa: BLE001 - optional API; absent before macOS 14.4
        return None, None, f"no Core ML compute plan: {e}"


# ------------------------------------------------------------------------------------------------ dispatch
MEASURE = {"litert": measure_litert, "onnxruntime": measure_onnxruntime, "coreml": measure_coreml}


def set_cpus(cpus: list[int] | None) -> Any:
    """Pin this thread (and threads it starts) to ``cpus``; returns the previous set to restore."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    return before


def measure(model: str, runtime: str | None = None, threads: int = 1, runs: int = 50, warmup: int = 10,
            delegate: str | None = None, cpus: list[int] | None = None,
            op_profile_dir: str | None = None, min_seconds: float = 0.0) -> dict[str, Any]:
    rt = runtime_for(model, runtime)
    if rt not in MEASURE:
        raise RunnerError(f"unknown runtime {rt!r}", f"use one of: {', '.join(MEASURE)}")
    if runs < 1 or warmup < 0 or threads < 1 or not min_seconds >= 0:
        raise RunnerError("runs and threads must be >= 1, warmup and min_seconds >= 0")
    before = set_cpus(cpus)
    try:
        out = MEASURE[rt](model, threads, runs, warmup, delegate, op_profile_dir, min_seconds=min_seconds)
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    out.update({"threads": threads, "runs": runs, "warmup": warmup, "min_seconds": min_seconds, "cpus": cpus})
    return out


def versions() -> dict[str, Any]:
    """Python and runtime versions, read from package metadata (importing coremltools takes seconds)."""
    v: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return v
    for dist in ("numpy", "onnxruntime", "ai-edge-litert", "tflite-runtime", "coremltools"):
        try:
            v[dist.replace("-", "_")] = version(dist)
        except PackageNotFoundError:
            pass
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--runtime", choices=sorted(MEASURE))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--delegate")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--min-seconds", type=float, default=0.0, help="time runs past --runs until this many seconds")
    ap.add_argument("--cpus", help="comma-separated CPU ids to pin to")
    ap.add_argument("--op-profile", metavar="DIR", help="also write a per-op profile here (where the runtime can)")
    ap.add_argument("--versions", action="store_true", help="print runtime versions and exit")
    a = ap.parse_args(argv)
    try:
        if a.versions:
            result: dict[str, Any] = {"versions": versions()}
        else:
            if not a.model:
                raise RunnerError("--model is required")
            if not os.path.exists(a.model):
                raise RunnerError(f"model not found: {a.model}")
            cpus = [int(c) for c in a.cpus.split(",")] if a.cpus else None
            prof = a.op_profile
            if prof:
                os.makedirs(prof, exist_ok=True)
                for old in glob.glob(os.path.join(prof, "ort_profile*.json")):
                    os.remove(old)
            result = measure(a.model, a.runtime, a.threads, a.runs, a.warmup, a.delegate, cpus, prof, a.min_seconds)
    except RunnerError as e:
        print(MARK + json.dumps({"error": e.message, "hint": e.hint}), flush=True)
        return 2
    print(MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
