"""The TFLite rewrites (edge.export.tflite_graph): key transposes folded into BATCH_MATMUL ``adj_y``,
RESIZE_NEAREST_NEIGHBOR given PyTorch's ``nearest`` index rule, repeated vectors stored once, and per-head
projections summed over heads written as one convolution before quantization.

Converted with the real litert-torch and run in the real LiteRT interpreter, both with its reference kernels and
with the default XNNPACK delegate: the rewritten graph must compute what the converter's graph computes.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from edge.export.tflite_graph import (
    INTEGER_REWRITES,
    QUANTIZED_MATMUL_REWRITES,
    float_islands,
    maximum_as_sub_add,
    raise_add_input_scales,
    rewrite,
    rewrite_in_place,
    share_repeated_vectors,
)
from tests.export.quantize_nets import DEQUANTIZED_INT8, operand_kinds


class KeyAttention(torch.nn.Module):
    """``q @ k^T`` as the converter writes it for batch 1 (TRANSPOSE -> RESHAPE dropping the batch -> BATCH_MATMUL),
    and a second one whose transposed keys are also read by SUM: that transpose must stay."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.wq = torch.nn.Parameter(torch.randn(4, 12, 8, generator=g) * 0.3)
        self.wk = torch.nn.Parameter(torch.randn(4, 12, 8, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1).reshape(b, 1, h * w, c)
        q, k = t @ self.wq, t @ self.wk  # (B, 4, N, 8)
        attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        pair = torch.cat([k, k], 0)  # batch 2: the converter keeps the batch dim
        kt = pair.transpose(-1, -2)
        return attn, torch.cat([q, q], 0) @ kt + kt.sum()


def ops_of(path: Path, delegate: bool) -> tuple[object, list[str]]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=kind, num_threads=1)
    interp.allocate_tensors()
    return interp, [op["op_name"] for op in interp._get_ops_details()]  # noqa: SLF001 - runtime's op list


def run(interp: object, x: np.ndarray) -> list[np.ndarray]:
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    import litert_torch

    d = tmp_path_factory.mktemp("fold")
    x = torch.randn(1, 12, 3, 5)
    before = d / "before.tflite"
    litert_torch.convert(KeyAttention().eval(), (x,)).export(str(before))
    out, counts = rewrite(before.read_bytes())
    assert counts == {"transposes_folded": 1, "nearest_resizes_fixed": 0, "add_input_scales_raised": 0,
                      "maximums_as_sub_add": 0, "float_islands": 0}
    after = d / "after.tflite"
    after.write_bytes(out)
    return before, after


def test_transposes_feeding_matmuls_are_folded(converted) -> None:
    before, after = converted
    _, ops_before = ops_of(before, delegate=False)
    _, ops_after = ops_of(after, delegate=False)
    # The input NCHW->NHWC transpose and the one also read by SUM stay; the one only feeding a matmul goes.
    assert Counter(ops_before)["TRANSPOSE"] == 3 and Counter(ops_after)["TRANSPOSE"] == 2
    assert Counter(ops_after)["BATCH_MATMUL"] == Counter(ops_before)["BATCH_MATMUL"]
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(after.read_bytes()), 0)
    code = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    adj = [op.builtinOptions.adjY for op in model.subgraphs[0].operators
           if code[op.opcodeIndex] == schema.BuiltinOperator.BATCH_MATMUL]
    assert sorted(adj) == [False, False, False, True]  # q, k projections, q@k^T (folded), pair@kt
    # No orphan left behind: every tensor is produced by an op, a graph input, or a constant (ai-edge-quantizer's
    # calibration reads every tensor and fails on one nothing writes).
    sg = model.subgraphs[0]
    produced = {int(o) for op in sg.operators for o in op.outputs} | {int(i) for i in sg.inputs}
    for i, t in enumerate(sg.tensors):
        assert i in produced or len(model.buffers[t.buffer].data if model.buffers[t.buffer].data is not None
                                    else []) > 0, t.name


