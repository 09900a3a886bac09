"""TFLite (LiteRT) quantization: ai-edge-quantizer recipes on the checked float .tflite, or litert-torch PT2E.

Two engines make W8A8 models with int8 input and output:

- ``aeq``: ai-edge-quantizer ``static_wi8_ai8`` on the fp32 .tflite. Every op it supports (HARD_SWISH,
  LayerNorm's MEAN/RSQRT, SOFTMAX, BATCH_MATMUL ...) becomes int8, so the graph is integer end to end. Its
  calibrator keeps a moving average of each tensor's min/max (smoothing 0.95), which clips: on the test networks
  it cost 10-25 dB. We calibrate with the same interpreter but keep the global extremes (``minmax``) or a
  histogram threshold (``percentile``/``entropy``, :class:`~edge.export.quantize.calibration.RangeCollector`).
- ``pt2e``: litert-torch's ``PT2EQuantizer`` (per-channel symmetric weights, HistogramObserver activations),
  torchao ``prepare_pt2e``/``convert_pt2e``, converted with ``QuantConfig(pt2e_quantizer=...)``. It annotates
  conv/linear/add/mul/cat/pooling only; hardswish, LayerNorm, softmax, GELU and attention matmuls stay float
  between DEQUANTIZE/QUANTIZE pairs, which keeps fidelity higher but is not full-integer.

``ENGINE_BY_FAMILY`` holds the choice per zoo family, measured by ``benchmarks/bench_quant.py --engines``
(docs/quant-bench.md), by output fidelity, with ``aeq`` preferred on a tie because its graph is fully integer.
int8w / w8a16 / int8dyn always use ai-edge-quantizer recipes (``weight_only_wi8_afp32``, ``static_wi8_ai16``,
``dynamic_wi8_afp32``).

Static models get integer input and output tensors (int8, int16 for w8a16); their scale and zero point are
recorded in ``ctx.extras["io_quantization"]``. ``--float-io`` keeps float I/O (QUANTIZE / DEQUANTIZE inside).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import EdgeError
from edge.export.quantize import NO_CALIBRATION
from edge.export.quantize.calibration import (
    CalibrationSet,
    RangeCollector,
    calibration_set,
    note,
    warn_unused_calibration,
)
from edge.export.quantize.fidelity import (
    close_names,
    in_module,
    module_paths_of_tflite_name,
    without_io_wrapper,
)
from edge.export.tflite_graph import (
    INTEGER_REWRITES,
    QUANTIZED_MATMUL_REWRITES,
    rewrite_in_place,
    share_repeated_vectors,
)

if TYPE_CHECKING:
    import torch

    from edge.export.context import ExportContext

ARTIFACT = "model.tflite"
ENGINES = ("aeq", "pt2e")
# Measured per family (docs/quant-bench.md, "PT2E vs ai-edge-quantizer"); anything else -> DEFAULT_ENGINE.
ENGINE_BY_FAMILY: dict[str, str] = {}
DEFAULT_ENGINE = "aeq"
RECIPES = {"int8": "static_wi8_ai8", "w8a16": "static_wi8_ai16", "int8w": "weight_only_wi8_afp32",
           "int8dyn": "dynamic_wi8_afp32"}
STATIC = ("int8", "w8a16")
# W8A8 keeps these op types float by default (ai-edge-quantizer engine). Measured here (LiteRT, XNNPACK, 1 thread):
# efficientformerv2-s0 output SQNR 4.6 dB with everything int8, 25.5 dB with the attention ops float; XNNPACK has
# no int8 GELU or HARD_SWISH, so each int8 one splits the delegated graph (mobilenetv3-large: 22 partitions and
# 0.60x fp32's speed with int8 HARD_SWISH, 1 partition and 0.99x with it float, fidelity unchanged;
# benchmarks/bench_fast_artifacts.py, timed interleaved).
FLOAT_OPS = ("BATCH_MATMUL", "SOFTMAX", "GELU", "HARD_SWISH")
# W8A16 and dynamic-range int8 keep BATCH_MATMUL float: a constant-weight batched matmul (EfficientFormerV2's
# per-head projections) quantized by those recipes fails at run time in LiteRT's batch_matmul.cc
# ("(lhs_data->type == kTfLiteFloat32 && rhs_data->type == kTfLiteInt8) || lhs_data->type == rhs_data->type").
# Dynamic-range int8 also keeps DEPTHWISE_CONV_2D float: XNNPACK has no kernel for a depthwise conv with int8
# weights and float activations, so LiteRT ran each one outside the delegate (ghostnet-1.0x: 45 ops, 37 partitions,
# 2.6x fp32's time; benchmarks/weight_only_dynamic.py). Their weights (9 per channel) are few.
FLOAT_OPS_BY_PRECISION = {"int8": FLOAT_OPS, "w8a16": ("BATCH_MATMUL",),
                          "int8dyn": ("BATCH_MATMUL", "DEPTHWISE_CONV_2D")}
# ... but their constant operands are still stored int8, dequantized in front of the op (weight-only). (The
# largest of them, EfficientFormerV2's output projection summed over heads, is no BATCH_MATMUL any more by then:
# INTEGER_REWRITES turn it into a CONV_2D, which computes in int8.) The attention families' per-head projections
# hold most of their weights (efficientformerv2-s0 W8A8: 0.50x fp32's
# size with them float, 0.31x with int8 weights, 0.28x once packed by tflite_graph.share_repeated_vectors; output
# SQNR 26.1 dB either way; XNNPACK folds the DEQUANTIZE of a constant at load time). Matmuls of two activations
# have no constant to store.
INT8_WEIGHT_FLOAT_OPS = ("BATCH_MATMUL", "DEPTHWISE_CONV_2D")
# Where the recipe's other matmuls compute in int8 (W8A8, dynamic range), a batched matmul whose right operand is
# such a constant then reads it int8 directly (tflite_graph.hybrid_constant_matmuls): LiteRT and XNNPACK run it with
# the left operand quantized per row at run time.
MATMULS_IN_INT8 = ("int8", "int8dyn")
HYBRID_WHY = ("a batched matmul with a constant right operand (a per-head projection) reads its int8 weights "
              "directly and quantizes its left operand per row at run time (hybrid int8); a constant left operand "
              "is stored int8 and dequantized in front of the op")
DEPTHWISE_DYNAMIC_WHY = ("XNNPACK has no depthwise convolution with int8 weights and float activations, so LiteRT "
                         "would run each one outside the delegate; they compute in float from int8-stored weights "
                         "dequantized in front")
BATCH_MATMUL_REJECTED = ("LiteRT's BATCH_MATMUL kernel rejects the mixed operand types this recipe gives a "
                         "constant-weight batched matmul")
BATCH_MATMUL_FLOAT = (", so BATCH_MATMUL computes in float (its constant operands are stored int8 and dequantized in "
                      "front of it)")
FLOAT_OPS_WHY = ("attention matmuls (q @ k^T, softmax @ v) get one per-tensor int8 scale per operand and lose the "
                 "scores below a few outliers; softmax outputs need more than int8's 1/255 steps; XNNPACK runs "
                 "no int8 GELU or HARD_SWISH, so int8 ones would split the delegated graph. These ops hold no "
                 "weights, except batched matmuls with a constant operand: ")


def quantize(ctx: ExportContext) -> Path:
    """Write ``ctx.workdir/model.tflite`` quantized to ``ctx.precision``; record the mode in ``ctx.extras``."""
    from edge.export.quantize import fidelity

    if ctx.float_artifact is None or not Path(ctx.float_artifact).is_file():
        raise EdgeError("the TFLite quantizer needs the fp32 model.tflite first",
                        "the pipeline converts fp32 before quantize")
    q = ctx.options.quant
    tmp = Path(ctx.workdir) / ".quantize-tflite"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        float_copy = tmp / "float.tflite"
        shutil.copyfile(ctx.float_artifact, float_copy)
        engine = choose_engine(ctx)
        # PT2E quantizes the PyTorch program, not this file
        pre_rewrites = rewrite_in_place(float_copy, INTEGER_REWRITES) if engine == "aeq" else {}
        graph = TfliteGraph(float_copy)
        calib = None
        if ctx.precision in NO_CALIBRATION:
            warn_unused_calibration(ctx)
            if q.float_io:
                note(ctx, f"--float-io has no effect on {ctx.precision}: its input and output are already float")
        else:
            calib = calibration_set(ctx)
        nhwc = bool(ctx.options.channels_last)
        if engine == "pt2e":
            excluded = list(q.keep_float)
            graphs: dict[str, Any] = {}

            def build(exclude: Sequence[str], path: Path) -> Path:
                return pt2e_quantize(ctx, calib, path, exclude, float_io=q.float_io)

            artifact = pt2e_quantize(ctx, calib, tmp / "pt2e.tflite", excluded, float_io=q.float_io, keep=graphs)

            def layer_fn(float_path: Path, quant_path: Path, xs: list[np.ndarray], graph: Any) -> list[dict]:
                return pt2e_layer_sqnr(graphs, xs)
        else:
            excluded = graph.resolve(q.keep_float)
            aeq_cache: dict[str, Any] = {}  # calibration ranges and rewrite counts, per export

            def build(exclude: Sequence[str], path: Path) -> Path:
                return aeq_quantize(ctx.precision, float_copy, path, calib, q.calib_method, exclude, q.float_io,
                                    nhwc, aeq_cache)

            with ctx.progress.stage("quantize", f"tflite {ctx.precision} (ai-edge-quantizer {RECIPES[ctx.precision]})"):
                artifact = build(excluded, tmp / "aeq.tflite")
            layer_fn = fidelity.tflite_layer_sqnr
        report = fidelity.study(
            ctx, graph, float_path=float_copy, quant_path=artifact, runner=fidelity.target_runner(ctx),
            rebuild=lambda exclude: build(exclude, tmp / f"{engine}{len(exclude)}.tflite"),
            excluded=excluded, layer_fn=layer_fn, layer_input=fidelity.io_layout(ctx))
        artifact = report.pop("_artifact")
        if engine == "aeq":  # the float graph's rewrites, then the quantized graph's
            done = {**pre_rewrites, **aeq_cache.get("rewrites", {}).get(str(artifact), {})}
            before = ctx.extras.get("graph_rewrites") or {}
            ctx.extras["graph_rewrites"] = {k: before.get(k, 0) + done.get(k, 0) for k in {**before, **done}}
        final = Path(ctx.workdir) / ARTIFACT
        shutil.copyfile(artifact, final)
        packing = share_repeated_vectors(final)  # same graph and numbers, fewer bytes
        io_q = io_quantization(final)
        if any(io_q["inputs"] + io_q["outputs"]):
            ctx.extras["io_quantization"] = io_q  # the gate quantizes inputs / dequantizes outputs with these
        ctx.extras["quantization"] = {
            "mode": ctx.precision,
            "how": _how(ctx.precision),
            "engine": engine,
            "engine_why": _engine_why(ctx, engine),
            "tool": "litert-torch PT2E" if engine == "pt2e" else f"ai-edge-quantizer {RECIPES[ctx.precision]}",
            "calibration": calib.record() if calib is not None else None,
            "float_io": bool(q.float_io) or ctx.precision in NO_CALIBRATION,
            "keep_float": list(report.get("kept_float", excluded)),
            "kept_float_by_default": default_float_ops(graph, ctx.precision, engine),
            **report,
            "io_quantization": io_q,
            "packing": packing,
            "recommended_runtime": recommended_runtime(ctx.precision),
            "warnings": ctx.extras.pop("quant_warnings", []),
        }
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def default_float_ops(graph: Any, precision: str, engine: str) -> dict[str, Any] | None:
    """Which of FLOAT_OPS this graph has (float compute by default), with the reason; None when none."""
    if engine != "aeq":
        return None
    ops = FLOAT_OPS_BY_PRECISION.get(precision, ())
    present = {op: n for op in ops if (n := sum(ly["op"] == op for ly in graph.layers))}
    if not present:
        return None
    if precision == "int8dyn":
        reasons = []
        if "BATCH_MATMUL" in present:
            reasons.append(BATCH_MATMUL_REJECTED + "; instead, " + HYBRID_WHY)
        if "DEPTHWISE_CONV_2D" in present:
            reasons.append(DEPTHWISE_DYNAMIC_WHY)
        why = "; ".join(reasons)
    else:
        why = FLOAT_OPS_WHY + HYBRID_WHY if precision == "int8" else BATCH_MATMUL_REJECTED + BATCH_MATMUL_FLOAT
    return {"op_types": present, "int8_weights": [op for op in present if op in INT8_WEIGHT_FLOAT_OPS], "why": why}


def _how(precision: str) -> str:
    from edge.export.quantize import MODES

    return MODES["tflite"][precision]


def choose_engine(ctx: ExportContext) -> str:
    """``aeq`` or ``pt2e`` for int8: the option if given, else the measured choice for the family."""
    want = ctx.options.quant.engine
    if ctx.precision != "int8":
        if want == "pt2e":
            raise EdgeError(f"the PT2E engine makes int8 (W8A8) only, not {ctx.precision}",
                            "drop --engine pt2e; ai-edge-quantizer recipes make the other modes")
        return "aeq"
    if want == "auto":
        family = ctx.info.family if ctx.info is not None else None
        return ENGINE_BY_FAMILY.get(family, DEFAULT_ENGINE)
    if want not in ENGINES:
        raise EdgeError(f"unknown TFLite int8 engine {want!r}", f"use one of auto, {', '.join(ENGINES)}")
    return want


def _engine_why(ctx: ExportContext, engine: str) -> str:
    if ctx.precision != "int8":
        return "only ai-edge-quantizer has this recipe"
    if getattr(ctx.options.quant, "engine", "auto") not in (None, "auto"):
        return "chosen by option"
    family = ctx.info.family if ctx.info is not None else None
    if family in ENGINE_BY_FAMILY:
        return f"measured best output SQNR for the {family} family (docs/quant-bench.md)"
    return "default: full-integer graph (no measurement for this network)"


def recommended_runtime(precision: str) -> str:
    return {
        "int8": "LiteRT XNNPACK on ARM/x86 CPUs, and integer-only accelerators (Edge TPU, Hexagon/NNAPI, Ethos-U) "
                "which need the full-integer graph and int8 I/O",
        "int8w": "any LiteRT CPU / GPU delegate: 4x smaller weights, float compute (XNNPACK dequantizes at load)",
        "w8a16": "LiteRT reference/XNNPACK 16x8 kernels and NPUs with A16W8 support: closer to fp32 than int8",
        "int8dyn": "LiteRT XNNPACK on CPUs when no calibration data exists: int8 matmuls and convolutions with "
                   "activations quantized at run time, depthwise convolutions float; on x86 with AMX often slower "
                   "than fp32 for narrow CNNs",
    }[precision]


def io_quantization(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Each I/O tensor's dtype, scale and zero point (None for float), read from the artifact."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))

    def entry(d: dict[str, Any]) -> dict[str, Any] | None:
        scale, zp = d.get("quantization", (0.0, 0))
        if not scale:
            return None  # float tensor
        return {"name": d["name"], "dtype": str(np.dtype(d["dtype"])), "scale": float(scale), "zero_point": int(zp)}

    return {"inputs": [entry(d) for d in it.get_input_details()],
            "outputs": [entry(d) for d in it.get_output_details()]}


# ------------------------------------------------------------------------------------------------------------------
# ai-edge-quantizer


def aeq_quantize(precision: str, float_path: Path, out: Path, calib: CalibrationSet | None, method: str = "minmax",
                 exclude: Sequence[str] = (), float_io: bool = False, nhwc: bool = False,
                 cache: dict[str, Any] | None = None) -> Path:
    """One ai-edge-quantizer recipe on a float .tflite; ``exclude`` lists op output-tensor names kept float.

    The result gets ``tflite_graph``'s rewrites (the int8 ones let XNNPACK take the whole graph); their counts go
    to ``cache["rewrites"][str(out)]``.
    """
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(float_path), getattr(recipe, RECIPES[precision])())
    pattern = "^(?:" + "|".join(re.escape(n) for n in exclude) + ");" if exclude else None
    if pattern:
        qt.update_quantization_recipe(regex=pattern, operation_name="*", algorithm_key="no_quantize")
    for op in FLOAT_OPS_BY_PRECISION.get(precision, ()):
        if op in INT8_WEIGHT_FLOAT_OPS:
            qt.add_weight_only_config(regex=".*", operation_name=op, num_bits=8)
        else:
            qt.update_quantization_recipe(regex=".*", operation_name=op, algorithm_key="no_quantize")
    if float_io and precision in STATIC:
        for op in ("INPUT", "OUTPUT"):
            qt.update_quantization_recipe(regex=".*", operation_name=op, algorithm_key="no_quantize")
    qsv = None
    if qt.need_calibration:
        if calib is None:
            raise EdgeError(f"{precision} needs calibration images")
        cache = {} if cache is None else cache
        if "qsv" not in cache:  # ranges do not depend on which layers stay float: compute once per export
            cache["qsv"] = aeq_ranges(float_path, qt, calib.numpy(channels_last=nhwc), method)
        qsv = cache["qsv"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = qt.quantize(qsv, enable_progress_report=False)
    out.write_bytes(bytes(result.quantized_model))
    counts = rewrite_in_place(out)
    if precision in MATMULS_IN_INT8:  # the matmuls the user keeps float stay float
        keep = re.compile(pattern) if pattern else None
        counts.update(rewrite_in_place(out, {name: functools.partial(fn, keep=keep)
                                             for name, fn in QUANTIZED_MATMUL_REWRITES.items()}))
    if cache is not None:
        cache.setdefault("rewrites", {})[str(out)] = counts
    return out


def _global_minmax(qsv: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """QSV update keeping the extremes over all samples (ai-edge-quantizer's default is a moving average)."""
    if not qsv:
        return new
    return {"min": np.minimum(qsv["min"], new["min"]), "max": np.maximum(qsv["max"], new["max"])}


def aeq_ranges(float_path: Path, qt: Any, samples: list[np.ndarray], method: str) -> dict[str, Any]:
    """Tensor ranges (QSVs) for the recipe: global min/max from ai-edge-quantizer's calibrator, then, for
    percentile / entropy, thresholds from |x| histograms collected on the same samples."""
    from ai_edge_quantizer import calibrator

    from edge.export.quantize.fidelity import _tflite_tensors

    os.environ.setdefault("TQDM_DISABLE", "1")
    model = float_path.read_bytes()
    sig = _signature(float_path)
    cal = calibrator.Calibrator(model, num_threads=1, qsv_update_func=_global_minmax)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal.calibrate({sig["key"]: [{sig["input"]: s} for s in samples]}, qt._recipe_manager)
    qsv = cal.get_model_qsvs()
    if method == "minmax":
        return qsv
    rc = RangeCollector(method)
    names = [n for n, v in qsv.items() if v and "min" in v]
    for n in names:
        rc.lo[n], rc.hi[n] = float(np.min(qsv[n]["min"])), float(np.max(qsv[n]["max"]))
    for s in samples:
        vals = _tflite_tensors(float_path, s)
        for n in names:
            if n in vals:
                rc.add_hist(n, vals[n])
    out = dict(qsv)
    for n in names:
        lo, hi = rc.range(n)
        out[n] = {**qsv[n], "min": np.full_like(qsv[n]["min"], lo), "max": np.full_like(qsv[n]["max"], hi)}
    return out


def _signature(path: Path) -> dict[str, str]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    sigs = it.get_signature_list()
    if len(sigs) != 1:
        raise EdgeError(f"expected one signature in {path.name}, found {len(sigs)}")
    key = next(iter(sigs))
    if len(sigs[key]["inputs"]) != 1:
        raise EdgeError("TFLite quantization supports single-input networks", "wrap the network to take one image")
    return {"key": key, "input": sigs[key]["inputs"][0]}


# ------------------------------------------------------------------------------------------------------------------
# litert-torch PT2E


def pt2e_quantize(ctx: ExportContext, calib: CalibrationSet | None, out: Path, keep_float: Sequence[str] = (),
                  float_io: bool = False, keep: dict[str, Any] | None = None) -> Path:
    """W8A8 through torch.export + PT2E + litert-torch, the same module / layout the fp32 conversion used.

    ``keep`` (if given) receives the float and the fake-quantized torch graphs, for the per-layer study."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if calib is None:
        raise EdgeError("PT2E int8 needs calibration images")
    if float_io:
        raise EdgeError("--float-io is not available with the PT2E engine (it always writes int8 I/O)",
                        "use the ai-edge-quantizer engine (--engine aeq) for float I/O")
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    module = ctx.model
    if ctx.options.channels_last:
        module = litert_torch.to_channel_last_io(module, args=[0], outputs=ctx.channels_last_outputs).eval()
    example = ctx.example_io
    io_wrapped = bool(ctx.options.channels_last)
    quantizer = keep_float_quantizer(keep_float, io_wrapped).set_global(
        get_symmetric_quantization_config(is_per_channel=True))
    with ctx.progress.stage("quantize", "tflite int8 (PT2E prepare + calibrate)"):
        program = torch.export.export(module, (example,), strict=False)
        gm = program.module()
        quantizer.check_names(gm)
        prepared = prepare_pt2e(gm, quantizer)
        with torch.no_grad():
            for s in calib.numpy(channels_last=bool(ctx.options.channels_last)):
                prepared(torch.from_numpy(s))
        converted = convert_pt2e(prepared, fold_quantize=False)
    if keep is not None:
        keep["float"], keep["quant"], keep["io_wrapped"] = program.module(), converted, io_wrapped
    with ctx.progress.stage("quantize", "tflite int8 (PT2E convert)"):
        edge_model = litert_torch.convert(converted, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
        edge_model.export(str(out))
        ctx.extras["graph_rewrites"] = rewrite_in_place(out)
    return out


def pt2e_layer_sqnr(graphs: dict[str, Any], xs: list[np.ndarray]) -> list[dict[str, Any]]:
    """Per-module SQNR of the PT2E fake-quantized torch graph (what litert-torch converts) against the float
    exported graph. Both keep torch.export's node names; a quantized tensor is read after its
    quantize/dequantize pair, i.e. as the next op sees it."""
    import torch

    from edge.export.quantize.fidelity import TensorNoise, module_table

    fgm, qgm = graphs["float"], graphs["quant"]

    def capture(gm: Any, x: np.ndarray) -> dict[str, Any]:
        values: dict[str, Any] = {}

        class Capture(torch.fx.Interpreter):
            def run_node(self, n: Any) -> Any:
                out = super().run_node(n)
                if isinstance(out, torch.Tensor) and out.is_floating_point():
                    values[n.name] = out.detach()
                return out

        with torch.no_grad():
            Capture(gm).run(torch.from_numpy(x))
        return values

    def seen_as(n: Any) -> str:
        """The node whose value consumers of ``n`` read: its quantize -> dequantize pair if it has one."""
        for u in n.users:
            if "quantize_per_tensor" in str(u.target) and "dequantize" not in str(u.target):
                for d in u.users:
                    if "dequantize" in str(d.target):
                        return d.name
        return n.name

    qnodes = {n.name: n for n in qgm.graph.nodes}
    fnodes = [n for n in fgm.graph.nodes if n.op in ("call_function", "placeholder")]
    layers = []
    for n in fnodes:
        if n.op == "placeholder":
            continue
        stack = n.meta.get("nn_module_stack") or {}
        paths = _module_paths(n, graphs.get("io_wrapped", False))
        layers.append({"name": n.name, "op": str(n.target).split(".")[-2] if "." in str(n.target) else str(n.target),
                       "module": paths[-1] if paths else None, "output": n.name,
                       "inputs": [a.name for a in n.all_input_nodes], "quantizable": bool(stack)})
    noise = TensorNoise()
    for x in xs:
        fv, qv = capture(fgm, x), capture(qgm, x)
        for n in fnodes:
            if n.name in fv and n.name in qnodes:
                qn = seen_as(qnodes[n.name])
                if qn in qv:
                    noise.add(n.name, fv[n.name].numpy(), qv[qn].numpy())
    rows = module_table(layers, noise)
    for r in rows:  # PT2E keeps modules float by module path
        r["nodes"] = [r["module"]] if r["module"] else []
        r["quantizable"] = bool(r["module"])
    return rows


def keep_float_quantizer(keep_float: Sequence[str] = (), io_wrapped: bool = False) -> Any:
    """litert-torch's PT2EQuantizer, minus the annotations of nodes inside the ``--keep-float`` modules (its own
    ``set_module_name`` refuses ``None``, i.e. cannot keep a module float). Built on call: importing litert-torch
    takes seconds. ``io_wrapped``: the graph is the --channels-last wrapper's, whose level paths leave out."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer
    from litert_torch.quantize.pt2e_quantizer_utils import propagate_annotation

    class KeepFloatPT2EQuantizer(PT2EQuantizer):
        def __init__(self) -> None:
            super().__init__()
            self.keep_float = tuple(keep_float)

        def check_names(self, gm: torch.fx.GraphModule) -> None:
            paths = {p for n in gm.graph.nodes for p in _module_paths(n, io_wrapped)}
            for want in self.keep_float:
                if not any(in_module(p, want) for p in paths):
                    raise EdgeError(f"--keep-float {want!r} matches no module of the network",
                                    close_names(want, [{"module": p, "name": p} for p in sorted(paths)]))

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            if self.global_config and not self.global_config.input_activation:
                model = self._annotate_for_dynamic_quantization_config(model)
            else:
                model = self._annotate_for_static_quantization_config(model)
            for node in model.graph.nodes:
                if any(in_module(p, k) for p in _module_paths(node, io_wrapped) for k in self.keep_float):
                    node.meta.pop("quantization_annotation", None)
            propagate_annotation(model)
            return model

    return KeepFloatPT2EQuantizer()


