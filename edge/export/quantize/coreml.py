"""Core ML quantization on Linux: weight-only int8, and W8A8 calibrated with the reference MIL interpreter.

- ``int8w``: coremltools' ``linear_quantize_weights`` (int8, per-channel, symmetric). Weights below
  coremltools' ``weight_threshold`` (2048 elements: tiny depthwise / bias-like tensors) stay float; they are
  a negligible share of the file, and keeping them float costs no fidelity.
- ``int8`` (W8A8): coremltools' ``linear_quantize_activations`` needs ``MLModel.predict`` (macOS only) for one
  thing: every intermediate tensor's range on the calibration images. Here the float program runs in the
  reference MIL interpreter (``edge.export.coreml_mil``) instead; the ranges are handed to coremltools' own
  passes (``compression::insert_prefix_quantize_dequantize_pair``, ``..._suffix_...``,
  ``common::dequantize_quantize_pair_elimination``) exactly as the public function does, so the program gets the
  same quantize/dequantize ops it would get on a Mac. Then ``linear_quantize_weights`` as for ``int8w``.

Deliberate differences from coremltools 9.0 on macOS (pinned by tests/export/test_coreml_quant.py):
- Ranges are min/max over ALL calibration samples. coremltools 9.0 overwrites the running range with each
  sample's before taking min/max, so on a Mac only the last sample counts; that is a bug, not reproduced.
- ``--calib-method percentile|entropy`` clip ranges (edge.export.quantize.calibration); coremltools has minmax only.
- In fp32 programs coremltools' suffix pass fails ("scale has dtype fp16 whereas input has dtype fp32", on a Mac
  too) because ``get_min_and_max_values`` rounds ranges to fp16. During that pass the range is still rounded to
  fp16 (as the prefix pass sees it) but handed over as fp32, so the scales match the prefix pass's.
Inputs of one concat share one range, as in coremltools.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.export.context import ExportContext

ARTIFACT = "model.mlpackage"
WEIGHT_THRESHOLD = 2048  # coremltools' default: weight tensors of at most this many elements stay float
RANGE_POLICY = ("min/max over all calibration samples (coremltools 9.0 on macOS keeps only the last sample's "
                "range, a bug not reproduced)")
RECOMMENDED_RUNTIME = {
    "int8": "Core ML on A17 Pro / M4 or newer, whose Neural Engine has int8 x int8 compute (per coremltools' "
            "optimization guide); older devices dequantize to fp16 and gain size only",
    "int8w": "Core ML on any device: weights are decompressed to float at load or run time (size win)",
}


# ---------------------------------------------------------------------------------------------------------------
# entry point


def quantize(ctx: ExportContext) -> Path:
    """Quantize ``ctx.float_artifact`` (an ML program) into ``ctx.workdir/model.mlpackage``; fill extras."""
    from edge.export import coreml_mil
    from edge.export.quantize import fidelity
    from edge.export.quantize.calibration import calibration_set, warn_unused_calibration

    if ctx.precision not in _MODE_TEXT:
        raise EdgeError(f"Core ML has no {ctx.precision!r} quantization", "use --int8 or --int8-weights")
    if ctx.float_artifact is None or not Path(ctx.float_artifact).exists():
        raise EdgeError("the Core ML quantizer needs the float model.mlpackage first",
                        "the pipeline converts the float model before quantize")
    float_path = Path(ctx.float_artifact)
    q = ctx.options.quant
    program = coreml_mil.load_program(float_path)
    graph = MilGraph(program, ctx.mean, ctx.std, float_path)
    excluded = graph.resolve(q.keep_float)
    tmp = Path(ctx.workdir) / ".quantize-coreml"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        calib, stats = None, None
        if ctx.precision == "int8w":
            warn_unused_calibration(ctx)
        else:
            calib = calibration_set(ctx)
            with ctx.progress.stage("calibrate", f"MIL interpreter, {calib.batch.shape[0]} images, {calib.method}"):
                stats = activation_stats(program, calib.numpy(), calib.method, mean=ctx.mean, std=ctx.std,
                                         image=graph.image)

        def build(exclude: list[str], path: Path) -> Path:
            model = _load_model(float_path)
            if stats is None:
                model, _ = quantize_weights(model, tuple(exclude))
            else:
                model, _ = quantize_w8a8(model, stats.ranges, tuple(exclude))
            _save(model, path)
            return path

        with ctx.progress.stage("coreml-passes", f"coremltools {ctx.precision}"):
            artifact = build(excluded, tmp / "q.mlpackage")
        report = fidelity.study(ctx, graph, float_path=float_path, quant_path=artifact,
                                runner=fidelity.target_runner(ctx),
                                rebuild=lambda exclude: build(list(exclude), tmp / f"q{len(exclude)}.mlpackage"),
                                excluded=excluded, layer_fn=mil_layer_sqnr)
        artifact = report.pop("_artifact")
        final = Path(ctx.workdir) / ARTIFACT
        if final.exists():
            shutil.rmtree(final)
        shutil.move(str(artifact), str(final))
        calibration = None
        if calib is not None and stats is not None:
            calibration = {**calib.record(), "range": RANGE_POLICY, "tensors": len(stats.ranges),
                           "concat_groups": stats.concat_groups}
        ctx.extras["quantization"] = {
            "mode": ctx.precision,
            "how": _MODE_TEXT[ctx.precision],
            "tool": "coremltools " + _ct_version(),
            "calibration": calibration,
            "keep_float": list(report.get("kept_float", excluded)),
            "ops": op_counts(final),
            **report,
            "recommended_runtime": RECOMMENDED_RUNTIME[ctx.precision],
        }
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_MODE_TEXT = {
    "int8w": "weight-only int8: per-channel symmetric constexpr_affine_dequantize weights (tensors over "
             f"{WEIGHT_THRESHOLD} elements), float compute",
    "int8": "W8A8: int8 per-tensor symmetric quantize/dequantize activations (coremltools' passes, ranges from the "
            "reference MIL interpreter), int8 per-channel symmetric weights",
}


class MilGraph:
    """The float program's layers as the fidelity study reads them; ``--keep-float`` takes MIL op names."""

    QUANTIZABLE = ("conv", "conv_transpose", "linear", "matmul", "add", "avg_pool", "max_pool")

    def __init__(self, program, mean, std, path: Path | None = None) -> None:
        self.program = program
        self.mean, self.std = mean, std
        self.image = path is not None and _is_image_input(path)
        consts = set(program.consts)
        self.layers = []
        for step in program.steps:
            if step.constant:
                continue
            ins = [n for ref in step.args.values() for n in (ref if isinstance(ref, list) else [ref])]
            self.layers.append({"name": step.name, "op": step.op_type, "output": step.outputs[0].name,
                                "inputs": [n for n in ins if n not in consts], "module": None,
                                "quantizable": step.op_type in self.QUANTIZABLE})

    def resolve(self, names) -> list[str]:
        """--keep-float LAYER... -> MIL op names (an op name or its output var name)."""
        from edge.export.quantize.fidelity import close_names

        out: list[str] = []
        for want in names:
            hits = [ly["name"] for ly in self.layers if ly["quantizable"] and want in (ly["name"], ly["output"])]
            if not hits:
                raise EdgeError(f"--keep-float {want!r} matches no quantizable op of the Core ML program",
                                close_names(want, [ly for ly in self.layers if ly["quantizable"]]))
            out += [h for h in hits if h not in out]
        return out


