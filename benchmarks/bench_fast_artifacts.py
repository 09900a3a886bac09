"""Fast artifacts (issue 6): edge's exports against a hand conversion of the reference network, side by side.

    .venv/bin/python benchmarks/bench_fast_artifacts.py                      # all six networks
    .venv/bin/python benchmarks/bench_fast_artifacts.py --quick --models ghostnet-1.0x efficientformerv2-s0

Per network, in one run:

* **reference**: timm's implementation (``timm.create_model(..., pretrained=False)``) holding the same weights as
  edge's network (its training-form state dict, which uses timm's keys), converted the way a user would by hand:
  ``litert_torch.convert(model.eval(), (x,))`` at default settings, ``torch.onnx.export(model, (x,), f,
  dynamo=True, external_data=False)``, and ``coremltools.convert`` of ``torch.export`` with the same settings edge
  uses (ML Program, iOS16, fp32) so the Core ML op counts differ only by the network. Mobile-Former has no timm
  implementation: only edge's artifacts are measured for it.
* **edge**: the deploy-form network exported by ``edge.export.export`` (fp32 and int8 for TFLite and ONNX, fp32
  for Core ML). TFLite uses ``--channels-last`` (NHWC I/O): it removes the input TRANSPOSE and the converter's
  layout pass cancels it for the attention networks too (checked per run: the layout column shows it).

Columns: TFLite TRANSPOSE / RESHAPE counts, native SOFTMAX against decomposed softmaxes (an EXP fed by
REDUCE_MAX-SUB or feeding a SUM), total ops; Core ML MIL op counts (const ops excluded) and layout ops; LiteRT
(XNNPACK) and ONNX Runtime latency, median and p10, at 1 and 2 threads. The reference and edge artifacts of one
runtime are timed round-robin (one call each per round, the order rotating every round), so load drift on this
shared machine hits them alike, in ``--sessions`` fresh sessions each (medians over sessions; see
``time_artifacts``). At 1 thread the median *CPU* time of the calling thread is recorded too: it leaves
out the time the process waited for a core, which dominates wall time when the machine is loaded.

Artifacts are cached under ``--work`` (default ``out/fast-artifacts``), so a rerun only re-times them
(``--reconvert`` converts again). Results are appended to ``WORK/results.jsonl`` per network, and
``docs/fast-artifacts.md`` is written from the latest record of each network (``--doc-only`` rewrites it without
measuring).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")


@dataclass(frozen=True)
class Spec:
    timm: str | None  # timm model name of the reference implementation (None: timm has none)
    issue_ms: float | None  # issue 6's LiteRT 1-thread median of the reference conversion
    issue_layout: tuple[int, int] | None  # issue 6's TRANSPOSE / RESHAPE counts of the reference conversion
    cnn: bool  # conv-only network: the goal is no TRANSPOSE with --channels-last


SPECS: dict[str, Spec] = {
    "ghostnet-1.0x": Spec("ghostnet_100", 5.3, (1, 0), True),
    "mobilenetv3-large-1.0": Spec("mobilenetv3_large_100", 6.1, (1, 0), True),
    "efficientformer-l1": Spec("efficientformer_l1", 26.3, (6, 18), False),
    "efficientformerv2-s0": Spec("efficientformerv2_s0", 10.5, (55, 49), False),
    "efficientformerv2-s2": Spec("efficientformerv2_s2", 29.8, (99, 89), False),
    "mobileformer-294m": Spec(None, None, None, False),
}
EFV2_SPEEDUP = 1.2  # issue 6: EfficientFormerV2 fp32 TFLite >= 1.2x faster than its row
INT8_SPEEDUP = 1.8  # issue 6: TFLite int8 >= 1.8x faster than fp32 per family
EFV2_MAX_TRANSPOSE = 10
THREADS = (1, 2)

# --------------------------------------------------------------------------------------------- graph statistics


def tflite_graph(path: Path) -> dict[str, Any]:
    """Op histogram of a .tflite flatbuffer, its layout ops, and native vs decomposed softmaxes.

    A decomposed softmax is an EXP whose input comes from SUB(REDUCE_MAX) or whose output feeds a SUM: that is how
    the converter writes ``softmax`` when it cannot keep the native op (e.g. the softmax axis is not the last one
    after its layout pass).
    """
    from collections import Counter

    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        codes.append(names.get(code, f"OP_{code}"))
    hist: Counter[str] = Counter()
    decomposed = 0
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        ops = [(codes[op.OpcodeIndex()], list(op.InputsAsNumpy()) if op.InputsLength() else [],
                list(op.OutputsAsNumpy()) if op.OutputsLength() else [])
               for op in (sg.Operators(o) for o in range(sg.OperatorsLength()))]
        hist.update(kind for kind, _, _ in ops)
        decomposed += _decomposed_softmaxes(ops)
    return {"histogram": dict(hist.most_common()), "total": sum(hist.values()), "transpose": hist["TRANSPOSE"],
            "reshape": hist["RESHAPE"], "softmax": hist["SOFTMAX"], "softmax_decomposed": decomposed}


def _decomposed_softmaxes(ops: list[tuple[str, list[int], list[int]]]) -> int:
    """EXP ops (kind, input tensors, output tensors) fed by SUB(REDUCE_MAX, .) or feeding a SUM."""
    producer: dict[int, tuple[str, list[int]]] = {}
    consumers: dict[int, list[str]] = {}
    for kind, ins, outs in ops:
        for t in outs:
            producer[int(t)] = (kind, ins)
        for t in ins:
            consumers.setdefault(int(t), []).append(kind)
    n = 0
    for kind, ins, outs in ops:
        if kind != "EXP":
            continue
        sub = producer.get(int(ins[0]))
        from_max = sub is not None and sub[0] == "SUB" and any(
            producer.get(int(t), ("", []))[0] == "REDUCE_MAX" for t in sub[1])
        to_sum = any(k == "SUM" for k in consumers.get(int(outs[0]), []))
        n += bool(from_max or to_sum)
    return n


def onnx_graph(path: Path) -> dict[str, Any]:
    """ONNX node counts (local functions expanded), Transpose / Reshape-like."""
    from collections import Counter

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    funcs = {(f.domain, f.name): f for f in model.functions}
    hist: Counter[str] = Counter()

    def walk(nodes: Any) -> None:
        for n in nodes:
            f = funcs.get((n.domain, n.op_type))
            if f is not None:
                walk(f.node)
            else:
                hist[n.op_type] += 1

    walk(model.graph.node)
    return {"histogram": dict(hist.most_common()), "total": sum(hist.values()), "transpose": hist["Transpose"],
            "reshape": hist["Reshape"] + hist["Squeeze"] + hist["Unsqueeze"] + hist["Flatten"]}


def xnnpack_partitions(path: Path) -> int:
    """DELEGATE nodes the default XNNPACK delegate leaves in the execution plan: 1 means the whole graph runs in
    XNNPACK; more means ops it does not take split the graph (each split is a trip through TFLite's kernels)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in it._get_ops_details())  # noqa: SLF001 - no public view


def mil_graph(path: Path) -> dict[str, Any]:
    """MIL op counts of an .mlpackage read from its spec (nested blocks included; ``const`` ops left out)."""
    from collections import Counter

    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    hist: Counter[str] = Counter()

    def walk(block: Any) -> None:
        for op in block.operations:
            hist[op.type] += 1
            for b in op.blocks:
                walk(b)

    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            walk(block)
    hist.pop("const", None)
    return {"histogram": dict(hist.most_common()), "total": sum(hist.values()), "transpose": hist["transpose"],
            "reshape": hist["reshape"] + hist["squeeze"] + hist["expand_dims"]}


# ------------------------------------------------------------------------------------------------- conversions


def reference_network(spec: Spec, edge_train: Any) -> tuple[Any, str]:
    """timm's implementation with edge's (training-form) weights; says where the weights came from."""
    from tests.reference import import_timm

    timm = import_timm()
    model = timm.create_model(spec.timm, pretrained=False).eval()
    sd = edge_train.state_dict()
    try:
        model.load_state_dict(sd, strict=True)
        how = "edge's BN-calibrated weights (identical state dict)"
    except RuntimeError as e:
        first = str(e).splitlines()[0][:160]
        missing, unexpected = model.load_state_dict(sd, strict=False)
        how = (f"timm random init; edge's state dict only partly fits ({len(missing)} missing, {len(unexpected)} "
               f"unexpected keys: {first})")
    return model.eval(), how


def convert_reference(model: Any, x: Any, work: Path, redo: bool) -> tuple[dict[str, Path], dict[str, str]]:
    """The conversions a user makes by hand at default settings; returns the artifacts and, per target, what
    failed (a failure is a finding, not a reason to lose the other measurements)."""
    import torch

    work.mkdir(parents=True, exist_ok=True)
    out = {"tflite": work / "model.tflite", "onnx": work / "model.onnx", "coreml": work / "model.mlpackage"}
    notes: dict[str, str] = {}

    def tflite() -> None:
        import litert_torch

        litert_torch.convert(model.eval(), (x,)).export(str(out["tflite"]))

    def onnx() -> None:
        torch.onnx.export(model, (x,), str(out["onnx"]), dynamo=True, external_data=False, verbose=False)

    def coreml() -> None:
        import coremltools as ct

        kw = {"inputs": [ct.TensorType(name="input", shape=tuple(x.shape), dtype=np.float32)],
              "convert_to": "mlprogram", "minimum_deployment_target": ct.target.iOS16,
              "compute_precision": ct.precision.FLOAT32, "skip_model_load": True}
        try:
            ml = ct.convert(torch.export.export(model, (x,), strict=False).run_decompositions({}), **kw)
            notes["coreml_frontend"] = "torch.export"
        except Exception as e:  # noqa: BLE001 - the by-hand torch.export route fails on some timm models
            notes["coreml_frontend"] = (f"torch.jit.trace (the torch.export route failed: {type(e).__name__}: "
                                        f"{str(e).splitlines()[0][:120]})")
            ml = ct.convert(torch.jit.trace(model, x), **kw)
        ml.save(str(out["coreml"]))

    for target, fn in (("tflite", tflite), ("onnx", onnx), ("coreml", coreml)):
        if redo or not out[target].exists():
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - recorded in the doc
                notes[f"{target}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                print(f"  reference {target}: {notes[f'{target}_error']}", flush=True)
    return {k: v for k, v in out.items() if v.exists()}, notes


def edge_plan(channels_last: bool) -> list[tuple[str, str, bool]]:
    """edge's artifacts: TFLite fp32/int8 (NHWC I/O when channels_last), ONNX fp32/int8 and Core ML fp32."""
    return [("tflite", "fp32", channels_last), ("tflite", "int8", channels_last), ("onnx", "fp32", False),
            ("onnx", "int8", False), ("coreml", "fp32", False)]


def export_edge(name: str, work: Path, redo: bool, plan: list[tuple[str, str, bool]]) -> dict[str, dict[str, Any]]:
    """Export (or find in the cache) each (target, precision, channels_last) of ``plan``."""
    from edge._progress import Progress
    from edge.export import export
    from edge.export.manifest import MANIFEST

    out: dict[str, dict[str, Any]] = {}
    for target, precision, cl in plan:
        folder = work / ("nhwc" if cl else "nchw")
        mpath = folder / name / f"{target}-{precision}" / MANIFEST
        if redo or not mpath.exists():
            t0 = time.perf_counter()
            try:
                export(name, target=target, precision=precision, out=folder, channels_last=cl, strict=False,
                       progress=Progress(quiet=True))
            except Exception as e:  # noqa: BLE001 - one failed artifact must not lose the others' measurements
                out[f"{target}-{precision}"] = {"error": f"{type(e).__name__}: {e}"[:300]}
                print(f"  {name} {target}-{precision}: {type(e).__name__}: {e}", flush=True)
                continue
            print(f"  {name} {target}-{precision} exported in {time.perf_counter() - t0:.0f}s", flush=True)
        m = json.loads(mpath.read_text())
        out[f"{target}-{precision}"] = {"path": str(mpath.parent / m["artifact"]["file"]), "manifest": m}
    return out


# ------------------------------------------------------------------------------------------------------ timing


def _image(name: str, size: int) -> np.ndarray:
    """One preprocessed natural photo, NCHW float32 (the same input for every artifact of a network)."""
    from edge.data import image_batch
    from edge.models import get_info

    pp = get_info(name).preprocess
    x, _ = image_batch(1, size, pp.mean, pp.std, pp.crop_pct, pp.interpolation, seed=0)
    return x.numpy()


def _feed(x: np.ndarray, shape: Any, dtype: Any, quant: tuple[float, int] | None) -> np.ndarray:
    shape = [int(s) for s in shape]
    if len(shape) == 4 and shape[1] != x.shape[1] and shape[3] == x.shape[1]:
        x = x.transpose(0, 2, 3, 1)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        scale, zp = quant or (1.0, 0)
        return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def tflite_call(path: Path, x: np.ndarray, threads: int, xnnpack: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {} if xnnpack else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    it = Interpreter(model_path=str(path), num_threads=threads, **kw)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    q = d.get("quantization") or (0.0, 0)
    it.set_tensor(d["index"], _feed(x, d["shape"], d["dtype"], q if q[0] else None))
    return it.invoke


def onnx_call(path: Path, x: np.ndarray, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    i = sess.get_inputs()[0]
    dtype = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}[i.type]
    feed = {i.name: _feed(x, i.shape, dtype, None)}
    return lambda: sess.run(None, feed)


def _stats(wall: list[float], cpu: list[float]) -> dict[str, float]:
    s = sorted(wall)
    p = lambda q: s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]  # noqa: E731
    return {"median": statistics.median(s), "p10": p(0.1), "p90": p(0.9), "min": s[0], "runs": len(s),
            "cpu_median": statistics.median(cpu)}


def interleaved(calls: dict[str, Any], runs: int, warmup: int) -> dict[str, dict[str, float]]:
    """Round-robin timing: every round calls each artifact once, starting one later each round."""
    keys = list(calls)
    for _ in range(warmup):
        for k in keys:
            calls[k]()
    wall: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(runs):
        for j in range(len(keys)):
            k = keys[(r + j) % len(keys)]
            c0, t0 = time.thread_time(), time.perf_counter()
            calls[k]()
            wall[k].append((time.perf_counter() - t0) * 1e3)
            cpu[k].append((time.thread_time() - c0) * 1e3)
    return {k: _stats(wall[k], cpu[k]) for k in keys}


def time_artifacts(artifacts: dict[str, dict[str, Path]], x: np.ndarray, runs: int, warmup: int,
                   sessions: int = 1) -> dict[str, Any]:
    """artifacts: runtime (tflite, onnx, or tflite-builtin: LiteRT's own kernels, no XNNPACK) -> {label: path}.
    Returns "runtime/threads" -> label -> stats.

    Each of ``sessions`` rounds opens every artifact afresh (a new interpreter / ORT session) and times them
    round-robin. This VM's speed level moves every few seconds (one session switches between two levels 10-13
    times a minute, ``session_spread.py --series``), so only files timed in the same round compare fairly and one
    round cannot rank two files; the statistics reported are the median over sessions of each session's median,
    p10 and CPU-time median, and the speed verdicts use per-round ratios (``_paired``).
    """
    per: dict[str, dict[str, list[dict[str, float]]]] = {}
    for _ in range(sessions):
        for threads in THREADS:
            for runtime, paths in artifacts.items():
                make = {"tflite": tflite_call, "onnx": onnx_call,
                        "tflite-builtin": functools.partial(tflite_call, xnnpack=False)}[runtime]
                calls = {label: make(p, x, threads) for label, p in paths.items()}
                for label, st in interleaved(calls, runs, warmup).items():
                    per.setdefault(f"{runtime}/{threads}", {}).setdefault(label, []).append(st)
                del calls
    return {key: {label: _over_sessions(sts) for label, sts in labels.items()} for key, labels in per.items()}


def _over_sessions(sts: list[dict[str, float]]) -> dict[str, Any]:
    agg: dict[str, Any] = {k: statistics.median(st[k] for st in sts) for k in ("median", "p10", "p90", "cpu_median")}
    agg.update(min=min(st["min"] for st in sts), runs=sum(st["runs"] for st in sts), sessions=len(sts),
               session_medians=[round(st["median"], 4) for st in sts])
    return agg


# ------------------------------------------------------------------------------------------------- one network


def _load() -> list[float]:
    try:
        return [round(v, 1) for v in os.getloadavg()]
    except OSError:
        return []


def prepare_reference(name: str, spec: Spec, x: np.ndarray, work: Path, redo: bool) -> tuple[dict[str, Path],
                                                                                             dict[str, Any]]:
    """The reference artifacts (converted once, cached with a note on their weights in ``info.json``)."""
    import torch

    from edge.models import create

    if not spec.timm:
        return {}, {"reference_weights": "timm has no Mobile-Former: edge's artifacts only"}
    info_path = work / "info.json"
    paths = {"tflite": work / "model.tflite", "onnx": work / "model.onnx", "coreml": work / "model.mlpackage"}
    if not redo and info_path.exists() and all(p.exists() for p in paths.values()):
        return paths, json.loads(info_path.read_text())
    if not redo and info_path.exists():
        info = json.loads(info_path.read_text())
        if any(k.endswith("_error") for k in info.get("reference_notes", {})):
            return {k: p for k, p in paths.items() if p.exists()}, info
    t0 = time.perf_counter()
    train = create(name)  # training form, same (cached) BN calibration as edge's export
    ref, how = reference_network(spec, train)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        diff = float((ref(xt) - train(xt)).abs().max())
    paths, notes = convert_reference(ref, xt, work, redo)
    info = {"reference_weights": how, "reference_vs_edge_max_abs": diff, "reference_notes": notes,
            "reference_convert_s": round(time.perf_counter() - t0, 1)}
    info_path.write_text(json.dumps(info))
    return paths, info


def cached_artifacts(name: str, work: Path) -> dict[str, Path]:
    """"reference/<target>" and "edge/<target>-<precision>" -> artifact path, for those in the cache."""
    from edge.export.targets import TARGETS

    ref = work / "reference" / name
    out = {f"reference/{t}": ref / TARGETS[t].artifact_name for t in ("tflite", "onnx", "coreml")}
    for target, precision, cl in edge_plan(channels_last=True):
        out[f"edge/{target}-{precision}"] = (work / "edge" / ("nhwc" if cl else "nchw") / name
                                             / f"{target}-{precision}" / TARGETS[target].artifact_name)
    return {k: v for k, v in out.items() if v.exists()}


def graph_stats(name: str, work: Path) -> dict[str, Any]:
    """Op counts of every cached artifact of one network (and XNNPACK partitions of the TFLite ones)."""
    readers = {"tflite": tflite_graph, "onnx": onnx_graph, "coreml": mil_graph}
    graphs: dict[str, Any] = {}
    for key, path in cached_artifacts(name, work).items():
        target = key.split("/")[1].split("-")[0]
        graphs[key] = readers[target](path)
        if target == "tflite":
            graphs[key]["xnnpack_partitions"] = xnnpack_partitions(path)
    return graphs


def bench_network(name: str, work: Path, runs: int, warmup: int, redo: bool,
                  convert_only: bool = False, sessions: int = 1) -> dict[str, Any]:
    from edge.models import get_info

    spec = SPECS[name]
    info = get_info(name)
    size = info.input_size[-1]
    rec: dict[str, Any] = {"model": name, "family": info.family, "load_start": _load(), "issue": {
        "ms": spec.issue_ms, "layout": spec.issue_layout}}
    t0 = time.perf_counter()
    plan = edge_plan(channels_last=True)
    # fp32 TFLite first, then the reference (which reuses this process's BN calibration), then the rest
    edge = export_edge(name, work / "edge", redo, plan[:1])
    x = _image(name, size)
    ref_paths, ref_info = prepare_reference(name, spec, x, work / "reference" / name, redo)
    rec.update(ref_info)
    edge.update(export_edge(name, work / "edge", redo, plan[1:]))
    rec["convert_s"] = round(time.perf_counter() - t0, 1)
    if convert_only:
        return rec
    rec["graphs"] = graph_stats(name, work)
    rec["edge"] = {k: ({"error": e["error"]} if "error" in e else {
        "passed": e["manifest"]["status"] == "ok", "layout": e["manifest"]["ops"]["layout"],
        "ops_total": e["manifest"]["ops"]["total"], "channels_last": e["manifest"].get("channels_last"),
        "size_bytes": e["manifest"]["artifact"]["size_bytes"],
        "numerics": {o: {k: v.get(k) for k in ("sqnr_db", "top1_agree")}
                     for o, v in (e["manifest"]["numerics"].get("outputs") or {}).items()},
        "quantization": {k: (e["manifest"].get("quantization") or {}).get(k) for k in ("format", "engine",
                                                                                        "recommended_runtime")}
        if e["manifest"].get("quantization") else None}) for k, e in edge.items()}

    artifacts: dict[str, dict[str, Path]] = {"tflite": {}, "onnx": {}}
    for rt in artifacts:
        if rt in ref_paths:
            artifacts[rt]["reference-fp32"] = ref_paths[rt]
        for prec in ("fp32", "int8"):
            e = edge.get(f"{rt}-{prec}", {})
            if "path" in e:
                artifacts[rt][f"edge-{prec}"] = Path(e["path"])
    rec["load_before_timing"] = _load()
    rec["latency_ms"] = time_artifacts(artifacts, x, runs, warmup, sessions)
    rec["runs"], rec["warmup"], rec["sessions"] = runs, warmup, sessions
    rec["load_end"] = _load()
    rec["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return rec


# ---------------------------------------------------------------------------------------------------- the doc


def machine() -> dict[str, Any]:
    cpu, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown CPU":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa,
            "os": f"{platform.system()} {platform.release()} {platform.machine()}",
            "python": platform.python_version()}


def tool_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for d in ("torch", "timm", "litert-torch", "litert-converter", "ai-edge-litert", "ai-edge-quantizer",
              "coremltools", "onnx", "onnxscript", "onnxruntime", "numpy"):
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = "not installed"
    return out


def _ms(st: dict[str, float] | None) -> str:
    return "-" if not st else f"{st['median']:.2f} / {st['p10']:.2f}"


def _tr(d: dict[str, Any] | None) -> str:
    return "-" if not d else f"{d['transpose']} / {d['reshape']}"


def _sm(d: dict[str, Any] | None) -> str:
    return "-" if not d else f"{d['softmax']} + {d['softmax_decomposed']}"


def _tot(d: dict[str, Any] | None) -> str:
    return "-" if not d else str(d["total"])


def _lat(rec: dict[str, Any], runtime: str, threads: int, label: str) -> dict[str, float] | None:
    return rec["latency_ms"].get(f"{runtime}/{threads}", {}).get(label)


def _paired(slow: dict[str, Any], fast: dict[str, Any]) -> list[float] | None:
    """Per-session speed-ups ``slow / fast``: both files were timed in the same rounds of each session, and on this
    VM the speed level moves with the round (all files of one round land alike), so the ratio inside a session is
    far steadier than the ratio of two medians over sessions. None for records timed in one session."""
    a, b = slow.get("session_medians") or [], fast.get("session_medians") or []
    return [x / y for x, y in zip(a, b)] if len(a) > 1 and len(a) == len(b) else None


def _speedup(slow: dict[str, Any], fast: dict[str, Any]) -> float:
    """The speed-up the tables and verdicts quote: median per-session ratio, else the ratio of medians."""
    ratios = _paired(slow, fast)
    return statistics.median(ratios) if ratios else slow["median"] / fast["median"]


def _verdict(slow: dict[str, Any], fast: dict[str, Any], want: float) -> tuple[str, str]:
    """met / NOT met / unclear for "fast is at least ``want`` times faster than slow", and how close it came.

    With several sessions: met when the median per-session ratio reaches ``want``, NOT met when no session's ratio
    does, unclear in between. With one session: the median and p10 ratios must agree."""
    ratios = _paired(slow, fast)
    if ratios:
        mid = _speedup(slow, fast)
        verdict = "met" if mid >= want else ("NOT met" if max(ratios) < want else "unclear")
        return verdict, f"{mid:.2f}x (median of {len(ratios)} sessions' ratios, {min(ratios):.2f}-{max(ratios):.2f}x)"
    s, s10 = slow["median"] / fast["median"], slow["p10"] / fast["p10"]
    verdict = "met" if min(s, s10) >= want else ("NOT met" if max(s, s10) < want else "unclear")
    return verdict, f"{s:.2f}x median, {s10:.2f}x p10"


def goals(rec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(goal, verdict, detail) for one network."""
    spec = SPECS[rec["model"]]
    g = rec["graphs"]
    out: list[tuple[str, str, str]] = []
    tfl = g.get("edge/tflite-fp32")
    if tfl:
        if spec.cnn:
            t = tfl["transpose"]
            out.append(("no TRANSPOSE in the CNN's TFLite with --channels-last", "met" if t == 0 else "NOT met",
                        f"{t} TRANSPOSE"))
        if rec["family"] == "efficientformerv2":
            t = tfl["transpose"]
            out.append((f"<= {EFV2_MAX_TRANSPOSE} TRANSPOSE in EfficientFormerV2's TFLite",
                        "met" if t <= EFV2_MAX_TRANSPOSE else "NOT met",
                        f"{t} TRANSPOSE (reference {g.get('reference/tflite', {}).get('transpose', '-')})"))
        d = tfl["softmax_decomposed"]
        if d or tfl["softmax"]:
            out.append(("no decomposed softmax", "met" if d == 0 else "NOT met",
                        f"{tfl['softmax']} native SOFTMAX, {d} decomposed"))
    e32 = _lat(rec, "tflite", 1, "edge-fp32")
    r32 = _lat(rec, "tflite", 1, "reference-fp32")
    if e32 and r32:
        want = EFV2_SPEEDUP if rec["family"] == "efficientformerv2" else 1.0
        verdict, how = _verdict(r32, e32, want)
        issue = f"; the issue's row: {spec.issue_ms} ms" if spec.issue_ms else ""
        out.append((f"fp32 TFLite 1 thread >= {want:.1f}x the reference conversion's speed", verdict,
                    f"speed-up {how}, {r32['cpu_median'] / e32['cpu_median']:.2f}x CPU time (edge "
                    f"{e32['median']:.2f} ms, reference {r32['median']:.2f} ms on this run{issue})"))
    for th in THREADS:
        a, b = _lat(rec, "tflite", th, "edge-fp32"), _lat(rec, "tflite", th, "edge-int8")
        if a and b:
            out.append((f"TFLite int8 >= {INT8_SPEEDUP}x faster than fp32 ({th} thread{'s' * (th > 1)})",
                        *_verdict(a, b, INT8_SPEEDUP)))
        a, b = _lat(rec, "onnx", th, "edge-fp32"), _lat(rec, "onnx", th, "edge-int8")
        if a and b:
            verdict, how = _verdict(a, b, 1.0)
            out.append((f"ONNX int8 not slower than fp32 ({th} thread{'s' * (th > 1)})", verdict,
                        f"int8 speed-up over fp32 {how}"))
    for key, e in rec["edge"].items():
        if "error" in e:
            out.append((f"{key} exports", "NOT met", e["error"]))
        elif not e["passed"]:
            out.append((f"{key} passes the export gate", "NOT met", json.dumps(e["numerics"])))
    return out


def _int8_path(isa: list[str]) -> str:
    """Which instructions XNNPACK's int8 kernels get on this CPU: the speed-up int8 can have depends on it."""
    if "amx_int8" in isa:
        return "int8 GEMMs run on AMX tiles, depthwise convolutions on AVX-512"
    if "avx512_vnni" in isa or "avx_vnni" in isa:
        return "int8 dot products through VNNI"
    return "no VNNI: int8 dot products go through AVX2"


def write_doc(records: list[dict[str, Any]], doc: Path, meta: dict[str, Any]) -> None:
    from edge._io import write_text

    m = meta["machine"]
    L = [
        "# Fast artifacts: edge's exports against a hand conversion of the reference",
        "",
        f"Generated {meta['date']} by `{meta['command']}`"
        + (" (**--quick**: fewer timed runs, so medians are less certain)" if meta.get("quick") else "") + ".",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} logical cores, ISA {', '.join(m['isa']) or '?'} "
        f"({_int8_path(m['isa'])}), {m['os']}, Python {m['python']}. "
        "Other CPUs: [fast-artifacts-other-cpu.md](fast-artifacts-other-cpu.md).",
        f"- Load average (1/5/15 min) at start {meta['load_start']}, at end {meta['load_end']}. "
        + ("**The machine was shared with other jobs** (load above its core count), so wall-clock latency is "
           "inflated and noisy. " if max(meta["load_start"][0], meta["load_end"][0]) > m["cores"] else
           "Nothing else ran beside the benchmark; 2-thread medians are still bimodal on 2 cores (see p10). ")
        + "Reference and edge artifacts were timed interleaved, so their *ratios* are fair; the 1-thread CPU-time "
        "column (time the inference thread actually ran) is the load-robust number.",
        "- Tools: " + ", ".join(f"{k} {v}" for k, v in meta["tools"].items()) + ".",
        "- Reference = timm's implementation with edge's weights, converted by hand at default settings "
        "(`litert_torch.convert(model.eval(), (x,))`, `torch.onnx.export(..., dynamo=True, external_data=False)`, "
        "`coremltools.convert` of `torch.export` at ML Program / iOS16 / fp32, the settings edge uses). Edge = "
        "`edge.export.export(name, target, precision, channels_last=...)` of the deploy-form network: TFLite with "
        "`--channels-last` (NHWC I/O), ONNX and Core ML NCHW. int8 is edge's default W8A8 for each target.",
        "- Latency: batch 1, one natural photo, warm-up then round-robin runs (reference and edge alternating). "
        + (f"Each artifact was opened afresh in {records[0].get('sessions', 1)} sessions (a new interpreter or ORT "
           "session per round; this VM's speed level moves every few seconds, up to 73% apart for one file inside "
           "one session, `benchmarks/session_spread.py --series`, so only files timed in the same round compare "
           "fairly); cells are "
           "the median over sessions of each session's `median / p10`, in ms of wall time; "
           if records and records[0].get("sessions", 1) > 1 else "Cells are `median / p10` ms of wall time; ")
        + "LiteRT with its default XNNPACK delegate, ONNX Runtime CPU EP "
        "with `intra_op_num_threads` = threads.",
        "",
        "## Layout ops",
        "",
        "TFLite: TRANSPOSE / RESHAPE op counts, softmaxes as native SOFTMAX + decomposed (REDUCE_MAX, SUB, EXP, SUM, "
        "DIV), total ops, and the XNNPACK partitions LiteRT's default delegate makes (1 = the whole graph runs in "
        "XNNPACK).",
        "",
        "| network | issue's row T / R | reference T / R | edge fp32 T / R | edge int8 T / R | softmax ref -> edge | "
        "ops ref -> edge | XNNPACK partitions ref / edge fp32 / edge int8 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        g = r["graphs"]
        ref, e32, e8 = g.get("reference/tflite"), g.get("edge/tflite-fp32"), g.get("edge/tflite-int8")
        issue = "-" if not r["issue"]["layout"] else "{} / {}".format(*r["issue"]["layout"])
        parts = " / ".join(str((d or {}).get("xnnpack_partitions", "-")) for d in (ref, e32, e8))
        L.append(f"| {r['model']} | {issue} | {_tr(ref)} | {_tr(e32)} | {_tr(e8)} | {_sm(ref)} -> {_sm(e32)} | "
                 f"{_tot(ref)} -> {_tot(e32)} | {parts} |")
    L += [
        "",
        "ONNX (nodes, Transpose / Reshape-like) and Core ML (MIL ops without `const`, transpose / reshape-like: "
        "reshape, squeeze, expand_dims), before (reference) and after (edge), fp32:",
        "",
        "| network | ONNX nodes ref -> edge | ONNX Transpose / Reshape ref -> edge | Core ML ops ref -> edge | "
        "Core ML transpose / reshape ref -> edge |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        g = r["graphs"]
        oref, o32 = g.get("reference/onnx"), g.get("edge/onnx-fp32")
        cref, c32 = g.get("reference/coreml"), g.get("edge/coreml-fp32")
        L.append(f"| {r['model']} | {_tot(oref)} -> {_tot(o32)} | {_tr(oref)} -> {_tr(o32)} | {_tot(cref)} -> "
                 f"{_tot(c32)} | {_tr(cref)} -> {_tr(c32)} |")
    L += [
        "",
        "## Latency (ms, median / p10; 1-thread CPU-time median in brackets)",
        "",
        "Speed-up columns: the median of the per-session ratios where several sessions were timed (see the goals "
        "below), else the ratio of the medians.",
        "",
        "| network | runtime | threads | reference fp32 | edge fp32 | edge int8 | edge fp32 speed-up over reference | "
        "int8 speed-up over fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        for rt in ("tflite", "onnx"):
            for th in THREADS:
                ref, a, b = (_lat(r, rt, th, k) for k in ("reference-fp32", "edge-fp32", "edge-int8"))

                def cell(s: dict[str, float] | None, th: int = th) -> str:
                    return _ms(s) + (f" [{s['cpu_median']:.2f}]" if s and th == 1 else "")

                up = f"{_speedup(ref, a):.2f}x" if ref and a else "-"
                q = f"{_speedup(a, b):.2f}x" if a and b else "-"
                L.append(f"| {r['model']} | {'LiteRT' if rt == 'tflite' else 'ONNX Runtime'} | {th} | {cell(ref)} | "
                         f"{cell(a)} | {cell(b)} | {up} | {q} |")
    L += ["", "## Goals of issue 6", "",
          "Speed verdicts compare two files timed in the same rounds: each session gives one ratio of their medians "
          "(the speed level on this VM moves with the round, so in-session ratios are far steadier than ratios of "
          "medians over sessions). **met**: the median ratio reaches the goal; **NOT met**: no session's ratio "
          "does; **unclear**: in between.", "",
          "| network | goal | verdict | detail |", "|---|---|---|---|"]
    for r in records:
        for goal, verdict, detail in goals(r):
            L.append(f"| {r['model']} | {goal} | {'**' + verdict + '**' if verdict != 'met' else verdict} | "
                     f"{detail} |")
    L += ["", "## Per network", ""]
    for r in records:
        L.append(f"- **{r['model']}**: reference weights: {r.get('reference_weights')}"
                 + (f" (reference vs edge PyTorch max abs diff {r['reference_vs_edge_max_abs']:.2e})"
                    if r.get("reference_vs_edge_max_abs") is not None else "")
                 + f"; {r.get('sessions', 1)} x {r['runs']} runs after {r['warmup']} warm-up; "
                 f"load {r['load_start']} -> {r['load_end']}.")
        for k, v in (r.get("reference_notes") or {}).items():
            L.append(f"  - reference {k.replace('_', ' ')}: {v}")
        for k, e in r["edge"].items():
            if "error" in e:
                L.append(f"  - {k}: export failed: {e['error']}")
                continue
            q = e.get("quantization") or {}
            extra = f", {q['format']}" if q.get("format") else ""
            extra += f", engine {q['engine']}" if q.get("engine") else ""
            L.append(f"  - {k}: gate {'passed' if e['passed'] else 'FAILED'} {json.dumps(e['numerics'])}, "
                     f"{e['size_bytes'] / 1e6:.2f} MB{extra}")
    if meta.get("notes"):
        L += ["", "## Notes", "", meta["notes"]]
    write_text(doc, "\n".join(L) + "\n")


def latest(path: Path) -> list[dict[str, Any]]:
    recs: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                recs[r["model"]] = r
    return [recs[n] for n in SPECS if n in recs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(SPECS), choices=list(SPECS))
    ap.add_argument("--quick", action="store_true",
                    help="2 sessions of 20 timed runs after 3 warm-up (default 5 sessions of 40 after 5)")
    ap.add_argument("--runs", type=int, help="timed runs per artifact, thread count and session")
    ap.add_argument("--sessions", type=int, help="fresh sessions per artifact and thread count (default 5, quick 2)")
    ap.add_argument("--work", default=str(ROOT / "out" / "fast-artifacts"), help="artifact cache and results.jsonl")
    ap.add_argument("--reconvert", action="store_true", help="convert again even when cached artifacts exist")
    ap.add_argument("--convert-only", action="store_true",
                    help="only fill the artifact cache (run several of these in parallel, then time in one run)")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "fast-artifacts.md"))
    ap.add_argument("--doc-only", action="store_true", help="rewrite the doc from WORK/results.jsonl")
    ap.add_argument("--notes", default="", help="markdown appended to the doc under 'Notes'")
    args = ap.parse_args(argv)
    runs = args.runs or (20 if args.quick else 40)
    sessions = args.sessions or (2 if args.quick else 5)
    warmup = 3 if args.quick else 5
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = work / "results.jsonl"
    meta_path = work / "meta.json"
    if not args.doc_only:
        from edge._io import append_jsonl, write_json

        meta = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
                "tools": tool_versions(), "load_start": _load(), "quick": args.quick,
                "command": "python benchmarks/bench_fast_artifacts.py " + " ".join(_without_notes(
                    sys.argv[1:] if argv is None else argv))}
        for name in args.models:
            t0 = time.perf_counter()
            rec = bench_network(name, work, runs, warmup, args.reconvert, args.convert_only, sessions)
            if args.convert_only:
                print(f"{name}: converted in {time.perf_counter() - t0:.0f}s", flush=True)
                continue
            append_jsonl(results, rec)
            print(f"{name}: done in {time.perf_counter() - t0:.0f}s; "
                  + "; ".join(f"{g}: {v} ({d})" for g, v, d in goals(rec)), flush=True)
        if args.convert_only:
            return 0
        meta["load_end"] = _load()
        write_json(meta_path, meta)
    meta = json.loads(meta_path.read_text())
    if args.notes:
        meta["notes"] = args.notes
    records = latest(results)
    if args.doc_only:  # op counts are cheap and deterministic: re-read them from the cached artifacts
        for r in records:
            r["graphs"] = graph_stats(r["model"], work)
    write_doc(records, Path(args.doc), meta)
    print(f"wrote {args.doc}")
    return 0


def _without_notes(argv: list[str]) -> list[str]:
    """The command line as the doc quotes it: the ``--notes`` text is the doc's own Notes section."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--notes":
            out.append("--notes ...")
            skip = True
        elif a.startswith("--notes="):
            out.append("--notes ...")
        else:
            out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