def _module_paths(node: Any, io_wrapped: bool = False) -> list[str]:
    from edge.export.targets.base import _clean_path

    stack = node.meta.get("nn_module_stack") or {}
    paths = [_clean_path(v[0]) for v in stack.values()]
    if io_wrapped:
        paths = [without_io_wrapper(p) for p in paths]
    return [p for p in paths if p]


# ------------------------------------------------------------------------------------------------------------------
# The float graph: layers, module paths, --keep-float resolution


class TfliteGraph:
    """Ops of the float .tflite as layers named by their output tensor (what ai-edge-quantizer's regex matches)."""

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path))
        details = {t["index"]: t["name"] for t in it.get_tensor_details()}
        ops = it._get_ops_details()
        produced = {o for op in ops for o in op["outputs"]}
        self.inputs = [details[d["index"]] for d in it.get_input_details()]
        graph_in = {d["index"] for d in it.get_input_details()}
        self.layers: list[dict[str, Any]] = []
        for op in ops:
            if not op["outputs"] or op["op_name"] == "DELEGATE":
                continue
            name = details[op["outputs"][0]]
            modules = module_paths_of_tflite_name(name)  # a fused op's activation first: the one tables show
            self.layers.append({
                "name": name,
                "op": op["op_name"],
                "module": modules[0] if modules else None,
                "modules": modules,
                "output": name,
                "inputs": [details[i] for i in op["inputs"] if i >= 0 and (i in produced or i in graph_in)],
                "quantizable": True,
            })

    def resolve(self, names: Sequence[str]) -> list[str]:
        """--keep-float LAYER... -> op output-tensor names (exact tensor name, or every op inside a module path)."""
        out: list[str] = []
        for want in names:
            hits = [ly["name"] for ly in self.layers
                    if want == ly["name"] or any(in_module(m, want) for m in ly["modules"])]
            if not hits:
                raise EdgeError(f"--keep-float {want!r} matches no layer of the TFLite graph",
                                close_names(want, self.layers))
            out += [h for h in hits if h not in out]
        return out
