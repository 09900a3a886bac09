"""ONNX quantization with ONNX Runtime's own tools, starting from the checked fp32 ``model.onnx``.

- int8: ``quant_pre_process`` (shape inference + graph cleanup), then ``quantize_static`` in QDQ format, int8
  per-channel symmetric weights, 8-bit per-tensor activations calibrated on real images. Activations are uint8
  and weights use 7 of their 8 bits (``reduce_range``): ONNX Runtime's x86 kernels multiply u8 x s8 with AVX2's
  ``vpmaddubsw``, whose int16 pair sums saturate with full-range weights on CPUs without VNNI. Measured on the
  test network: full-range u8 lost 15 dB (35 -> 20 dB) once ORT fused the QDQ graph; s8 activations are
  converted to u8 on x86 unless ``session.qdqisint8allowed`` is set, and are then 2-3x slower. See
  docs/quant-bench.md. Before quantizing, depthwise convolutions with a channel multiplier are rewritten as a
  channel-repeating Gather and a multiplier-1 depthwise convolution (``expand_channel_multipliers``): the same
  numbers, on the kernel ORT has a fast int8 path for; a mean over the spatial axes (squeeze-excite) becomes
  a GlobalAveragePool (``spatial_means_as_global_pool``), which ORT runs as an int8 kernel; and a squeeze-excite
  gate's HardSigmoid folds into its conv (``hard_sigmoids_into_convs``), as ORT has no int8 HardSigmoid.
  Windowed AveragePools stay float (``average_pools``): ORT's int8 QLinearAveragePool kernel is slow
  (``AVERAGE_POOL_WHY``). After quantizing, Concat inputs take the Concat's output scale
  (``concat_inputs_on_output_scale``), so ORT's QLinearConcat copies instead of requantizing.
- int8w: weights only. Each Conv/Gemm/MatMul weight becomes int8 per output channel behind Cast + Mul by its
  scales, which ORT folds back into float weights at load (a DequantizeLinear there would run on every
  inference); the compute stays float. (ORT's MatMulNBits covers MatMul only, which would leave the
  convolutions -- most of a CNN's bytes -- in float.)
- w8a16: QDQ with int16 activations (opset-21 Q/DQ); int8 per-channel weights.
- int8dyn: ``quantize_dynamic`` for MatMul / Gemm: int8 per-channel weights (7-bit range, as int8), activation
  scales computed at run time. Convolutions compute in float from int8-stored weights (as int8w): ORT's
  ConvInteger is far slower than a float Conv on x86 (``CONV_INTEGER_WHY``).

``--keep-float`` names go to ``nodes_to_exclude``; ``--auto-mixed N`` re-quantizes with the N layers that lose the
most SQNR excluded (see :mod:`edge.export.quantize.fidelity`).
"""

from __future__ import annotations

import ast
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import EdgeError
from edge.export.quantize import NO_CALIBRATION
from edge.export.quantize.calibration import CalibrationSet, calibration_set, warn_unused_calibration
from edge.export.quantize.fidelity import close_names, in_module
from edge.export.targets.onnx import ORT_DISABLED_OPTIMIZERS

if TYPE_CHECKING:
    import onnx

    from edge.export.context import ExportContext

ARTIFACT = "model.onnx"
WEIGHT_OPS = {"Conv": 0, "ConvTranspose": 1, "Gemm": None, "MatMul": -1}  # op -> output-channel axis of its weight
CALIB_STRIDE = 4  # images per calibration chunk (ORT otherwise keeps every intermediate of every image in memory)
# int8 layouts this module can write: <QDQ|QOperator>-<activation dtype>[r = reduce_range, 7-bit weights].
# The benchmark compares them (docs/quant-bench.md); "qdq-u8r" is the default, see the module docstring.
INT8_FORMATS = ("qdq-u8r", "qdq-u8", "qdq-s8", "qop-u8r", "qop-u8", "qop-s8")
DEFAULT_INT8_FORMAT = "qdq-u8r"