def mil_layer_sqnr(float_path: Path, quant_path: Path, xs: list[np.ndarray], graph: MilGraph) -> list[dict[str, Any]]:
    """Per-layer SQNR of the quantized program against the float one, both in the interpreter.

    coremltools' passes keep op and var names, so each float var is compared with its namesake, taken in float
    units as the next layer sees it (see ``_FloatUnits``).
    """
    from edge.export import coreml_mil
    from edge.export.quantize.fidelity import TensorNoise, layer_table

    fprog = graph.program
    qprog = coreml_mil.load_program(quant_path)
    ffeed = _input_feeder(fprog, graph.mean, graph.std, graph.image)
    qfeed = _input_feeder(qprog, graph.mean, graph.std, graph.image)
    wanted = {ly["output"] for ly in graph.layers}
    units = _FloatUnits(qprog)
    noise = TensorNoise()
    for x in xs:
        fv = coreml_mil.run_with_intermediates(fprog, ffeed(x))
        qv = coreml_mil.run_with_intermediates(qprog, qfeed(x))
        for name in wanted:
            f, g = fv.get(name), units.value(name, qv)
            if isinstance(f, np.ndarray) and isinstance(g, np.ndarray) and f.dtype.kind == g.dtype.kind == "f":
                noise.add(name, f, g)
    return layer_table(graph.layers, noise, [v.name for v in fprog.inputs])