@pytest.mark.parametrize("delegate", [False, True], ids=["reference-kernels", "xnnpack"])
def test_rewritten_graph_computes_the_same(converted, delegate) -> None:
    before, after = converted
    assert misaligned_buffers(after) == []  # flatbuffers' Python packer alone would align bytes to 1
    x = np.random.default_rng(1).standard_normal((1, 12, 3, 5)).astype(np.float32)
    interp_b, _ = ops_of(before, delegate)
    interp_a, ops = ops_of(after, delegate)
    if delegate:
        assert "DELEGATE" in ops
    for a, b in zip(run(interp_a, x), run(interp_b, x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_graph_without_the_pattern_is_returned_unchanged(tmp_path) -> None:
    import litert_torch

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    litert_torch.convert(m, (torch.randn(1, 3, 8, 8),)).export(str(tmp_path / "m.tflite"))
    buf = (tmp_path / "m.tflite").read_bytes()
    out, counts = rewrite(buf)
    assert not any(counts.values()) and out is buf


class NearestGate(torch.nn.Module):
    """GhostNetV2's DFC gate in miniature: pool /2, then nearest-upsample back to the input's (odd) size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.nn.functional.avg_pool2d(x, kernel_size=2, stride=2)
        return x * torch.nn.functional.interpolate(gate, size=x.shape[-2:], mode="nearest")


@pytest.mark.parametrize("size", [7, 9, 14], ids=["7-from-3", "9-from-4", "14-from-7"])
@pytest.mark.parametrize("delegate", [False, True], ids=["reference-kernels", "xnnpack"])
def test_nearest_resize_matches_pytorch(tmp_path, size, delegate) -> None:
    import litert_torch

    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    path = tmp_path / "gate.tflite"
    litert_torch.convert(NearestGate().eval(), (x,)).export(str(path))
    expected = NearestGate()(x).numpy()
    interp, _ = ops_of(path, delegate)
    unfixed = run(interp, x.numpy())[0]
    counts = rewrite_in_place(path)
    assert counts["nearest_resizes_fixed"] == 1
    interp, ops = ops_of(path, delegate)
    assert "RESIZE_NEAREST_NEIGHBOR" in ops  # the interpreter lists the graph's ops, delegated ones included
    np.testing.assert_allclose(run(interp, x.numpy())[0], expected, rtol=1e-6, atol=1e-6)
    if size % 2:  # the converter's half-pixel rule picks other source pixels when the scale is not an integer
        assert np.abs(unfixed - expected).max() > 1e-2


def test_nearest_exact_is_left_alone(tmp_path) -> None:
    """``mode="nearest-exact"`` (half-pixel by definition) must keep its rule: the converter writes it as a gather,
    so the rewrite finds no RESIZE_NEAREST_NEIGHBOR to change and the file still equals PyTorch."""
    import litert_torch

    class ExactGate(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            gate = torch.nn.functional.avg_pool2d(x, kernel_size=2, stride=2)
            return torch.nn.functional.interpolate(gate, size=x.shape[-2:], mode="nearest-exact")

    x = torch.randn(1, 3, 7, 7, generator=torch.Generator().manual_seed(7))
    path = tmp_path / "exact.tflite"
    litert_torch.convert(ExactGate().eval(), (x,)).export(str(path))
    assert rewrite_in_place(path)["nearest_resizes_fixed"] == 0
    interp, _ = ops_of(path, delegate=False)
    np.testing.assert_allclose(run(interp, x.numpy())[0], ExactGate()(x).numpy(), rtol=1e-6, atol=1e-6)


def misaligned_buffers(path: Path) -> list[int]:
    """Indices of constant buffers of 16 bytes or more whose data does not start on a 16-byte boundary."""
    from ai_edge_litert import schema_py_generated as schema

    buf = bytearray(path.read_bytes())
    model = schema.Model.GetRootAs(buf, 0)
    bad = []
    for i in range(model.BuffersLength()):
        b = model.Buffers(i)
        field = b._tab.Offset(4)  # noqa: SLF001 - Buffer.data's vtable slot; its vector's first byte
        if field and b.DataLength() >= 16 and b._tab.Vector(field) % 16:  # noqa: SLF001
            bad.append(i)
    return bad


@pytest.mark.parametrize("delegate", [False, True], ids=["reference-kernels", "xnnpack"])
def test_shared_vectors_keep_every_number(tmp_path, delegate) -> None:
    """A per-channel int8 file (ai-edge-quantizer writes its constants after the flatbuffer, by offset) packed with
    repeated vectors stored once: smaller, aligned, and bit-for-bit the same outputs."""
    import litert_torch

    from edge.export.quantize.tflite import aeq_quantize

    g = torch.Generator().manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 1),
                              torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 1)).eval()
    for p in net.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.2
    x = torch.randn(1, 3, 9, 9, generator=g)
    litert_torch.convert(net, (x,)).export(str(tmp_path / "fp32.tflite"))
    quant = aeq_quantize("int8w", tmp_path / "fp32.tflite", tmp_path / "int8w.tflite", None)
    packed = tmp_path / "packed.tflite"
    packed.write_bytes(quant.read_bytes())
    result = share_repeated_vectors(packed)
    # Three per-channel weights of 64 output channels: three all-zero int64 zero-point vectors, two repeats.
    assert result["vectors_shared"] >= 2
    assert result["bytes_saved"] == quant.stat().st_size - packed.stat().st_size >= 2 * 64 * 8
    assert misaligned_buffers(packed) == []
    interp_q, _ = ops_of(quant, delegate)
    interp_p, _ = ops_of(packed, delegate)
    np.testing.assert_array_equal(run(interp_p, x.numpy())[0], run(interp_q, x.numpy())[0])


class XnnpackSplitters(torch.nn.Module):
    """One of each int8 op that LiteRT's XNNPACK delegate left to TFLite's kernels in the quantized zoo: a residual
    branch behind a 1e-5 layer scale (EfficientFormer), pooling minus identity, a dynamic-ReLU MAXIMUM
    (Mobile-Former) and a LayerNorm (RSQRT, SQUARED_DIFFERENCE, the ADD of eps)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.branch = torch.nn.Conv2d(16, 16, 1)
        self.pool = torch.nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.slopes = torch.nn.Linear(16, 32)
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 10)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + 1e-5 * self.branch(x)
        x = x + (self.pool(x) - x)
        a1, a2 = torch.tanh(self.slopes(x.mean((2, 3)))).reshape(-1, 32, 1, 1).chunk(2, dim=1)
        x = torch.maximum(x * (a1 + 1), x * a2)
        return self.head(self.norm(x.mean((2, 3))))


def xnnpack_leftovers(path: Path) -> dict[str, int]:
    """Op types outside the default XNNPACK delegate, as edge-bench reports them."""
    from edge.devices.runner import _litert_coverage

    interp, _ = ops_of(path, delegate=True)
    return _litert_coverage(interp)["fallback_ops"]


def quantized_before_after(d: Path, net: torch.nn.Module, seed: int, rewrites: dict[str, Any] | None = None
                           ) -> tuple[Path, Path, dict[str, int], np.ndarray, np.ndarray]:
    """The W8A8 graph of ``net`` as ai-edge-quantizer writes it (edge's rewrites held back), that graph with
    ``rewrites`` applied (default: all of ``REWRITES``), held-out photos and the network's float outputs on them."""
    import litert_torch

    from edge.data import image_batch
    from edge.export.quantize import tflite as tflite_quant
    from edge.export.quantize.calibration import CalibrationSet

    batch, _ = image_batch(12, 16, (0.5,) * 3, (0.25,) * 3, seed=seed)
    litert_torch.convert(net, (batch[:1],)).export(str(d / "fp32.tflite"))
    calib = CalibrationSet(batch=batch[:8], source="test photos", method="minmax", files=8)
    held = tflite_quant.rewrite_in_place
    tflite_quant.rewrite_in_place = lambda path, rewrites=None: {}
    try:
        before = tflite_quant.aeq_quantize("int8", d / "fp32.tflite", d / "before.tflite", calib, float_io=True)
    finally:
        tflite_quant.rewrite_in_place = held
    out, counts = rewrite(before.read_bytes(), rewrites)
    after = d / "after.tflite"
    after.write_bytes(out)
    with torch.no_grad():
        ref = net(batch[8:]).numpy()
    return before, after, counts, batch[8:].numpy(), ref


@pytest.fixture(scope="module")
def int8_splitters(tmp_path_factory) -> tuple[Path, Path, dict[str, int], np.ndarray, np.ndarray]:
    return quantized_before_after(tmp_path_factory.mktemp("xnnpack"), XnnpackSplitters().eval(), seed=2)


def test_int8_graph_runs_whole_in_xnnpack(int8_splitters) -> None:
    before, after, counts, _, _ = int8_splitters
    left = xnnpack_leftovers(before)
    # what the quantizer wrote splits the delegate at each op kind the rewrites target
    assert {"ADD", "MAXIMUM", "RSQRT", "AVERAGE_POOL_2D"} <= set(left), left
    assert counts["add_input_scales_raised"] >= 1 and counts["maximums_as_sub_add"] == 1
    assert counts["float_islands"] >= 3, counts  # RSQRT, SQUARED_DIFFERENCE, AVERAGE_POOL_2D
    assert xnnpack_leftovers(after) == {}
    _, ops = ops_of(after, delegate=True)
    assert ops.count("DELEGATE") == 1


@pytest.mark.parametrize("delegate", [False, True], ids=["reference-kernels", "xnnpack"])
def test_int8_rewrites_keep_the_numbers(int8_splitters, delegate, tmp_path) -> None:
    """On photos the calibration did not see: the raised scales (an error of 1/2000 output step), MAXIMUM's rewrite
    and the RSQRT / SQUARED_DIFFERENCE islands give the quantizer's bits; with the average-pool island too (ties
    may round the other way) the outputs are as close to the float network as before."""
    before, after, _, xs, ref = int8_splitters
    same_bits = {"add_input_scales_raised": raise_add_input_scales, "maximums_as_sub_add": maximum_as_sub_add,
                 "float_islands": functools.partial(float_islands, ops=("RSQRT", "SQUARED_DIFFERENCE"))}
    out, counts = rewrite(before.read_bytes(), same_bits)
    assert counts["float_islands"] == 2 and counts["maximums_as_sub_add"] == 1
    exact = tmp_path / "exact.tflite"
    exact.write_bytes(out)
    interp_b, _ = ops_of(before, delegate)
    interp_e, _ = ops_of(exact, delegate)
    interp_a, _ = ops_of(after, delegate)
    got_b = np.concatenate([run(interp_b, x[None])[0] for x in xs])
    np.testing.assert_array_equal(np.concatenate([run(interp_e, x[None])[0] for x in xs]), got_b)
    got_a = np.concatenate([run(interp_a, x[None])[0] for x in xs])

    def sqnr(got: np.ndarray) -> float:
        return float(10 * np.log10((ref ** 2).sum() / ((got - ref) ** 2).sum()))

    assert sqnr(got_a) >= sqnr(got_b) - 0.5, (sqnr(got_a), sqnr(got_b))  # 0.5 dB: a few ties of one step


@pytest.fixture(scope="module")
def head_sum(tmp_path_factory) -> tuple[Path, Path, dict[str, int]]:
    import litert_torch

    from tests.export.quantize_nets import HeadSum

    d = tmp_path_factory.mktemp("head-sum")
    before = d / "before.tflite"
    litert_torch.convert(HeadSum().eval(), (torch.randn(1, 3, 16, 16),)).export(str(before))
    out, counts = rewrite(before.read_bytes(), INTEGER_REWRITES)
    after = d / "after.tflite"
    after.write_bytes(out)
    return before, after, counts


def test_head_sum_becomes_one_convolution(head_sum) -> None:
    before, after, counts = head_sum
    assert counts == {"head_sums_as_convs": 1}
    _, ops_b = ops_of(before, delegate=False)
    _, ops_a = ops_of(after, delegate=False)
    b, a = Counter(ops_b), Counter(ops_a)
    assert b["BATCH_MATMUL"] == 1 and b["SUM"] == 1  # what the converter writes for (t @ w).sum(1) + b
    assert a["BATCH_MATMUL"] == 0 and a["SUM"] == 0 and a["CONV_2D"] == b["CONV_2D"] + 1
    assert a["ADD"] == b["ADD"] - 1  # the bias joined the convolution, with the ReLU the converter fused into it
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(after.read_bytes()), 0)
    sg = model.subgraphs[0]
    code = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    (conv,) = [op for op in sg.operators if code[op.opcodeIndex] == schema.BuiltinOperator.CONV_2D
               and list(sg.tensors[int(op.inputs[1])].shape)[1:3] != [3, 3]]
    assert list(sg.tensors[int(conv.inputs[1])].shape) == [12, 4, 1, 6]  # (C, heads, 1, c): an (h x 1) kernel
    assert conv.builtinOptions.fusedActivationFunction == schema.ActivationFunctionType.RELU
    # fp32 artifacts keep the matmul: in float it is as fast, and the default rewrites leave it alone
    assert rewrite(before.read_bytes())[1].get("head_sums_as_convs") is None