def quantize(ctx: ExportContext) -> Path:
    """Write ``ctx.workdir/model.onnx`` quantized to ``ctx.precision`` and record what was done in ``ctx.extras``."""
    from edge.export.quantize import fidelity

    if ctx.float_artifact is None or not Path(ctx.float_artifact).is_file():
        raise EdgeError("the ONNX quantizer needs the fp32 model.onnx first",
                        "the pipeline converts fp32 before quantize")
    q = ctx.options.quant
    tmp = Path(ctx.workdir) / ".quantize-onnx"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        float_copy = tmp / "float.onnx"
        shutil.copyfile(ctx.float_artifact, float_copy)
        edits = int8_graph_edits(float_copy) if ctx.precision == "int8" else dict.fromkeys(INT8_GRAPH_EDITS, 0)
        pre = tmp / "pre.onnx"
        with ctx.progress.stage("quantize", "onnx quant_pre_process"):
            preprocess(float_copy, pre)
        graph = OnnxGraph(pre, module_map(float_copy, io_wrapped=bool(ctx.options.channels_last)))
        calib = None
        if ctx.precision in NO_CALIBRATION:
            warn_unused_calibration(ctx)
        else:
            calib = calibration_set(ctx)
        layout_nhwc = bool(ctx.options.channels_last)
        excluded = graph.resolve(q.keep_float)
        cache = tmp / "ranges.json"

        int8_format = getattr(q, "onnx_format", None) or DEFAULT_INT8_FORMAT

        forced = batched_weight_matmuls(graph.model) if ctx.precision in ("int8", "int8dyn") else []
        pools = average_pools(graph.model) if ctx.precision == "int8" else []
        convs = [n.name for n in graph.model.graph.node if n.op_type == "Conv"] if ctx.precision == "int8dyn" else []
        forced_why = "; ".join(why for nodes, why in ((forced, BATCHED_WHY), (pools, AVERAGE_POOL_WHY),
                                                      (convs, CONV_INTEGER_WHY)) if nodes)
        forced += pools + convs

        made: dict[Path, dict[str, int]] = {}  # artifact -> its after-quantization edit counts

        def build(exclude: Sequence[str], path: Path) -> Path:
            return quantize_file(ctx.precision, pre, path, calib, q.calib_method, [*exclude, *forced], layout_nhwc,
                                 cache, int8_format, made.setdefault(path, {}),
                                 weights_only=[c for c in convs if c not in exclude])

        with ctx.progress.stage("quantize", f"onnx {ctx.precision}"):
            artifact = build(excluded, tmp / "q.onnx")
        report = fidelity.study(ctx, graph, float_path=pre, quant_path=artifact, runner=fidelity.target_runner(ctx),
                                rebuild=lambda exclude: build(exclude, tmp / f"q{len(exclude)}.onnx"),
                                excluded=excluded, layer_fn=fidelity.onnx_layer_sqnr,
                                layer_input=fidelity.io_layout(ctx))
        artifact = report.pop("_artifact")
        edits.update(made.get(Path(artifact), {}))
        final = Path(ctx.workdir) / ARTIFACT
        shutil.copyfile(artifact, final)
        ctx.extras["quantization"] = {
            "mode": ctx.precision,
            "how": _how(ctx.precision),
            "tool": "onnxruntime.quantization",
            "format": _format(ctx.precision, int8_format),
            "calibration": calib.record() if calib is not None else None,
            "keep_float": list(report.get("kept_float", excluded)),
            "kept_float_by_runtime": {"nodes": forced, "why": forced_why} if forced else None,
            **edits,
            # what a user's own ORT session needs so that the layers kept float run float (edge's sessions do this)
            "onnxruntime_session": {"disabled_optimizers": ORT_DISABLED_OPTIMIZERS,
                                    "why": "WeightBiasQuantization would quantize the kept-float layers at load"}
            if report.get("kept_float", excluded) else None,
            **report,
            "recommended_runtime": recommended_runtime(ctx.precision),
            "warnings": ctx.extras.pop("quant_warnings", []),
        }
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _how(precision: str) -> str:
    from edge.export.quantize import MODES

    return MODES["onnx"][precision]