class _FloatUnits:
    """Each var of a W8A8 program in the float program's units, as the next layer sees it.

    - A var with a ``quantize`` after it: ``(q - zero_point) * scale`` of that quantize, i.e. the int8 value the
      consumers read. (The quantize's own scale is used, not its dequantize's: coremltools'
      ``distributive_quantized_binary_op_scale_normalization`` divides the dequantize scales in front of an
      ``add``/``sub`` by one input's scale.)
    - The output of such a rescaled ``add``/``sub`` (both inputs dequantized) is in rescaled units itself; the
      dequantize after its quantize restores them, so that dequantize's output is used.
    - Anything else: the var itself.
    """

    def __init__(self, program) -> None:
        self.program = program
        producer = {o.name: s for s in program.steps for o in s.outputs}
        self.quantize_of: dict[str, Any] = {}
        self.dequantize_of: dict[str, str] = {}
        for step in program.steps:
            if step.op_type == "quantize":
                self.quantize_of.setdefault(step.args["input"], step)
        for step in program.steps:
            q = producer.get(step.args.get("input")) if step.op_type == "dequantize" else None
            if q is not None and q.op_type == "quantize":
                self.dequantize_of.setdefault(q.args["input"], step.outputs[0].name)
        self.rescaled = {
            s.outputs[0].name for s in program.steps
            if s.op_type in ("add", "sub") and all(
                getattr(producer.get(s.args.get(k)), "op_type", None) == "dequantize" for k in ("x", "y"))
        }

    def value(self, name: str, env: dict[str, Any]) -> np.ndarray | None:
        if name in self.rescaled:
            d = self.dequantize_of.get(name)
            return env.get(d) if d is not None else None
        q = self.quantize_of.get(name)
        if q is not None and q.outputs[0].name in env:
            scale = np.asarray(self.program.consts[q.args["scale"]], np.float64)
            zp = q.args.get("zero_point")
            zero = np.asarray(self.program.consts[zp], np.float64) if zp in self.program.consts else 0.0
            if scale.ndim == 0:
                return (env[q.outputs[0].name].astype(np.float64) - zero) * scale
        return env.get(name)


# ---------------------------------------------------------------------------------------------------------------
# weights


def _ct_version() -> str:
    import coremltools as ct

    return ct.__version__


def _load_model(path: Path):
    import coremltools as ct

    return ct.models.MLModel(str(path), skip_model_load=True)


def _save(model, out: Path | str) -> None:
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    model.save(str(out))


def weight_config(keep_float: tuple[str, ...] = ()):
    import coremltools.optimize.coreml as cto

    op_cfg = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=WEIGHT_THRESHOLD)
    return cto.OptimizationConfig(global_config=op_cfg, op_name_configs={n: None for n in keep_float})


def quantize_weights(model, keep_float: tuple[str, ...] = ()):
    """``linear_quantize_weights`` int8 per-channel; returns (model, op counts)."""
    import coremltools.optimize.coreml as cto

    with _quiet():
        q = cto.linear_quantize_weights(model, weight_config(keep_float))
    return q, op_counts(q)


def op_counts(model) -> dict[str, int]:
    """The op counts the quantizers change: quantize, dequantize, constexpr_* and the remaining float weights."""
    from edge.export.coreml_mil._program import op_histogram_from_spec

    hist = _histogram_of_model(model) if not isinstance(model, (str, Path)) else op_histogram_from_spec(model)
    keys = [k for k in hist if k in ("quantize", "dequantize") or k.startswith("constexpr_")]
    return {k: hist[k] for k in sorted(keys)}


