"""Quantization benchmark: fidelity, size and host latency of every integer mode against fp32, per family.

For each model and target (ONNX, TFLite, Core ML) the fp32 artifact is converted once with the export pipeline's own
target adapter; every integer mode is then made from it with ``edge.export.quantize`` exactly as
``edge-export --int8`` would, and checked with the pipeline's numerics gate (same verification images). Per
artifact it records output SQNR / top-1 agreement against PyTorch, file size, and host latency at 1 and 2
threads (median and 10th percentile: 2-thread medians are bimodal on a shared 2-core VM).

Extra studies:
  --engines       TFLite int8 through ai-edge-quantizer and through litert-torch PT2E (fidelity, float ops left)
  --onnx-formats  ONNX int8 layouts (QDQ / QOperator, u8 / s8 activations, reduce_range) and ORT session settings

Results go to a JSON-lines file as each measurement finishes (a crash keeps what was measured); ``--render``
turns it into docs/quant-bench.md.

    .venv/bin/python benchmarks/bench_quant.py --models ghostnet-1.0x,efficientformer-l1 --engines --onnx-formats
    .venv/bin/python benchmarks/bench_quant.py --render
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge._io import path_size  # noqa: E402 - after the repo root is on the path (a .mlpackage is a folder)

DEFAULT_MODELS = ("ghostnet-1.0x", "mobilenetv3-large-1.0", "efficientformer-l1", "efficientformerv2-s0",
                  "mobileformer-26m")
MODES = ("int8", "int8w", "w8a16", "int8dyn")
RESULTS = ROOT / "benchmarks" / "results" / "quant.jsonl"
DOC = ROOT / "docs" / "quant-bench.md"
GOAL_SIZE = 0.30  # int8 files at most 0.30x fp32 (quantization issue)
GOAL_TFLITE_SPEEDUP = 1.8  # TFLite int8 at least 1.8x faster than fp32 (fast-artifacts issue)


# ------------------------------------------------------------------------------------------------- timing


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"median": round(float(np.median(a)), 3), "p10": round(float(np.percentile(a, 10)), 3),
            "p90": round(float(np.percentile(a, 90)), 3), "runs": len(ms)}


def _onnx_call(path: Path, x: np.ndarray, threads: int, config: dict[str, str] | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)


def _tflite_call(path: Path, x: np.ndarray, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    from edge.export.quantize.fidelity import quantize_to

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], quantize_to(x, d))
    return it.invoke


def interleaved_latency(items: list[dict[str, Any]], x: np.ndarray, runs: int) -> None:
    """Time every artifact of one model round-robin (one call each per round), so load from other jobs on this
    shared VM hits all of them alike; fills ``item["latency_ms"]`` with median / p10 / p90 at 1 and 2 threads."""
    items = [it for it in items if it["target"] in ("onnx", "tflite")]  # Core ML runs only on macOS
    for threads in (1, 2):
        calls = []
        for it in items:
            if it["target"] == "onnx":
                calls.append(_onnx_call(it["path"], x, threads, it.get("session_config")))
            else:
                calls.append(_tflite_call(it["path"], x, threads))
        for call in calls:
            for _ in range(max(5, runs // 10)):
                call()
        samples: list[list[float]] = [[] for _ in calls]
        load = os.getloadavg()[0]
        for _ in range(runs):
            for k, call in enumerate(calls):
                t0 = time.perf_counter()
                call()
                samples[k].append((time.perf_counter() - t0) * 1e3)
        for it, ms in zip(items, samples):
            it.setdefault("latency_ms", {})[f"t{threads}"] = {**_stats(ms), "loadavg_1min": round(load, 1)}
        del calls


# ------------------------------------------------------------------------------------------------- export


class Session:
    """One model: loaded once, reference outputs once, fp32 artifact per target once."""

    def __init__(self, name: str, work: Path) -> None:
        from edge._progress import Progress
        from edge.export.loader import load
        from edge.export.pipeline import _reference

        self.progress = Progress(quiet=True)
        self.loaded = load(name)
        self.img = int(self.loaded.default_img_size)
        self.shared = _reference(self.loaded, self.img, "int8", self.progress)
        self.work = work
        self.fp32: dict[str, Path] = {}

    def ctx(self, target: str, precision: str, workdir: Path, quant: Any = None) -> Any:
        from edge.export.context import ExportContext, ExportOptions, QuantOptions, deploy_arithmetic
        from edge.export.targets import TARGETS

        workdir.mkdir(parents=True, exist_ok=True)
        ld = self.loaded
        layout = TARGETS[target].layout  # the deploy form the pipeline converts for this target
        return ExportContext(name=ld.name, model=ld.deploy(layout, deploy_arithmetic(precision)), layout=layout,
                             info=ld.info,
                             example=self.shared["example"],
                             img_size=self.img, target=target, precision=precision, workdir=workdir,
                             options=ExportOptions(quant=quant or QuantOptions()), mean=tuple(ld.mean),
                             std=tuple(ld.std), progress=self.progress, output_names=self.shared["output_names"],
                             output_shapes=self.shared["output_shapes"], shared=self.shared)

    def convert_fp32(self, target: str) -> tuple[Path, float]:
        from edge.export.targets import TARGETS

        t0 = time.perf_counter()
        ctx = self.ctx(target, "fp32", self.work / f"{target}-fp32")
        path = TARGETS[target].convert(ctx)
        self.fp32[target] = path
        return path, time.perf_counter() - t0

    def quantize(self, target: str, precision: str, tag: str, quant: Any = None) -> tuple[Path, dict[str, Any], float]:
        from edge.export import quantize as q

        t0 = time.perf_counter()
        ctx = self.ctx(target, precision, self.work / f"{target}-{tag}", quant)
        ctx.float_artifact = self.fp32[target]
        path = q.quantize(ctx)
        return path, ctx.extras, time.perf_counter() - t0

    def gate(self, target: str, precision: str, path: Path, extras: dict[str, Any] | None = None) -> dict[str, Any]:
        from edge.export.pipeline import _io, check_artifact
        from edge.export.targets import TARGETS

        ctx = self.ctx(target, precision, path.parent)
        ctx.extras.update(extras or {})
        ins, outs = _io(TARGETS[target], path, ctx)
        io = {"inputs": ins, "outputs": outs, "preprocess": self.loaded.preprocess(self.img), "image_input": None}
        rep = check_artifact(TARGETS[target], path, io, precision, self.shared["inputs"], self.shared["ref"],
                             self.shared["output_names"])
        first = next(iter(rep["outputs"].values()), {}) if rep["outputs"] else {}
        return {"passed": rep["passed"], "sqnr_db": first.get("sqnr_db"), "top1_agree": first.get("top1_agree"),
                "cosine": first.get("cosine"), "failures": rep["failures"]}


def float_ops(path: Path) -> dict[str, int]:
    """How far from full-integer a .tflite is: QUANTIZE / DEQUANTIZE ops and ops computing in float."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    td = {t["index"]: t for t in it.get_tensor_details()}
    q = dq = flt = 0
    for op in it._get_ops_details():
        name = op["op_name"]
        if name == "DELEGATE":
            continue
        if name == "QUANTIZE":
            q += 1
        elif name == "DEQUANTIZE":
            dq += 1
        elif any(td[i]["dtype"] == np.float32 for i in op["outputs"] if i >= 0):
            flt += 1
    return {"quantize": q, "dequantize": dq, "float_ops": flt}