def _format(precision: str, int8_format: str = DEFAULT_INT8_FORMAT) -> str:
    if precision == "int8":
        fmt, act = int8_format.split("-")
        return (f"{'QDQ' if fmt == 'qdq' else 'QOperator'}, {'uint8' if act.startswith('u8') else 'int8'} activations, "
                f"int8 per-channel weights{' (7-bit range: reduce_range)' if act.endswith('r') else ''}")
    formats = {"int8w": "int8 weights + Cast/Mul (folded to float at load)",
               "w8a16": "QDQ, int16 activations, int8 per-channel weights (opset 21)",
               "int8dyn": "dynamic (MatMulInteger / DynamicQuantizeLinear); convolutions: int8 weights + Cast/Mul"}
    return formats[precision]


def recommended_runtime(precision: str) -> dict[str, str]:
    """Which integer ONNX artifact suits which runtime (measured on the host in docs/quant-bench.md)."""
    return {
        "int8": "QDQ is what ORT's NPU/GPU execution providers (QNN, OpenVINO, TensorRT) consume; on x86 CPUs "
                "ORT fuses it to QLinearConv, which for depthwise-heavy mobile networks is little or no faster "
                "than fp32 even with VNNI (GhostNet 0.92-1.00x, MobileNetV3 1.04x on an AVX-512 VNNI Xeon): ORT's "
                "x86 int8 depthwise kernel takes 1.5-11x the time of its fp32 one -- see docs/fast-artifacts.md and "
                "docs/quant-bench.md",
        "int8w": "any ORT build: size only (4x smaller file); ORT folds the weights back to float when the session "
                 "loads, so compute, memory and speed are fp32's",
        "w8a16": "NPU execution providers with 16-bit activation kernels (QNN HTP); ORT CPU only simulates it",
        "int8dyn": "ORT CPU for attention/linear-heavy networks: MatMul / Gemm in int8, convolutions float from "
                   "int8-stored weights (ConvInteger is slow on x86)",
    }[precision]


# ------------------------------------------------------------------------------------------------------------------
# Files


def preprocess(src: Path, dst: Path) -> None:
    """ORT's recommended pre-pass: symbolic shape inference and graph optimisation, so Q/DQ land on fused ops."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer logs advice through the root logger
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)


def int8_graph_edits(path: Path) -> dict[str, int]:
    """Apply ``INT8_GRAPH_EDITS`` to the float model at ``path`` (read and written once); return the count of each."""
    import onnx

    model = onnx.load(str(path))
    counts = {name: edit(model) for name, edit in INT8_GRAPH_EDITS.items()}
    if any(counts.values()):
        onnx.save_model(model, str(path))
    return counts


def expand_channel_multipliers(model: onnx.ModelProto) -> int:
    """Rewrite, in ``model``, each depthwise Conv with a channel multiplier k > 1 (``group`` = input channels, k outputs
    per group) as a Gather that repeats every input channel k times, then a plain depthwise Conv (``group`` =
    outputs) with the same weights; return how many were rewritten. The two compute the same numbers.

    ONNX Runtime's QLinearConv has a fast x86 kernel for depthwise convolutions with multiplier 1 only; the others
    take its generic grouped path, 4x slower than the float kernel. Mobile-Former's expanding depthwise convolutions
    (multiplier 2-6) made its int8 file run at 0.48x fp32's speed on the 2-core VM (1 thread); rewritten, 0.98x
    there (docs/fast-artifacts.md) and 1.17x on a VNNI Xeon (docs/fast-artifacts-other-cpu.md). The Gather runs
    on uint8.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        group = next((a for a in node.attribute if a.name == "group"), None)
        weight = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if group is not None and weight is not None and group.i > 1 and weight.dims[1] == 1 \
                and weight.dims[0] > group.i and weight.dims[0] % group.i == 0:
            k = weight.dims[0] // group.i
            index = numpy_helper.from_array(np.repeat(np.arange(group.i, dtype=np.int64), k),
                                            f"{node.name}/channel_repeat")
            graph.initializer.append(index)
            repeated = f"{node.input[0]}/x{k}/{rewritten}"
            nodes.append(helper.make_node("Gather", [node.input[0], index.name], [repeated], axis=1,
                                          name=f"{node.name}/repeat_channels"))
            node.input[0] = repeated
            group.i = weight.dims[0]
            rewritten += 1
        nodes.append(node)
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten


def spatial_means_as_global_pool(model: onnx.ModelProto) -> int:
    """Rewrite, in ``model``, each ReduceMean over the two spatial axes of a 4-D tensor with ``keepdims`` (the
    squeeze-excite pooling of GhostNet and MobileNetV3) as a GlobalAveragePool; return how many. The same numbers.

    ONNX Runtime quantizes GlobalAveragePool to its int8 QLinearGlobalAveragePool, while a ReduceMean stays float
    between a DequantizeLinear and a QuantizeLinear. Timed interleaved on the 2-core VM (1 thread, 100 runs, the
    int8 file before / after): GhostNet 8.73 -> 8.09 ms (fp32 8.37), MobileNetV3-Large 8.70 -> 8.00 ms (fp32
    8.64). The float graph gains nothing from it (8.38 / 8.29 ms), so only int8 gets it.
    """
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    inferred = onnx.shape_inference.infer_shapes(model).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*inferred.input, *inferred.value_info)
             if v.type.tensor_type.HasField("shape")}
    rewritten = 0
    for node in graph.node:
        if node.op_type != "ReduceMean" or len(node.input) != 2 or node.input[1] not in consts:
            continue
        keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        axes = sorted(int(a) % 4 for a in np.atleast_1d(consts[node.input[1]]))
        if keepdims != 1 or axes != [2, 3] or ranks.get(node.input[0]) != 4:
            continue
        node.op_type = "GlobalAveragePool"
        del node.input[1:]
        del node.attribute[:]
        rewritten += 1
    if rewritten:
        used = {i for n in graph.node for i in n.input} | {x.name for x in graph.input}
        kept = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return rewritten


def _readers(graph: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it (a node once per input slot that names it)."""
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return readers


def hard_sigmoids_into_convs(model: onnx.ModelProto) -> int:
    """Rewrite, in ``model``, each HardSigmoid(alpha, beta) whose input is a Conv output read by nothing else as
    that Conv with its weights scaled by alpha and its bias mapped to alpha * b + beta, then a Clip to [0, 1];
    return how many. The same function: hard sigmoid(z) = clip(alpha * z + beta, 0, 1), and the Conv is linear.

    ORT has no integer HardSigmoid, so in an int8 file the squeeze-excite gates of GhostNet and MobileNetV3 ran
    float between a DequantizeLinear and a QuantizeLinear. A Clip after a Conv is an activation ORT's quantizer
    drops into the Conv's QuantizeLinear, so the gate comes straight out of a QLinearConv.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers = {name: len(nodes) for name, nodes in _readers(graph).items()}
    outputs = {o.name for o in graph.output}
    rewritten = 0
    for node in graph.node:
        conv = producer.get(node.input[0]) if node.op_type == "HardSigmoid" else None
        if conv is None or conv.op_type != "Conv" or readers.get(node.input[0]) != 1 or node.input[0] in outputs \
                or conv.input[1] not in inits or (len(conv.input) > 2 and conv.input[2] not in inits) \
                or readers.get(conv.input[1]) != 1 or (len(conv.input) > 2 and readers.get(conv.input[2]) != 1):
            continue
        attrs = {a.name: a.f for a in node.attribute}
        alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
        weight = numpy_helper.to_array(inits[conv.input[1]])
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array((weight * alpha).astype(weight.dtype), conv.input[1]))
        if len(conv.input) > 2:
            bias = numpy_helper.to_array(inits[conv.input[2]])
        else:
            bias = np.zeros(weight.shape[0], weight.dtype)
            name = f"{conv.name}/hard_sigmoid_bias"
            graph.initializer.append(numpy_helper.from_array(bias, name))
            inits[name] = graph.initializer[-1]
            conv.input.append(name)
        inits[conv.input[2]].CopyFrom(numpy_helper.from_array((bias * alpha + beta).astype(bias.dtype), conv.input[2]))
        bounds = ["hard_sigmoid_as_clip/min", "hard_sigmoid_as_clip/max"]  # one pair for every gate
        if bounds[0] not in inits:
            for name, value in zip(bounds, (0, 1)):
                graph.initializer.append(numpy_helper.from_array(np.array(value, weight.dtype), name))
                inits[name] = graph.initializer[-1]
        clip = helper.make_node("Clip", [node.input[0], *bounds], list(node.output), name=node.name)
        clip.metadata_props.extend(node.metadata_props)  # the exporter's module path: --keep-float finds the gate
        node.CopyFrom(clip)
        rewritten += 1
    return rewritten


