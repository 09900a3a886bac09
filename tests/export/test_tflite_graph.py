"""The TFLite rewrites (edge.export.tflite_graph): key transposes folded into BATCH_MATMUL ``adj_y``,
RESIZE_NEAREST_NEIGHBOR given PyTorch's ``nearest`` index rule, and repeated vectors stored once.

Converted with the real litert-torch and run in the real LiteRT interpreter, both with its reference kernels and
with the default XNNPACK delegate: the rewritten graph must compute what the converter's graph computes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.export.tflite_graph import rewrite, rewrite_in_place, share_repeated_vectors


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
    assert counts == {"transposes_folded": 1, "nearest_resizes_fixed": 0}
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