def record(path: Path, rec: dict[str, Any]) -> None:
    from edge._io import append_jsonl

    rec = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **rec}
    append_jsonl(path, rec)
    print(json.dumps({k: v for k, v in rec.items() if k not in ("per_layer",)})[:400], flush=True)


def _add(s: Session, args: argparse.Namespace, items: list[dict[str, Any]], base: dict[str, Any], fp32: Path,
         kind: str, precision: str, tag: str, quant: Any = None, **extra: Any) -> dict[str, Any] | None:
    """Quantize one variant from the fp32 artifact, gate it, and queue it for timing."""
    target = base["target"]
    try:
        path, extras, secs = s.quantize(target, precision, tag, quant)
    except Exception as e:  # noqa: BLE001 - one failing mode must not lose the others
        traceback.print_exc()
        record(args.results, {**base, "kind": kind, "precision": precision, **extra,
                              "error": f"{type(e).__name__}: {e}"[:500]})
        return None
    qx = extras.get("quantization") or {}
    layers = qx.get("fidelity", {}).get("layers", {}).get("most_sensitive") or []
    item = {**base, "kind": kind, "precision": precision, **extra, "path": path, "size_bytes": path_size(path),
            "size_ratio": round(path_size(path) / path_size(fp32), 3), "seconds": round(secs, 1),
            "engine": qx.get("engine"), "most_sensitive": [(r["layer"], r.get("module"), r["loss_db"])
                                                           for r in layers[:5]],
            **s.gate(target, precision, path, extras)}
    if target == "tflite":
        item["graph"] = float_ops(path)
    items.append(item)
    return item


