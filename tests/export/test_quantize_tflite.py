"""TFLite quantization with the real LiteRT interpreter: ai-edge-quantizer recipes on one fp32 conversion of a
small conv + attention network (input-dependent activations), litert-torch PT2E for comparison, integer I/O
handled by the export's own gate."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter

from edge.errors import EdgeError
from edge.export.context import QuantOptions
from edge.export.quantize import quantize
from edge.export.quantize.tflite import FLOAT_OPS
from edge.export.targets import TARGETS
from edge.export.tflite_graph import FLOAT_ISLAND_OPS
from tests.export.quantize_nets import (
    DEQUANTIZED_INT8,
    HeadSum,
    calibrated_tiny,
    gate,
    make_ctx,
    operand_kinds,
    shared_for,
)


@pytest.fixture(scope="module")
def net():
    return calibrated_tiny()


@pytest.fixture(scope="module")
def shared(net):
    return shared_for(net)


@pytest.fixture(scope="module")
def fp32(net, shared, tmp_path_factory) -> Path:
    ctx = make_ctx(net, "tflite", "fp32", tmp_path_factory.mktemp("tflite-fp32"), shared)
    return TARGETS["tflite"].convert(ctx)


def _quantize(net, shared, fp32, tmp_path_factory, precision: str, **quant):
    q = QuantOptions(**quant)
    ctx = make_ctx(net, "tflite", precision, tmp_path_factory.mktemp(f"tflite-{precision}"), shared, q,
                   float_artifact=fp32)
    return ctx, quantize(ctx)


def _graph(path: Path) -> tuple[Counter, Counter, list[dict], list[dict]]:
    """Op histogram, histogram of the ops computing in float, input and output details."""
    it = Interpreter(model_path=str(path))
    td = {t["index"]: t for t in it.get_tensor_details()}
    ops: Counter = Counter()
    float_ops: Counter = Counter()
    for op in it._get_ops_details():
        if op["op_name"] == "DELEGATE":
            continue
        ops[op["op_name"]] += 1
        if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE") and any(
                td[i]["dtype"] == np.float32 for i in op["outputs"] if i >= 0):
            float_ops[op["op_name"]] += 1
    return ops, float_ops, it.get_input_details(), it.get_output_details()


def _chosen_float(float_ops: Counter) -> int:
    """Float ops beyond the op types W8A8 keeps float by default (FLOAT_OPS) and the int8 ops edge runs as float
    islands inside XNNPACK (FLOAT_ISLAND_OPS, int8 in and out): those someone chose."""
    return sum(n for name, n in float_ops.items() if name not in (*FLOAT_OPS, *FLOAT_ISLAND_OPS))


@pytest.fixture(scope="module")
def int8(net, shared, fp32, tmp_path_factory):
    return _quantize(net, shared, fp32, tmp_path_factory, "int8", auto_mixed=1)


def test_int8_is_full_integer_with_int8_io_recorded_for_the_gate(int8) -> None:
    ctx, path = int8
    ops, by_type, ins, outs = _graph(path)
    # integer end to end, except the one module --auto-mixed 1 chose to keep float and the attention op types
    # W8A8 keeps float by default (each of them, and the manifest says which and why)
    assert _chosen_float(by_type) == len(ctx.extras["quantization"]["keep_float"]) >= 1
    islands = sum(by_type[op] for op in FLOAT_ISLAND_OPS if op not in FLOAT_OPS)  # those are float by default
    assert islands == ctx.extras["graph_rewrites"]["float_islands"] >= 1  # TinyNet's LayerNorm: RSQRT, ...
    assert "HARD_SWISH" in ops and "SOFTMAX" in ops and "BATCH_MATMUL" in ops
    default = ctx.extras["quantization"]["kept_float_by_default"]
    assert set(default["op_types"]) == {op for op in FLOAT_OPS if ops[op]} and "softmax" in default["why"]
    assert all(by_type[op] == ops[op] for op in default["op_types"])
    assert "HARD_SWISH" in default["op_types"] and by_type["CONV_2D"] <= len(ctx.extras["quantization"]["keep_float"])
    assert ins[0]["dtype"] == np.int8 and outs[0]["dtype"] == np.int8
    ioq = ctx.extras["io_quantization"]
    assert ioq["inputs"][0]["scale"] == pytest.approx(ins[0]["quantization"][0])
    assert ioq["inputs"][0]["zero_point"] == ins[0]["quantization"][1]
    assert ioq["outputs"][0]["scale"] == pytest.approx(outs[0]["quantization"][0])
    assert ioq["outputs"][0]["dtype"] == "int8"
    report = gate(ctx, path)  # quantizes the float images with the recorded scale, dequantizes the logits
    assert report["passed"], report["failures"]
    q = ctx.extras["quantization"]
    assert q["engine"] == "aeq" and q["float_io"] is False and q["calibration"]["samples"] == 32
    # per-channel zero points (one all-zero int64 vector per quantized weight) are written once per length
    assert q["packing"]["vectors_shared"] > 0 and q["packing"]["bytes_saved"] > 0
    json.dumps(q)


@pytest.fixture(scope="module")
def head_sum_fp32(tmp_path_factory) -> tuple[HeadSum, Path]:
    net = HeadSum().eval()
    ctx = make_ctx(net, "tflite", "fp32", tmp_path_factory.mktemp("head-sum"), shared_for(net, "fp32"))
    fp32 = TARGETS["tflite"].convert(ctx)
    assert _graph(fp32)[0]["BATCH_MATMUL"] == 1  # the fp32 artifact keeps the matmul
    return net, fp32


@pytest.mark.parametrize("precision", ["int8", "w8a16", "int8dyn", "int8w"])
def test_head_sum_projection_becomes_a_convolution(head_sum_fp32, precision, tmp_path) -> None:
    """EfficientFormerV2's NHWC attention projects its heads with a constant-weight BATCH_MATMUL summed over the
    heads; the integer recipes keep BATCH_MATMUL float, so the float graph is rewritten first and the projection
    comes out as a CONV_2D with per-channel int8 weights (in W8A8 an int8 convolution: XNNPACK's integer GEMM)
    computing the same sum."""
    net, fp32 = head_sum_fp32
    ctx = make_ctx(net, "tflite", precision, tmp_path, shared_for(net, precision), QuantOptions(), float_artifact=fp32)
    path = quantize(ctx)
    assert ctx.extras["graph_rewrites"]["head_sums_as_convs"] == 1
    ops, by_type, _, _ = _graph(path)
    assert ops["BATCH_MATMUL"] == 0 and ops["SUM"] == 0
    it = Interpreter(model_path=str(path))
    # the (C, heads, 1, c) kernel, stored int8 per output channel (weight-only adds its dequantized float copy)
    (kernel,) = [t for t in it.get_tensor_details() if list(t["shape"]) == [12, 4, 1, 6] and t["dtype"] == np.int8]
    assert len(kernel["quantization_parameters"]["scales"]) == 12
    if precision == "int8":
        assert by_type["CONV_2D"] == 0  # integer compute, not only integer storage
    report = gate(ctx, path)
    assert report["passed"], report["failures"]


def test_int8_layers_and_auto_mixed(int8) -> None:
    ctx, _ = int8
    q = ctx.extras["quantization"]
    layers = q["fidelity"]["layers"]
    mods = {r["layer"] for r in layers["all"]}
    assert {"stem.0", "norm", "attn.qkv", "head"} & mods  # ranked per nn.Module
    am = q["auto_mixed"]
    assert am["n"] == 1 and am["kept_float"] == [layers["most_sensitive"][0]["layer"]]
    assert am["gain_db"] == pytest.approx(am["after"]["sqnr_db"] - am["before"]["sqnr_db"], abs=1e-3)
    assert q["fidelity"]["outputs"]["logits"]["sqnr_db"] == am["after"]["sqnr_db"]


def test_float_io_keeps_float_inputs_and_outputs(net, shared, fp32, tmp_path_factory) -> None:
    ctx, path = _quantize(net, shared, fp32, tmp_path_factory, "int8", float_io=True)
    ops, float_ops, ins, outs = _graph(path)
    assert ins[0]["dtype"] == np.float32 and outs[0]["dtype"] == np.float32
    assert ops["QUANTIZE"] >= 1 and ops["DEQUANTIZE"] >= 1 and _chosen_float(float_ops) == 0
    assert "io_quantization" not in ctx.extras and ctx.extras["quantization"]["float_io"] is True
    assert gate(ctx, path)["passed"]


def test_w8a16_has_int16_io_and_beats_int8(net, shared, fp32, tmp_path_factory, int8) -> None:
    ctx, path = _quantize(net, shared, fp32, tmp_path_factory, "w8a16")
    _, _, ins, outs = _graph(path)
    assert ins[0]["dtype"] == np.int16 and outs[0]["dtype"] == np.int16
    report = gate(ctx, path)
    assert report["passed"], report["failures"]
    int8_sqnr = int8[0].extras["quantization"]["fidelity"]["outputs_before_auto_mixed"]["logits"]["sqnr_db"]
    assert report["outputs"]["logits"]["sqnr_db"] > int8_sqnr + 3


@pytest.mark.parametrize("precision", ["int8w", "int8dyn"])
def test_weight_only_and_dynamic(net, shared, fp32, tmp_path_factory, tmp_path, precision) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    with pytest.warns(UserWarning, match=f"ignored for {precision}"):
        ctx, path = _quantize(net, shared, fp32, tmp_path_factory, precision, calib_dir=calib)
    _, _, ins, outs = _graph(path)
    assert ins[0]["dtype"] == np.float32 and outs[0]["dtype"] == np.float32
    q = ctx.extras["quantization"]
    assert q["calibration"] is None and any("--calib" in w for w in q["warnings"])
    report = gate(ctx, path)
    assert report["passed"], report["failures"]
    assert path.stat().st_size < 0.7 * fp32.stat().st_size


def test_keep_float_module(net, shared, fp32, tmp_path_factory) -> None:
    ctx, path = _quantize(net, shared, fp32, tmp_path_factory, "int8", keep_float=("norm",))
    _, float_ops, _, _ = _graph(path)
    assert _chosen_float(float_ops) >= 5  # LayerNorm's MEAN/SQUARED_DIFFERENCE/RSQRT/MUL/ADD now compute in float
    assert all("LayerNorm_norm" in n for n in ctx.extras["quantization"]["keep_float"])
    with pytest.raises(EdgeError, match="--keep-float 'nrom' matches no layer") as e:
        _quantize(net, shared, fp32, tmp_path_factory, "int8", keep_float=("nrom",))
    assert "'norm'" in str(e.value)


def test_engine_errors(net, shared, fp32, tmp_path_factory) -> None:
    with pytest.raises(EdgeError, match="PT2E engine makes int8"):
        _quantize(net, shared, fp32, tmp_path_factory, "w8a16", engine="pt2e")
    with pytest.raises(EdgeError, match="unknown TFLite int8 engine"):
        _quantize(net, shared, fp32, tmp_path_factory, "int8", engine="tflite-converter")
    with pytest.raises(EdgeError, match="--float-io is not available with the PT2E engine"):
        _quantize(net, shared, fp32, tmp_path_factory, "int8", engine="pt2e", float_io=True)


@pytest.mark.slow  # a second full conversion through torch.export + PT2E: 40-110 s here
def test_pt2e_engine(net, shared, fp32, tmp_path_factory, int8) -> None:
    """PT2E: int8 I/O too, but hardswish / LayerNorm / softmax stay float between QUANTIZE/DEQUANTIZE;
    --keep-float works by module path, and the per-layer study runs on the fake-quantized torch graph."""
    ctx, path = _quantize(net, shared, fp32, tmp_path_factory, "int8", engine="pt2e", keep_float=("attn.qkv",))
    ops, float_ops, ins, outs = _graph(path)
    assert ins[0]["dtype"] == np.int8 and outs[0]["dtype"] == np.int8
    assert _chosen_float(float_ops) > 0 and ops["DEQUANTIZE"] >= 2
    it = Interpreter(model_path=str(path))
    td = {t["index"]: t for t in it.get_tensor_details()}
    fc = [op for op in it._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
    assert sum(td[op["outputs"][0]]["dtype"] == np.float32 for op in fc) == 1  # attn.qkv kept float
    q = ctx.extras["quantization"]
    assert q["engine"] == "pt2e" and q["keep_float"] == ["attn.qkv"]
    rows = q["fidelity"]["layers"]["all"]
    assert {"stem.0", "attn.proj", "head"} <= {r["module"] for r in rows}
    report = gate(ctx, path)
    assert report["passed"], report["failures"]


class ConstantLeftMatmul(torch.nn.Module):
    """A constant (h, h) matrix on the left of a batched matmul, as EfficientFormerV2's talking heads mix heads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, 2, 1)
        self.mix = torch.nn.Parameter(torch.randn(4, 4) * 0.5)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.relu(self.conv(x))
        b, c, h, w = t.shape
        mixed = self.mix.reshape(1, 4, 4) @ t.reshape(b, 4, 2 * h * w)
        return self.head(mixed.reshape(b, c, h * w).mean(-1))


@pytest.mark.parametrize("precision", ["int8", "w8a16", "int8dyn"])
def test_constant_operand_batched_matmul_computes_in_float_and_runs(tmp_path, precision) -> None:
    """W8A16 / dynamic int8 give a batched matmul with a constant left operand (EfficientFormerV2's talking heads)
    operand types LiteRT's BATCH_MATMUL kernel rejects at run time; edge keeps BATCH_MATMUL's compute float and
    says so, while the constant operand is still stored int8 (dequantized in front of the op)."""
    torch.manual_seed(0)
    net = ConstantLeftMatmul().eval()
    shared = shared_for(net, precision)
    fp32 = TARGETS["tflite"].convert(make_ctx(net, "tflite", "fp32", tmp_path / "fp32", shared))
    ctx = make_ctx(net, "tflite", precision, tmp_path / precision, shared, float_artifact=fp32)
    path = quantize(ctx)
    default = ctx.extras["quantization"]["kept_float_by_default"]
    assert default["op_types"] == {"BATCH_MATMUL": 1} and "matmul" in default["why"].lower()
    assert default["int8_weights"] == ["BATCH_MATMUL"]
    (operands,) = operand_kinds(path)
    assert operands[0] == DEQUANTIZED_INT8, operands  # the constant (h, h) mixer: int8 in the file
    report = gate(ctx, path)  # runs the artifact in LiteRT (batch_matmul.cc raised before the fix)
    assert report["passed"], report["failures"]


@pytest.mark.parametrize("precision", ["int8", "int8dyn", "w8a16", "int8w"])
def test_constant_right_operand_matmuls_compute_in_int8_where_the_mode_does(tmp_path, precision) -> None:
    """EfficientFormerV2's per-head projections ``x @ W(h, c, d)``: where the mode's matmuls compute in int8 (W8A8,
    dynamic range), the batched matmul reads its int8 weights directly (a hybrid op, input quantized per row at run
    time); weight-only and W8A16 keep it float, its weights dequantized in front. Each artifact passes its gate."""
    from tests.export.quantize_nets import HeadProjection

    net = HeadProjection().eval()
    shared = shared_for(net, precision)
    fp32 = TARGETS["tflite"].convert(make_ctx(net, "tflite", "fp32", tmp_path / "fp32", shared))
    ctx = make_ctx(net, "tflite", precision, tmp_path / precision, shared, float_artifact=fp32)
    path = quantize(ctx)
    hybrid = precision in ("int8", "int8dyn")
    assert ctx.extras["graph_rewrites"].get("hybrid_constant_matmuls", 0) == (2 if hybrid else 0)
    projections = [right for _, right in operand_kinds(path)][:2]  # stored int8 in every mode
    assert projections == ["int8 constant" if hybrid else DEQUANTIZED_INT8] * 2, projections
    why = (ctx.extras["quantization"]["kept_float_by_default"] or {}).get("why", "")  # int8w: none kept float
    assert ("hybrid int8" in why) == hybrid, why
    report = gate(ctx, path)
    assert report["passed"], report["failures"]


def test_a_projection_kept_float_stays_float(tmp_path) -> None:
    """``--keep-float`` on one projection: that batched matmul keeps its dequantized weights (float compute), the
    other one still reads int8."""
    from tests.export.quantize_nets import HeadProjection

    net = HeadProjection().eval()
    shared = shared_for(net, "int8")
    fp32 = TARGETS["tflite"].convert(make_ctx(net, "tflite", "fp32", tmp_path / "fp32", shared))
    ctx = make_ctx(net, "tflite", "int8", tmp_path / "int8", shared, QuantOptions(keep_float=("q",)),
                   float_artifact=fp32)
    path = quantize(ctx)
    assert ctx.extras["graph_rewrites"]["hybrid_constant_matmuls"] == 1
    assert ctx.extras["quantization"]["keep_float"]  # resolved to the projection's tensor names
    it = Interpreter(model_path=str(path))
    dtype = {t["index"]: np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    projections = [op for op in it._get_ops_details() if op["op_name"] == "BATCH_MATMUL"][:2]  # noqa: SLF001
    kinds = {names[int(op["outputs"][0])].split(";")[0]: dtype[int(op["inputs"][1])] for op in projections}
    assert sorted(kinds.values()) == ["float32", "int8"], kinds
    (kept,) = [n for n, d in kinds.items() if d == "float32"]
    assert kept.endswith("PerHeadProjection_q"), kinds


def test_keep_float_takes_the_networks_own_module_paths(tmp_path) -> None:
    """With --channels-last the file's tensor names carry litert-torch's NHWC wrapper, and a conv fused with its
    ReLU is named after the ReLU first: ``stem`` and ``dw.0`` (the depthwise conv itself) still select them."""
    from edge.export.quantize.tflite import TfliteGraph

    net = calibrated_tiny(attention=False)
    shared = shared_for(net)
    fp32 = TARGETS["tflite"].convert(make_ctx(net, "tflite", "fp32", tmp_path / "fp32", shared, channels_last=True))
    layers = TfliteGraph(fp32).layers
    assert all(not m.startswith("wrapped") for ly in layers for m in ly["modules"])
    (dw,) = [ly for ly in layers if ly["op"] == "DEPTHWISE_CONV_2D"]
    assert dw["modules"] == ["dw.2", "dw.0"]  # fused ReLU first, the conv last
    ctx = make_ctx(net, "tflite", "int8", tmp_path / "int8", shared, QuantOptions(keep_float=("stem", "dw.0")),
                   float_artifact=fp32, channels_last=True)
    path = quantize(ctx)
    _, float_ops, _, _ = _graph(path)
    assert float_ops["CONV_2D"] == 1 and float_ops["DEPTHWISE_CONV_2D"] == 1, float_ops  # the pointwise stays int8
    assert gate(ctx, path)["passed"]


def test_pt2e_keep_float_paths_leave_the_nhwc_wrapper_out() -> None:
    """PT2E quantizes the --channels-last wrapper's graph: ``stem`` names the network's stem there too."""
    import litert_torch

    from edge.export.quantize.tflite import _module_paths, keep_float_quantizer

    wrapped = litert_torch.to_channel_last_io(calibrated_tiny(attention=False), args=[0]).eval()
    gm = torch.export.export(wrapped, (torch.zeros(1, 32, 32, 3),), strict=False).module()
    paths = {p for n in gm.graph.nodes for p in _module_paths(n, io_wrapped=True)}
    assert {"stem.0", "dw.0", "head"} <= paths and not any(p.startswith("wrapped") for p in paths)
    keep_float_quantizer(("stem", "dw.0"), io_wrapped=True).check_names(gm)  # resolves: no error
    with pytest.raises(EdgeError, match="'stem' matches no module"):  # the wrapper's own paths would need it
        keep_float_quantizer(("stem",)).check_names(gm)


def test_dynamic_range_int8_keeps_depthwise_convs_float_so_xnnpack_takes_the_whole_graph(tmp_path) -> None:
    """XNNPACK has no kernel for a depthwise conv with int8 weights and float activations, so LiteRT ran each one
    outside the delegate (GhostNet: 37 partitions, 2.6x fp32's time). int8dyn keeps them float, their weights still
    stored int8 and dequantized in front; the other convs read int8 weights (dynamic range); XNNPACK takes every
    node."""
    from edge.devices.runner import _litert_coverage

    net = calibrated_tiny(attention=False)
    shared = shared_for(net, "int8dyn")
    fp32 = TARGETS["tflite"].convert(make_ctx(net, "tflite", "fp32", tmp_path / "fp32", shared, channels_last=True))
    ctx = make_ctx(net, "tflite", "int8dyn", tmp_path / "int8dyn", shared, float_artifact=fp32, channels_last=True)
    path = quantize(ctx)
    assert operand_kinds(path, "DEPTHWISE_CONV_2D") == [("float", DEQUANTIZED_INT8)]
    assert {w for _, w in operand_kinds(path, "CONV_2D")} == {"int8 constant"}
    default = ctx.extras["quantization"]["kept_float_by_default"]
    assert default["op_types"] == {"DEPTHWISE_CONV_2D": 1} and "depthwise" in default["why"]
    assert default["int8_weights"] == ["DEPTHWISE_CONV_2D"]
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    coverage = _litert_coverage(it)
    assert coverage["fallback_ops"] == {} and coverage["partitions"] == 1, coverage
    report = gate(ctx, path)
    assert report["passed"], report["failures"]