@pytest.mark.parametrize("delegate", [False, True], ids=["reference-kernels", "xnnpack"])
def test_head_sum_convolution_computes_the_same(head_sum, delegate) -> None:
    before, after, _ = head_sum
    assert misaligned_buffers(after) == []
    x = np.random.default_rng(4).standard_normal((1, 3, 16, 16)).astype(np.float32)
    interp_b, _ = ops_of(before, delegate)
    interp_a, ops = ops_of(after, delegate)
    if delegate:
        assert ops.count("DELEGATE") == 1
    np.testing.assert_allclose(run(interp_a, x)[0], run(interp_b, x)[0], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def head_projection(tmp_path_factory) -> tuple[Path, Path, dict[str, int], np.ndarray, np.ndarray]:
    from tests.export.quantize_nets import HeadProjection

    return quantized_before_after(tmp_path_factory.mktemp("head-projection"), HeadProjection().eval(), seed=3,
                                  rewrites=QUANTIZED_MATMUL_REWRITES)


def test_constant_right_operands_are_read_int8(head_projection) -> None:
    before, after, counts, _, _ = head_projection
    assert counts == {"hybrid_constant_matmuls": 2}
    b, a = Counter(operand_kinds(before)), Counter(operand_kinds(after))
    assert b[("float", DEQUANTIZED_INT8)] == 2  # the per-head projections, as the quantizer leaves them
    assert a[("float", DEQUANTIZED_INT8)] == 0 and a[("float", "int8 constant")] == 2
    # the talking-heads matrix is a constant LEFT operand (LiteRT has no float-right hybrid) and stays dequantized
    assert a[(DEQUANTIZED_INT8, "float")] == b[(DEQUANTIZED_INT8, "float")] == 1
    assert a[("float", "float")] == b[("float", "float")] == 2  # two activations: nothing to read int8
    assert xnnpack_leftovers(after) == {}
    _, ops = ops_of(after, delegate=True)
    assert ops.count("DELEGATE") == 1
    assert misaligned_buffers(after) == []
    # weight-only and W8A16 graphs are not given it: their recipes keep every matmul in float
    assert rewrite(before.read_bytes())[1].get("hybrid_constant_matmuls") is None


@pytest.mark.parametrize("delegate", [False, True], ids=["reference-kernels", "xnnpack"])
def test_hybrid_matmuls_stay_as_close_to_float(head_projection, delegate) -> None:
    """On photos the calibration did not see, the per-row run-time quantization of the projections' input keeps
    the outputs as close to the float network as the dequantized float matmuls were (XNNPACK and LiteRT's own
    kernels both, per-channel weight scales included)."""
    before, after, _, xs, ref = head_projection
    interp_b, _ = ops_of(before, delegate)
    interp_a, _ = ops_of(after, delegate)
    got_b = np.concatenate([run(interp_b, x[None])[0] for x in xs])
    got_a = np.concatenate([run(interp_a, x[None])[0] for x in xs])

    def sqnr(got: np.ndarray) -> float:
        return float(10 * np.log10((ref ** 2).sum() / ((got - ref) ** 2).sum()))

    assert sqnr(got_b) > 20, sqnr(got_b)
    assert sqnr(got_a) >= sqnr(got_b) - 1.0, (sqnr(got_a), sqnr(got_b))  # 1 dB: the input's rounding, now per row


def test_hybrid_projection_is_the_float_one_within_input_rounding(head_projection) -> None:
    """The projections themselves (LiteRT's reference kernels, every tensor kept): they do compute differently,
    and only by the per-row int8 rounding of their input (53-56 dB here; weights read with a wrong
    per-channel scale would be off by whole dB-tens)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    before, after, _, xs, _ = head_projection

    def projections(path: Path) -> list[np.ndarray]:
        it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
        run(it, xs[0][None])
        ops = [op for op in it._get_ops_details() if op["op_name"] == "BATCH_MATMUL"]  # noqa: SLF001
        return [it.get_tensor(int(op["outputs"][0])) for op in ops[:2]]

    for b, a in zip(projections(before), projections(after)):
        assert not np.array_equal(a, b)
        db = 10 * np.log10((b ** 2).sum() / ((a - b) ** 2).sum())
        assert 30 < db < 80, db