# graph edits made to the float model before int8 quantization: the same numbers, kernels ORT runs faster in int8
# (each a manifest key under ``quantization`` with its count)
INT8_GRAPH_EDITS = {"channel_multiplier_convs_expanded": expand_channel_multipliers,
                    "spatial_means_as_global_pool": spatial_means_as_global_pool,
                    "hard_sigmoids_into_convs": hard_sigmoids_into_convs}


class _Reader:
    """ORT CalibrationDataReader over the calibration set, with the strided interface ORT chunks by."""

    def __init__(self, name: str, samples: list[np.ndarray]) -> None:
        self.name, self.samples = name, samples
        self.start, self.end = 0, len(samples)
        self.i = 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.i = start_index, min(end_index, len(self.samples)), start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.end:
            return None
        self.i += 1
        return {self.name: self.samples[self.i - 1]}

    def rewind(self) -> None:
        self.set_range(0, len(self.samples))


def quantize_file(precision: str, pre: Path, out: Path, calib: CalibrationSet | None, method: str,
                  exclude: Sequence[str] = (), nhwc: bool = False, cache: Path | None = None,
                  int8_format: str = DEFAULT_INT8_FORMAT, counts: dict[str, int] | None = None,
                  weights_only: Sequence[str] = ()) -> Path:
    """Quantize a pre-processed float model file into ``out`` (single file, no external data); the edits made after
    quantizing are counted into ``counts``. int8dyn: the ``weights_only`` nodes compute in float from int8-stored
    weights."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    exclude = list(exclude)
    counts = {} if counts is None else counts
    if precision == "int8w":
        model = weight_only(onnx.load(str(pre)), exclude, dequantize=False)
        onnx.save_model(model, str(out))
        return out
    if precision == "int8dyn":
        # reduce_range for the same x86 u8 x s8 saturation as int8: measured 17 -> 33 dB on the test network
        quantize_dynamic(str(pre), str(out), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8,
                         nodes_to_exclude=list(dict.fromkeys([*exclude, *weights_only])),
                         extra_options={"MatMulConstBOnly": True})
        batched = [n for n in exclude if n in set(batched_weight_matmuls(onnx.load(str(pre))))]
        if batched or weights_only:
            model = onnx.load(str(out))
            if batched:
                model = weight_only(model, only=batched, per_tensor=True)
            if weights_only:
                model = weight_only(model, only=weights_only, dequantize=False)
            onnx.save_model(model, str(out))
        return out
    if calib is None:
        raise EdgeError(f"{precision} needs calibration images",
                        "pass --calib DIR or leave it out for the built-in set")
    name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
    reader = _Reader(name, calib.numpy(channels_last=nhwc))
    cal_method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[method]
    extra: dict[str, Any] = {"CalibStridedMinMax": CALIB_STRIDE, "WeightSymmetric": True}
    batched: list[str] = []
    if precision == "w8a16":
        act, fmt, reduce_range = QuantType.QInt16, QuantFormat.QDQ, False
    else:
        if int8_format not in INT8_FORMATS:
            raise EdgeError(f"unknown ONNX int8 format {int8_format!r}", f"use one of {', '.join(INT8_FORMATS)}")
        act = QuantType.QInt8 if "-s8" in int8_format else QuantType.QUInt8
        fmt = QuantFormat.QOperator if int8_format.startswith("qop") else QuantFormat.QDQ
        reduce_range = int8_format.endswith("r")
        batched = [n for n in exclude if n in set(batched_weight_matmuls(onnx.load(str(pre))))]
    reader.rewind()
    quantize_static(str(pre), str(out), reader, quant_format=fmt, per_channel=True, reduce_range=reduce_range,
                    activation_type=act,
                    weight_type=QuantType.QInt8, calibrate_method=cal_method, nodes_to_exclude=exclude,
                    extra_options=extra, calibration_cache_path=str(cache) if cache is not None else None)
    shared_concats = precision == "int8" and fmt == QuantFormat.QDQ
    if batched or shared_concats:
        model = onnx.load(str(out))
        if batched:  # per-tensor int8 weights, which ORT's integer MatMul kernels accept
            model = weight_only(model, only=batched, per_tensor=True)
        if shared_concats:
            counts["concat_inputs_on_output_scale"] = concat_inputs_on_output_scale(model, onnx.load(str(pre)))
        onnx.save_model(model, str(out))
    return out


def concat_inputs_on_output_scale(model: onnx.ModelProto, float_model: onnx.ModelProto | None = None) -> int:
    """Give, in the QDQ ``model``, each quantized Concat input the scale and zero point of the Concat's output;
    return how many inputs changed. Convolution biases quantized with an input's old scale are re-quantized to
    the new one (ORT fuses a Conv only while bias scale = input scale x weight scale).

    ORT's quantizer drops a Relu or Clip whose output range its QuantizeLinear already clips to (the tensor keeps
    the activation's name; ``float_model`` is the graph it quantized, where that name is the activation's output).
    Such a tensor is re-scaled only when it stays clipped at zero: a Relu's, onto a zero point at the bottom of
    the integer range; a Clip's never.

    ORT fuses DequantizeLinear -> Concat -> QuantizeLinear into QLinearConcat, which requantizes every input
    through a lookup table unless the input's scale and zero point are the output's, and then copies bytes (TFLite
    requires the equal parameters outright). The calibrated output range holds every input's range, so an input
    loses at most the resolution it would lose at the Concat anyway; a tensor that feeds two Concats of different
    output scales keeps its own. Downstream Concats are settled first, so a Concat of Concats ends on one scale.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _readers(graph)
    by_scale: dict[tuple[str, str], list[Any]] = {}  # (op type, scale initializer) -> its Q / DQ nodes
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1:
            by_scale.setdefault((n.op_type, n.input[1]), []).append(n)

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    def assign(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value, name))

    def requantize_biases(scale: str, new: np.ndarray) -> None:
        for dq in by_scale.get(("DequantizeLinear", scale), []):
            for op in consumers.get(dq.output[0], []):
                if op.op_type not in ("Conv", "ConvTranspose", "Gemm") or len(op.input) < 3 \
                        or op.input[0] != dq.output[0]:
                    continue
                bias_dq, weight_dq = producer.get(op.input[2]), producer.get(op.input[1])
                if bias_dq is None or weight_dq is None or bias_dq.op_type != "DequantizeLinear" \
                        or weight_dq.op_type != "DequantizeLinear" or len(consumers[bias_dq.input[1]]) != 1:
                    continue
                weight_scale = array(weight_dq.input[1]).astype(np.float64)
                bias_scale = (new.astype(np.float64) * weight_scale).astype(np.float32)
                real = array(bias_dq.input[0]) * array(bias_dq.input[1]).astype(np.float64)
                bias = np.round(real / bias_scale).astype(np.int32)
                assign(bias_dq.input[0], bias)
                assign(bias_dq.input[1], bias_scale)

    activations = {n.output[0]: n.op_type for n in (float_model.graph.node if float_model is not None else ())
                   if n.op_type in ("Relu", "Clip")}
    dropped = {name: op for name, op in activations.items()
               if name in producer and producer[name].op_type not in ("Relu", "Clip")}

    def keeps_its_clip(tensor: str, zero: np.ndarray) -> bool:
        if tensor not in dropped:
            return True
        lowest = np.iinfo(zero.dtype).min
        return dropped[tensor] == "Relu" and int(zero.reshape(-1)[0]) == lowest

    settled: dict[str, bytes] = {}  # scale initializer -> the output scale it was given
    changed = 0
    for concat in reversed([n for n in graph.node if n.op_type == "Concat"]):
        after = consumers.get(concat.output[0], [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear" or len(after[0].input) < 3:
            continue
        out_scale, out_zero = array(after[0].input[1]), array(after[0].input[2])
        for name in concat.input:
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or len(dq.input) < 3 \
                    or (q.input[1], q.input[2]) != (dq.input[1], dq.input[2]) or dq.input[1] == after[0].input[1]:
                continue
            scale, zero = dq.input[1], dq.input[2]
            if array(zero).dtype != out_zero.dtype or settled.get(scale, out_scale.tobytes()) != out_scale.tobytes():
                continue
            if array(scale).tobytes() == out_scale.tobytes() and array(zero).tobytes() == out_zero.tobytes():
                continue
            if not all(keeps_its_clip(q.input[0], out_zero) for q in by_scale.get(("QuantizeLinear", scale), [])):
                continue
            requantize_biases(scale, out_scale)
            assign(scale, out_scale.copy())
            assign(zero, out_zero.copy())
            settled[scale] = out_scale.tobytes()
            changed += 1
    return changed


BATCHED_WHY = ("ONNX Runtime's QLinearMatMul / MatMulInteger take per-channel weight scales only for 2-D weights; "
               "these MatMuls have batched (per-head) constant weights, so their weights are quantized per tensor "
               "instead")


CONV_INTEGER_WHY = ("dynamic quantization would run each convolution as DynamicQuantizeLinear + ConvInteger, which "
                    "ONNX Runtime's x86 kernels run far slower than a float Conv (GhostNet-1.0x: 9x fp32's time; "
                    "as float convolutions fed by int8-stored weights, which ORT folds at load: fp32's time); only "
                    "MatMul / Gemm quantize their inputs at run time")


AVERAGE_POOL_WHY = ("ONNX Runtime runs an int8 AveragePool as QLinearAveragePool, a slow kernel: 28% of "
                    "EfficientFormer-L1's int8 time at 1 thread, where the fp32 model's AveragePool takes 1.4%; kept "
                    "float between DequantizeLinear and QuantizeLinear, on ORT's float pooling kernel "
                    "(EfficientFormer-L1 int8 over fp32: 0.98x -> 1.37x at 1 thread, same output SQNR)")


def average_pools(model: onnx.ModelProto) -> list[str]:
    """The windowed AveragePool nodes (not GlobalAveragePool, whose int8 kernel is fast): see AVERAGE_POOL_WHY."""
    return [n.name for n in model.graph.node if n.op_type == "AveragePool"]


def batched_weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes whose constant weight has rank > 2 (e.g. per-head [heads, K, N] attention projections)."""
    ranks = {i.name: len(i.dims) for i in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and ranks.get(n.input[1], 0) > 2 and n.name]


def weight_only(model: onnx.ModelProto, exclude: Sequence[str] = (), only: Sequence[str] | None = None,
                per_tensor: bool = False, dequantize: bool = True) -> onnx.ModelProto:
    """Store every Conv/Gemm/MatMul constant weight as int8 per output channel behind a DequantizeLinear, or with
    ``dequantize=False`` behind Cast + Mul by the scale (the same float weights).

    The DequantizeLinear (or Mul) output keeps the weight's original name, so consumers are untouched. Symmetric: zero
    point 0, scale = max|w| / 127 per channel. ORT keeps a DequantizeLinear for its QDQ fusions and so runs it on
    every inference when no fusion takes it (weight-only: GhostNet 2.2x fp32's time); Cast and Mul of constants
    it folds into float weights when the session loads, which is what a weight-only file wants.
    """
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    if max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0) < 13:
        raise EdgeError("weight-only ONNX quantization needs opset >= 13 (per-axis DequantizeLinear)",
                        "export with --opset 18")
    inits = {i.name: i for i in g.initializer}
    skip = set(exclude)
    done: set[str] = set()
    new_nodes, new_inits = [], []
    for node in g.node:
        if node.op_type not in WEIGHT_OPS or node.name in skip or len(node.input) < 2:
            continue
        if only is not None and node.name not in only:
            continue
        wname = node.input[1]
        if wname not in inits or wname in done:
            continue
        w = numpy_helper.to_array(inits[wname])
        if w.dtype != np.float32 or w.ndim < 2:
            continue
        axis = WEIGHT_OPS[node.op_type]
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if trans_b else 1
        if node.op_type == "MatMul":
            axis = w.ndim - 1  # B is [..., K, N]: one scale per output column N (shared across leading dims)
        reduce_axes = tuple(i for i in range(w.ndim) if i != axis or per_tensor)
        scale = np.asarray(np.abs(w).max(axis=reduce_axes) / 127.0, np.float32)
        scale = np.where(scale > 0, scale, np.float32(1e-12)).astype(np.float32)
        shape = [1] * w.ndim
        if not per_tensor:
            shape[axis] = -1
        qw = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        new_inits.append(numpy_helper.from_array(qw, f"{wname}_int8"))
        if dequantize:
            new_inits += [numpy_helper.from_array(scale, f"{wname}_scale"),
                          numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{wname}_zero_point")]
            attrs = {} if per_tensor else {"axis": axis}
            new_nodes.append(helper.make_node("DequantizeLinear",
                                              [f"{wname}_int8", f"{wname}_scale", f"{wname}_zero_point"],
                                              [wname], name=f"{wname}_DequantizeLinear", **attrs))
        else:
            new_inits.append(numpy_helper.from_array(scale.reshape(shape), f"{wname}_scale"))
            new_nodes += [helper.make_node("Cast", [f"{wname}_int8"], [f"{wname}_float"], name=f"{wname}_Cast",
                                           to=onnx.TensorProto.FLOAT),
                          helper.make_node("Mul", [f"{wname}_float", f"{wname}_scale"], [wname],
                                           name=f"{wname}_Scale")]
        done.add(wname)
    keep = [i for i in g.initializer if i.name not in done]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    nodes = new_nodes + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


# ------------------------------------------------------------------------------------------------------------------
# Running and naming


def module_map(path: Path, io_wrapped: bool = False) -> dict[str, str]:
    """Output tensor name -> PyTorch module path, from the exporter's per-node metadata (dynamo exporter) or the
    node name (TorchScript exporter, ``/features/features.3/conv/Conv``). ``io_wrapped``: the file was exported
    through the --channels-last wrapper, whose level the paths leave out."""
    import onnx

    from edge.export.quantize.fidelity import without_io_wrapper

    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, str] = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        path_ = None
        scopes = meta.get("pkg.torch.onnx.name_scopes")
        if scopes:
            try:
                parts = [s for s in ast.literal_eval(scopes) if s]
                mods = parts[:-1] if len(parts) > 1 else parts
                path_ = mods[-1] if mods else None
            except (ValueError, SyntaxError):
                path_ = None
        elif node.name.startswith("/"):
            segs = [s for s in node.name.split("/") if s][:-1]
            path_ = segs[-1] if segs else None
        if io_wrapped:
            path_ = without_io_wrapper(path_)
        if path_:
            for o in node.output:
                out[o] = path_
    return out


class OnnxGraph:
    """The pre-processed float graph: which layers exist, their module paths, and --keep-float resolution."""

    def __init__(self, path: Path, modules: dict[str, str]) -> None:
        import onnx

        self.path = path
        self.model = onnx.load(str(path))
        self.modules = modules
        inits = {i.name for i in self.model.graph.initializer}
        self.layers: list[dict[str, Any]] = []
        for i, node in enumerate(self.model.graph.node):
            if node.op_type in ("Constant", "Shape") or not node.output:
                continue
            self.layers.append({
                "name": node.name or f"{node.op_type}_{i}",
                "op": node.op_type,
                "module": modules.get(node.output[0]),
                "output": node.output[0],
                "inputs": [x for x in node.input if x and x not in inits],
                "quantizable": bool(node.name),
            })

    def resolve(self, names: Sequence[str]) -> list[str]:
        """--keep-float LAYER... -> node names. LAYER is a node name, an output tensor name or a module path
        (which selects every node inside that module)."""
        out: list[str] = []
        for want in names:
            hits = [ly["name"] for ly in self.layers if ly["quantizable"] and (
                want in (ly["name"], ly["output"]) or in_module(ly["module"], want))]
            if not hits:
                raise EdgeError(f"--keep-float {want!r} matches no layer of the ONNX graph",
                                close_names(want, self.layers))
            out += [h for h in hits if h not in out]
        return out