def _histogram_of_model(model) -> dict[str, int]:
    spec = model.get_spec()
    func = spec.mlProgram.functions["main"]
    counts: dict[str, int] = {}
    for op in func.block_specializations[func.opset].operations:
        if op.type != "const":
            counts[op.type] = counts.get(op.type, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------------------------
# activations


class ActivationStats:
    """Per-var {"rmin", "rmax"} as coremltools' passes read them, plus what was done to get them."""

    def __init__(self, ranges: dict[str, dict[str, float]], concat_groups: int) -> None:
        self.ranges = ranges
        self.concat_groups = concat_groups


def activation_stats(float_artifact, samples: list[np.ndarray], method: str = "minmax", mean=None, std=None,
                     image: bool | None = None) -> ActivationStats:
    """Run the float program on each sample in the interpreter; range of every float var (inputs included).

    ``samples`` are float32 NCHW batch-1 arrays in the model's normalised domain; they are converted to the
    program's input here (fp16, or 0-255 pixels with ``mean``/``std`` for an image input).
    """
    from edge.export import coreml_mil
    from edge.export.quantize.calibration import RangeCollector

    if isinstance(float_artifact, coreml_mil.Program):
        program = float_artifact
    else:
        program = coreml_mil.load_program(float_artifact)
        image = _is_image_input(Path(float_artifact)) if image is None else image
    if len(program.inputs) != 1:
        raise EdgeError(f"W8A8 calibration supports single-input programs; {program.source} has "
                        f"{len(program.inputs)} inputs")
    feed = _input_feeder(program, mean, std, bool(image))
    collector = RangeCollector(method)
    passes = ["add_minmax"] if method == "minmax" else ["add_minmax", "add_hist"]
    for which in passes:  # histogram methods need the global extremes first
        for x in samples:
            for name, value in coreml_mil.run_with_intermediates(program, feed(x)).items():
                if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size:
                    getattr(collector, which)(name, value)
    ranges = {}
    for name in collector.lo:
        lo, hi = collector.range(name)
        ranges[name] = {"rmin": float(lo), "rmax": float(hi)}
    groups = concat_groups(program)
    _share_concat_ranges(groups, ranges)
    return ActivationStats(ranges, len(groups))


def _input_feeder(program, mean=None, std=None, image: bool = False):
    """Normalised float32 NCHW arrays -> the program's input: an fp16 cast, or 0-255 pixels for an image input
    (rounded and clipped like the numerics gate's feeder)."""
    info = program.inputs[0]
    dtype = np.float16 if info.dtype == "fp16" else np.float32
    if image and (mean is None or std is None):
        raise EdgeError("the Core ML model takes an image input; its mean/std are needed to feed it")
    m = np.asarray(mean if mean is not None else 0.0, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std if std is not None else 1.0, np.float32).reshape(1, -1, 1, 1)

    def feed(x: np.ndarray) -> dict[str, np.ndarray]:
        if image:  # the program folds the normalisation in: give it pixels
            x = np.clip(np.round((x * s + m) * 255.0), 0, 255)
        return {info.name: np.ascontiguousarray(x, dtype=dtype)}

    return feed


def _is_image_input(artifact: Path) -> bool:
    spec = _load_model(artifact).get_spec()
    return spec.description.input[0].type.WhichOneof("Type") == "imageType"


def concat_groups(program) -> list[list[str]]:
    """Input and output var names of each concat, as coremltools' debugger lists them (non-const inputs only)."""
    groups = []
    for step in program.steps:
        if step.op_type == "concat":
            values = step.args.get("values", [])
            names = [n for n in (values if isinstance(values, list) else [values]) if n not in program.consts]
            groups.append(names + [step.outputs[0].name])
    return groups


def _share_concat_ranges(groups: list[list[str]], ranges: dict[str, dict[str, float]]) -> None:
    """Every tensor around one concat gets the union range (coremltools' own helper does the merging)."""
    from coremltools.optimize.coreml.experimental._post_training_quantization import (
        _adjust_concat_surrounding_activation_stats,
    )

    if groups:
        _adjust_concat_surrounding_activation_stats(groups, ranges)


def activation_config(keep_float: tuple[str, ...] = (), mode: str = "linear_symmetric"):
    """int8 per-tensor activations; symmetric is what coremltools documents (and the Neural Engine's int8 path)."""
    import coremltools.optimize.coreml as cto

    op_cfg = cto.OpLinearQuantizerConfig(mode=mode, dtype="int8", weight_threshold=None)
    return cto.OptimizationConfig(global_config=op_cfg, op_name_configs={n: None for n in keep_float})


def quantize_w8a8(model, ranges: dict[str, dict[str, float]], keep_float: tuple[str, ...] = (),
                  mode: str = "linear_symmetric"):
    """Insert coremltools' quantize/dequantize pairs with the given ranges, then int8 weights."""
    from coremltools import _SPECIFICATION_VERSION_IOS_17
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models import utils as model_utils

    config = activation_config(keep_float, mode)
    prefix = PASS_REGISTRY["compression::insert_prefix_quantize_dequantize_pair"]
    suffix = PASS_REGISTRY["compression::insert_suffix_quantize_dequantize_pair"]
    for p in (prefix, suffix):
        p.set_options([PassOption("config", config)])
        p.set_options([PassOption("activation_stats", ranges)])
    passes = [prefix, _FloatRangesDuring(suffix), PASS_REGISTRY["common::dequantize_quantize_pair_elimination"]]
    with _quiet():
        activated = model_utils._apply_graph_pass(model, passes, spec_version=_SPECIFICATION_VERSION_IOS_17,
                                                  pymil_load_func=milproto_load.load, skip_model_load=True)
    _check_scales(activated)
    return quantize_weights(activated, keep_float)


def _fp32_range_patch(var_dtypes: dict[str, str]):
    """coremltools' range getter, but fp32 vars get their (fp16-rounded) range as fp32 so scales type-check."""
    from coremltools.optimize import _utils as optimize_utils

    original = optimize_utils.get_min_and_max_values

    def get_min_and_max_values(activation_stats, var_name):
        val = original(activation_stats, var_name)  # float16, as coremltools computes it
        return val.astype(np.float32) if var_dtypes.get(var_name) == "fp32" else val

    return optimize_utils, original, get_min_and_max_values


def _make_float_ranges_pass():
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass

    class FloatRangesDuring(AbstractGraphPass):
        """Runs a pass with the fp32-range fix applied only while it runs (see the module docstring)."""

        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def apply(self, prog) -> None:
            dtypes = {}
            for func in prog.functions.values():
                for op in func.operations:
                    for v in op.outputs:
                        with contextlib.suppress(Exception):
                            dtypes[v.name] = types.builtin_to_string(v.dtype)
            module, original, patched = _fp32_range_patch(dtypes)
            module.get_min_and_max_values = patched
            try:
                self.inner.apply(prog)
            finally:
                module.get_min_and_max_values = original

    return FloatRangesDuring


def _FloatRangesDuring(inner):  # noqa: N802  (builds the AbstractGraphPass subclass lazily: coremltools is heavy)
    return _make_float_ranges_pass()(inner)


def _check_scales(model) -> None:
    """A quantize/dequantize scale that is zero, inf or NaN (fp16 overflow) would silently wreck the output."""
    spec = model.get_spec()
    func = spec.mlProgram.functions["main"]
    block = func.block_specializations[func.opset]
    consts = {}
    for op in block.operations:
        if op.type == "const" and "val" in op.attributes:
            consts[op.outputs[0].name] = op.attributes["val"]
    for op in block.operations:
        if op.type in ("quantize", "dequantize") and "scale" in op.inputs:
            arg = op.inputs["scale"].arguments[0]
            value = consts.get(arg.name) if arg.WhichOneof("binding") == "name" else arg.value
            vals = _immediate(value)
            if vals is not None and (not np.all(np.isfinite(vals)) or np.any(vals == 0)):
                raise EdgeError(
                    f"Core ML W8A8: {op.type} {op.outputs[0].name!r} got scale {vals.ravel()[:4]} (fp16 overflow or "
                    "an empty range)",
                    "quantize the fp32 Core ML program instead of the fp16 one, or keep that layer float "
                    "(--keep-float)",
                )


def _immediate(value) -> np.ndarray | None:
    if value is None or value.WhichOneof("value") != "immediateValue":
        return None
    tensor = value.immediateValue.tensor
    kind = tensor.WhichOneof("value")
    if kind == "floats":
        return np.asarray(tensor.floats.values, np.float32)
    if kind == "bytes":  # fp16 scalars/vectors are stored as raw bytes
        return np.frombuffer(tensor.bytes.values, np.float16).astype(np.float32)
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """coremltools prints tqdm bars and warns about untested torch versions; keep the export output readable."""
    import io
    import logging

    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)