def run_model(name: str, args: argparse.Namespace) -> None:
    from edge.export.context import QuantOptions
    from edge.export.quantize import supported

    work = Path(tempfile.mkdtemp(prefix=f"bench-quant-{name}-"))
    try:
        s = Session(name, work)
        x = s.shared["inputs"][:1].numpy()
        for target in args.targets:
            items: list[dict[str, Any]] = []
            base = {"model": name, "family": s.loaded.family, "target": target}
            fp32, secs = s.convert_fp32(target)
            items.append({**base, "kind": "mode", "precision": "fp32", "path": fp32, "size_bytes": path_size(fp32),
                          "seconds": round(secs, 1), **s.gate(target, "fp32", fp32)})
            for mode in args.modes:
                if supported(target, mode):  # e.g. Core ML has no w8a16 / int8dyn (edge.export.quantize.WHY_NOT)
                    _add(s, args, items, base, fp32, "mode", mode, mode)
            if target == "tflite" and args.engines:
                for engine in ("aeq", "pt2e"):
                    _add(s, args, items, base, fp32, "engine", "int8", f"int8-{engine}", QuantOptions(engine=engine),
                         engine=engine)
            if target == "onnx" and args.onnx_formats:
                from edge.export.quantize.onnx import INT8_FORMATS

                for fmt in INT8_FORMATS:
                    qo = QuantOptions()
                    qo.onnx_format = fmt  # type: ignore[attr-defined]
                    item = _add(s, args, items, base, fp32, "onnx_format", "int8", f"int8-{fmt}", qo, format=fmt,
                                session_config={})
                    if item is not None and "s8" in fmt:  # the same file with ORT's s8-kernel setting
                        cfg = {"session.qdqisint8allowed": "1"}
                        items.append({**item, "session_config": cfg, **_gate_with_config(s, item["path"], cfg)})
            for variant in args.variants:  # "what gets closer": other int8 settings, same fp32 artifact
                tag = "int8-" + "-".join(f"{k}={v}" for k, v in sorted(variant.items()))
                _add(s, args, items, base, fp32, "variant", "int8", tag, QuantOptions(**variant), variant=variant)
            interleaved_latency(items, x, args.runs)
            for it in items:
                record(args.results, {k: v for k, v in it.items() if k != "path"})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def margin_study(name: str, args: argparse.Namespace) -> None:
    """Why top-1 agreement is hard for these networks: how close each verification image's top two logits are.

    With white noise at a given output SQNR (noise rms = logit rms / 10^(dB/20)), the difference of two logits
    moves by a normal variable of std sqrt(2) x noise rms; the expected agreement is the mean probability that it
    does not exceed the top-1/top-2 gap. This is a model of the noise, not a measurement of any artifact."""
    from math import erf, sqrt

    from edge._progress import Progress
    from edge.export.loader import load
    from edge.export.pipeline import _reference

    ld = load(name)
    shared = _reference(ld, int(ld.default_img_size), "int8", Progress(quiet=True))
    ref = np.asarray(shared["ref"][0], np.float64)
    top2 = np.sort(ref, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    rms = float(np.sqrt(np.mean(ref**2)))
    expect = {}
    for db in (20, 30, 40):
        sd = sqrt(2) * rms / 10 ** (db / 20)
        expect[str(db)] = round(float(np.mean([erf(g / sd / sqrt(2)) for g in gap])), 3)
    record(args.results, {"kind": "margins", "model": name, "family": ld.family, "logit_rms": round(rms, 4),
                          "gap_over_rms": [round(float(g / rms), 4) for g in np.sort(gap)],
                          "median_gap_over_rms": round(float(np.median(gap) / rms), 4),
                          "expected_top1_agree": expect})


def _gate_with_config(s: Session, path: Path, cfg: dict[str, str]) -> dict[str, Any]:
    """Fidelity of an ONNX model run with extra ORT session settings (the gate's runner uses none)."""
    import onnxruntime as ort

    from edge.export.numerics import compare

    so = ort.SessionOptions()
    so.log_severity_level = 3
    for k, v in cfg.items():
        so.add_session_config_entry(k, v)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    got = np.concatenate([sess.run(None, {name: s.shared["inputs"][i:i + 1].numpy()})[0]
                          for i in range(s.shared["inputs"].shape[0])])
    m = compare(s.shared["ref"][0], got)
    return {"sqnr_db": m["sqnr_db"], "top1_agree": m["top1_agree"], "cosine": m["cosine"]}


# ------------------------------------------------------------------------------------------------- report


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def render(results: Path, doc: Path) -> str:
    from edge._io import read_jsonl, write_text

    recs = read_jsonl(results) + read_jsonl(results.with_name("margins.jsonl"))
    latest: dict[tuple, dict[str, Any]] = {}
    for r in recs:  # the newest record of each measurement wins
        key = (r.get("kind"), r.get("model"), r.get("target"), r.get("precision"), r.get("engine"), r.get("format"),
               json.dumps(r.get("session_config") or {}), json.dumps(r.get("variant") or {}, sort_keys=True))
        latest[key] = r
    # an error is superseded by a newer successful measurement of the same artifact (e.g. once the engine is recorded)
    ok_at = {}
    for r in latest.values():
        if "error" not in r:
            k = (r.get("kind"), r.get("model"), r.get("target"), r.get("precision"))
            ok_at[k] = max(ok_at.get(k, ""), r.get("time", ""))
    rows = [r for r in latest.values() if "error" not in r or ok_at.get(
        (r.get("kind"), r.get("model"), r.get("target"), r.get("precision")), "") <= r.get("time", "")]
    modes = [r for r in rows if r.get("kind") == "mode"]
    fp32 = {(r["model"], r["target"]): r for r in modes if r.get("precision") == "fp32" and "error" not in r}
    env = _environment()
    out = ["# Quantization benchmark", "",
           f"Generated by `benchmarks/bench_quant.py` from `{_rel(results)}` on {env['date']}.",
           f"Host: {env['cpu']}, {env['cores']} cores shared with other jobs; {env['python']}; "
           f"{env['tools']}.", "",
           "Every integer artifact is made from the same fp32 artifact by `edge.export.quantize` (default settings: "
           "built-in calibration photos, 32 samples, minmax) and checked by the export's numerics gate on its 16 "
           "verification images against the PyTorch network. Zoo networks are random-init with BatchNorm "
           "statistics re-estimated on natural photos (no hub weights here), so activations depend on the input.",
           "", "Latency: host, median and 10th percentile (p10) of "
           f"{_runs(rows)} runs after warm-up, ms, at 1 and 2 threads (ONNX Runtime CPU EP; LiteRT with XNNPACK). "
           "This VM has 2 cores shared with other agents, so 2-thread numbers in particular are noisy: compare "
           "p10s. Core ML rows have fidelity and size only: its runtime exists only on macOS, and its numbers come "
           "from edge's MIL reference interpreter.", ""]
    out += ["## Fidelity and size per family", "",
            f"Goals: W8A8 (int8, w8a16, int8dyn) output SQNR >= 20 dB and top-1 agreement >= 90%; weight-only "
            f"(int8w) >= 30 dB; int8 files <= {GOAL_SIZE:.2f}x fp32.", "",
            "| model | target | mode | SQNR dB | top-1 agree | gate | size MB | size ratio | engine |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(modes, key=lambda r: (r["model"], r["target"], _order(r.get("precision")))):
        if "error" in r:
            out.append(f"| {r['model']} | {r['target']} | {r.get('precision')} | error: {r['error'][:80]} |||||")
            continue
        ratio = r.get("size_ratio")
        size_flag = "" if ratio is None or r["precision"] in ("fp32",) else (" ✓" if ratio <= GOAL_SIZE else " ✗")
        out.append(f"| {r['model']} | {r['target']} | {r['precision']} | {_fmt(r.get('sqnr_db'))} | "
                   f"{_fmt(r.get('top1_agree'), 2)} | {'pass' if r.get('passed') else 'FAIL'} | "
                   f"{r['size_bytes'] / 1e6:.2f} | {_fmt(ratio, 2)}{size_flag} | {r.get('engine') or ''} |")
    out += ["", "## Host latency per mode (ms)", "",
            "Speed-up = fp32 median / mode median (1 thread). Goal: TFLite int8 >= "
            f"{GOAL_TFLITE_SPEEDUP}x faster than fp32; ONNX int8 not slower than fp32.", "",
            "| model | target | mode | 1T median | 1T p10 | 2T median | 2T p10 | speed-up 1T |",
            "|---|---|---|---|---|---|---|---|"]
    for r in sorted(modes, key=lambda r: (r["model"], r["target"], _order(r.get("precision")))):
        if "error" in r or "latency_ms" not in r:
            continue
        lat = r["latency_ms"]
        base = fp32.get((r["model"], r["target"]))
        sp = base["latency_ms"]["t1"]["median"] / lat["t1"]["median"] if base else None
        out.append(f"| {r['model']} | {r['target']} | {r['precision']} | {lat['t1']['median']:.2f} | "
                   f"{lat['t1']['p10']:.2f} | {lat['t2']['median']:.2f} | {lat['t2']['p10']:.2f} | "
                   f"{_fmt(sp, 2)}x |")
    engines = [r for r in rows if r.get("kind") == "engine"]
    if engines:
        out += ["", "## TFLite int8: ai-edge-quantizer vs litert-torch PT2E", "",
                "`float ops` counts ops left computing in float (PT2E annotates conv/linear/add/mul/cat/pool only); "
                "QUANTIZE/DEQUANTIZE pairs surround each float island.", "",
                "| model | engine | SQNR dB | top-1 agree | gate | QUANTIZE | DEQUANTIZE | float ops | 1T median | "
                "quantize s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(engines, key=lambda r: (r["model"], r.get("engine", ""))):
            if "error" in r:
                out.append(f"| {r['model']} | {r.get('engine')} | error: {r['error'][:80]} ||||||||")
                continue
            g = r["graph"]
            out.append(f"| {r['model']} | {r['engine']} | {_fmt(r.get('sqnr_db'))} | {_fmt(r.get('top1_agree'), 2)} | "
                       f"{'pass' if r.get('passed') else 'FAIL'} | {g['quantize']} | {g['dequantize']} | "
                       f"{g['float_ops']} | {r['latency_ms']['t1']['median']:.2f} | {r.get('seconds')} |")
    formats = [r for r in rows if r.get("kind") == "onnx_format"]
    if formats:
        out += ["", "## ONNX int8 layouts and ORT settings", "",
                "`qdq`/`qop` = QDQ or QOperator format; `u8`/`s8` = activation type; `r` = reduce_range (7-bit "
                "weights). `qdqisint8allowed` = ORT session setting keeping s8 QDQ kernels on x86.", "",
                "| model | layout | session setting | SQNR dB | top-1 agree | 1T median | 1T p10 | 2T p10 | fp32 1T |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(formats, key=lambda r: (r["model"], r.get("format", ""))):
            if "error" in r:
                out.append(f"| {r['model']} | {r.get('format')} | error: {r['error'][:80]} |||||||")
                continue
            base = fp32.get((r["model"], "onnx"))
            cfg = ", ".join(f"{k}={v}" for k, v in (r.get("session_config") or {}).items()) or "default"
            lat = r["latency_ms"]
            out.append(f"| {r['model']} | {r['format']} | {cfg} | {_fmt(r.get('sqnr_db'))} | "
                       f"{_fmt(r.get('top1_agree'), 2)} | {lat['t1']['median']:.2f} | {lat['t1']['p10']:.2f} | "
                       f"{lat['t2']['p10']:.2f} | {base['latency_ms']['t1']['median'] if base else '–'} |")
    variants = [r for r in rows if r.get("kind") == "variant"]
    if variants:
        out += ["", "## What gets closer: other int8 settings", "",
                "Same fp32 artifact, int8 with non-default options (`calib_method`, `auto_mixed` = keep the N layers "
                "that lose the most SQNR in float, `calib_samples`). Default row = the int8 row above.", "",
                "| model | target | settings | SQNR dB | top-1 agree | gate | size ratio | 1T median |",
                "|---|---|---|---|---|---|---|---|"]
        for r in sorted(variants, key=lambda r: (r["model"], r["target"], json.dumps(r.get("variant")))):
            if "error" in r:
                out.append(f"| {r['model']} | {r['target']} | {r.get('variant')} | error: {r['error'][:80]} |||||")
                continue
            v = ", ".join(f"{k}={val}" for k, val in (r.get("variant") or {}).items())
            out.append(f"| {r['model']} | {r['target']} | {v} | {_fmt(r.get('sqnr_db'))} | "
                       f"{_fmt(r.get('top1_agree'), 2)} | {'pass' if r.get('passed') else 'FAIL'} | "
                       f"{_fmt(r.get('size_ratio'), 2)} | {r['latency_ms']['t1']['median']:.2f} |")
    margins = [r for r in rows if r.get("kind") == "margins"]
    if margins:
        out += ["", "## Why top-1 agreement is fragile here", "",
                "Random-init networks with re-estimated BatchNorm have nearly tied logits. Per model: the median gap "
                "between the top two logits of the 16 verification images, relative to the logits' rms, and the "
                "top-1 agreement expected if the output carried white noise at 20 / 30 / 40 dB SQNR (a noise model, "
                "`--margins`; not a measurement of an artifact).", "",
                "| model | median gap / rms | smallest gaps / rms | expected top-1 at 20 dB | 30 dB | 40 dB |",
                "|---|---|---|---|---|---|"]
        for r in sorted(margins, key=lambda r: r["model"]):
            e = r["expected_top1_agree"]
            out.append(f"| {r['model']} | {r['median_gap_over_rms']:.3f} | "
                       f"{', '.join(f'{g:.3f}' for g in r['gap_over_rms'][:3])} | {e['20']:.2f} | {e['30']:.2f} | "
                       f"{e['40']:.2f} |")
    text = "\n".join(out) + "\n"
    write_text(doc, text)
    return text


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def _order(p: str | None) -> int:
    return ["fp32", "int8", "w8a16", "int8dyn", "int8w"].index(p) if p in ("fp32", "int8", "w8a16", "int8dyn",
                                                                           "int8w") else 9


def _runs(rows: list[dict[str, Any]]) -> str:
    ns = {r["latency_ms"]["t1"]["runs"] for r in rows if isinstance(r.get("latency_ms"), dict)}
    return "/".join(str(n) for n in sorted(ns)) or "?"


def _environment() -> dict[str, str]:
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    tools = ", ".join(f"{d} {md.version(d)}" for d in ("torch", "onnxruntime", "ai-edge-litert", "ai-edge-quantizer",
                                                        "litert-torch"))
    return {"date": dt.date.today().isoformat(), "cpu": cpu, "cores": str(os.cpu_count()),
            "python": f"Python {platform.python_version()}", "tools": tools}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated zoo names")
    p.add_argument("--targets", default="onnx,tflite,coreml")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--engines", action="store_true", help="TFLite int8: ai-edge-quantizer vs PT2E")
    p.add_argument("--onnx-formats", action="store_true", help="ONNX int8 layouts and ORT settings")
    p.add_argument("--variants", type=json.loads, default=[],
                   help='int8 settings to compare, JSON list of QuantOptions fields, e.g. \'[{"auto_mixed": 2}]\'')
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--doc", type=Path, default=DOC)
    p.add_argument("--render", action="store_true", help="only write the markdown from existing results")
    p.add_argument("--margins", action="store_true", help="only the top-1/top-2 logit-gap study")
    args = p.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    args.modes = [m for m in args.modes.split(",") if m]
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if not args.render:
        for name in [m for m in args.models.split(",") if m]:
            try:
                if args.margins:
                    margin_study(name, args)
                else:
                    run_model(name, args)
            except Exception as e:  # noqa: BLE001
                record(args.results, {"kind": "error", "model": name, "error": f"{type(e).__name__}: {e}"[:500]})
                traceback.print_exc()
    render(args.results, args.doc)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
