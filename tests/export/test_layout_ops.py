"""Layout ops in the graphs edge writes (issue 6): counted, not timed.

The graphs are read back through the LiteRT interpreter's own op list, with the default XNNPACK delegate left
out so that every builtin op stays visible. That is a second reader, independent of the flatbuffer walk that
fills the manifest, so the manifest's histogram is checked against the file rather than against itself.

Goals asserted (issue 6, "Fewest layout ops"):
* a CNN exported with ``--channels-last`` has no TRANSPOSE (GhostNet-0.5x, the smallest CNN in the zoo);
* EfficientFormerV2's TFLite has at most 10 TRANSPOSE (timm's S0 converted by hand has 55); edge's deploy form
  needs one per attention plus the NCHW input's (key transposes folded into BATCH_MATMUL ``adj_y``);
* no softmax is decomposed into REDUCE_MAX / SUB / EXP / SUM / DIV: every attention keeps one native SOFTMAX;
* EfficientFormerV2's ONNX (an NCHW runtime) gets the NCHW deploy form: at most three Transposes per attention,
  as in the paper's code (the NHWC form written for LiteRT has 31 in ONNX at S0, timm's S0 16).

Both networks are exported at 64x64 (EfficientFormerV2's smallest size, built for it with ``img_size=64``): the
op structure does not depend on the input size, and the conversions stay cheap. EfficientFormerV2 is handed to
the pipeline as a module, with its BatchNorm statistics re-estimated at 64x64 here: ``create(name, img_size=64)``
re-estimates them on 224x224 photos (the registry's default size), which a network built for 64x64 rejects.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edge.export import export
from edge.models import calibrate_bn, create, get_info

IMG = 64
EFV2 = "efficientformerv2-s0"
MAX_EFV2_TRANSPOSE = 10


def interpreter_ops(artifact: Path) -> list[dict]:
    """The interpreter's op list (name, input and output tensor indices), before any delegate rewrites it."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(artifact),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    return interp._get_ops_details()  # noqa: SLF001 - the only public-enough view of the runtime's op list


def histogram(ops: list[dict]) -> dict[str, int]:
    return dict(Counter(op["op_name"] for op in ops))


def decomposed_softmaxes(ops: list[dict]) -> list[int]:
    """Indices of EXP ops that are part of a hand-written softmax: fed by SUB(REDUCE_MAX, .) or feeding a SUM."""
    producer = {int(t): op for op in ops for t in op["outputs"]}
    consumers: dict[int, list[str]] = {}
    for op in ops:
        for t in op["inputs"]:
            consumers.setdefault(int(t), []).append(op["op_name"])
    found = []
    for op in ops:
        if op["op_name"] != "EXP":
            continue
        sub = producer.get(int(op["inputs"][0]))
        from_max = sub is not None and sub["op_name"] == "SUB" and any(
            producer.get(int(t), {}).get("op_name") == "REDUCE_MAX" for t in sub["inputs"])
        to_sum = "SUM" in consumers.get(int(op["outputs"][0]), [])
        if from_max or to_sum:
            found.append(op["index"])
    return found


@pytest.fixture(scope="module")
def ghostnet(tmp_path_factory):
    (r,) = export("ghostnet-0.5x", target="tflite", precision="fp32", out=tmp_path_factory.mktemp("ghost"),
                  img_size=IMG, channels_last=True)
    return r


@pytest.fixture(scope="module")
def efv2_model():
    model = create(EFV2, calibrate=False, img_size=IMG)
    calibrate_bn(model, dataclasses.replace(get_info(EFV2), input_size=(3, IMG, IMG)))
    return model


@pytest.fixture(scope="module")
def efv2(tmp_path_factory, efv2_model):
    (r,) = export(efv2_model, target="tflite", precision="fp32", out=tmp_path_factory.mktemp("efv2"), img_size=IMG,
                  name=EFV2)
    return r


@pytest.fixture(scope="module")
def efv2_onnx(tmp_path_factory, efv2_model):
    (r,) = export(efv2_model, target="onnx", precision="fp32", out=tmp_path_factory.mktemp("efv2-onnx"),
                  img_size=IMG, name=EFV2)
    return r


def test_cnn_with_channels_last_has_no_transpose(ghostnet) -> None:
    assert ghostnet.passed
    assert ghostnet.manifest["inputs"][0]["shape"] == [1, IMG, IMG, 3]
    assert ghostnet.manifest["inputs"][0]["layout"] == "NHWC"
    ops = histogram(interpreter_ops(ghostnet.artifact))
    assert ops.get("CONV_2D", 0) > 0  # the graph is really the network
    assert ops.get("TRANSPOSE", 0) == 0, f"TRANSPOSE in a channels-last CNN graph: {ops}"


def test_ghostnet_fp32_drops_the_expansion_concats_and_int8_keeps_them(ghostnet, tmp_path) -> None:
    """fp32 converts the concatenation-free deploy form (one CONCATENATION per bottleneck, ghost2's), int8 the
    plain one (two per bottleneck): in an integer graph the halves' sum would be a requantizing ADD."""
    from edge.models.ghostnet import GhostBottleneck

    blocks = sum(isinstance(m, GhostBottleneck) for m in create("ghostnet-0.5x", calibrate=False).modules())
    (q,) = export("ghostnet-0.5x", target="tflite", precision="int8", out=tmp_path, img_size=IMG, channels_last=True,
                  strict=False)  # random weights at 64 px: the op counts are the point, not the int8 gate
    fp32, int8 = histogram(interpreter_ops(ghostnet.artifact)), histogram(interpreter_ops(q.artifact))
    assert fp32["CONCATENATION"] == blocks and int8["CONCATENATION"] == 2 * blocks
    assert ghostnet.manifest["numerics"]["deploy_form"]["arithmetic"] == "float"
    assert q.manifest["numerics"]["deploy_form"]["arithmetic"] == "integer"


def test_efficientformerv2_transposes_within_goal(efv2) -> None:
    assert efv2.passed
    ops = histogram(interpreter_ops(efv2.artifact))
    t = ops.get("TRANSPOSE", 0)
    assert t <= MAX_EFV2_TRANSPOSE, (f"{EFV2} TFLite has {t} TRANSPOSE, goal <= {MAX_EFV2_TRANSPOSE} "
                                     f"(RESHAPE {ops.get('RESHAPE', 0)}, {sum(ops.values())} ops)")
    attentions = 2 * get_info(EFV2).builder_kwargs["num_vit"] + 1
    assert t == attentions + 1, f"{t} TRANSPOSE: expected one per attention ({attentions}) plus the input's"
    # each attention's key transpose went into its BATCH_MATMUL, and the manifest says so
    rewrites = efv2.manifest["ops"]["graph_rewrites"]
    assert rewrites["transposes_folded"] == attentions
    assert sum(rewrites.values()) == attentions  # the int8-only rewrites find nothing in a float graph
    assert efv2.manifest["numerics"]["passed"]


def test_efficientformerv2_onnx_gets_the_nchw_form(efv2, efv2_onnx) -> None:
    import onnx

    assert efv2_onnx.passed
    graph = onnx.load(str(efv2_onnx.artifact)).graph
    ops = Counter(n.op_type for n in graph.node)
    attentions = 2 * get_info(EFV2).builder_kwargs["num_vit"] + 1
    assert ops["Softmax"] == attentions and ops["Conv"] > 0
    assert ops["Gelu"] > 0 and not ops["Erf"]  # the default opset (20) keeps GELU one node, not five
    assert ops["Transpose"] <= 3 * attentions, f"{ops['Transpose']} Transpose for {attentions} attentions"
    assert efv2_onnx.manifest["numerics"]["deploy_form"]["layout"] == "nchw"
    assert efv2.manifest["numerics"]["deploy_form"]["layout"] == "nhwc"


def test_efficientformerv2_softmax_is_native(efv2) -> None:
    ops = interpreter_ops(efv2.artifact)
    # S0: the last num_vit blocks of stages 3 and 4 are attention blocks, plus the attention downsampler into 4.
    attentions = 2 * get_info(EFV2).builder_kwargs["num_vit"] + 1
    decomposed = decomposed_softmaxes(ops)
    native = histogram(ops).get("SOFTMAX", 0)
    assert not decomposed, f"{len(decomposed)} of {attentions} softmaxes are decomposed (EXP ops {decomposed})"
    assert native == attentions


@pytest.mark.parametrize("which", ["ghostnet", "efv2"])
def test_manifest_histogram_matches_the_file(which, request) -> None:
    r = request.getfixturevalue(which)
    ops = histogram(interpreter_ops(r.artifact))
    m = r.manifest["ops"]
    assert m["histogram"] == ops
    assert m["total"] == sum(ops.values())
    assert m["layout"] == {"transpose": ops.get("TRANSPOSE", 0),
                           "reshape": sum(ops.get(k, 0) for k in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"))}


def test_deploy_forms_are_built_only_for_the_layouts_asked_for(efv2_model) -> None:
    """A TFLite-only export converts the NHWC form and never pays for the NCHW one (a copy and a fold)."""
    import torch

    from edge.export.loader import load

    loaded = load(efv2_model, name=EFV2)
    assert loaded._by_form == {}  # noqa: SLF001 - the cache is what this test is about
    nhwc = loaded.deploy("nhwc")
    assert list(loaded._by_form) == [("nhwc", "float")]  # noqa: SLF001
    assert loaded.deploy("nhwc") is nhwc and loaded.model is not nhwc and loaded.deploy("nchw") is loaded.model
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = loaded.reference(x)
        for form in (nhwc, loaded.model):
            torch.testing.assert_close(form(x), ref, rtol=1e-4, atol=1e-4)
    plain = load(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval(), name="plain")
    assert plain.deploy("nhwc") is plain.model  # no layout-specific modules: one form serves every layout


@pytest.mark.parametrize("copies", [2, 6])
def test_mobileformer_channel_copies_stay_whole_in_xnnpack(tmp_path, copies) -> None:
    """Mobile-Former's deploy form repeats a map's channels before each expanding depthwise conv (up to 6 copies).
    LiteRT's XNNPACK delegate takes a CONCATENATION of at most 5 inputs, and the converter folds a nested
    concatenation read once back into one wide op; ``_repeat_channels`` writes 6 copies as two concatenations that
    XNNPACK takes, so the delegate keeps the graph in one piece."""
    import litert_torch
    import torch

    from edge.devices.runner import _litert_coverage
    from edge.models.mobileformer import _repeat_channels
    from tests.export.test_tflite_graph import ops_of

    class Copies(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(8, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _repeat_channels(self.conv(x), copies)

    net = Copies().eval()
    x = torch.randn(1, 8, 6, 6)
    path = tmp_path / "copies.tflite"
    litert_torch.convert(net, (x,)).export(str(path))
    interp, ops = ops_of(path, delegate=True)
    assert _litert_coverage(interp)["fallback_ops"] == {} and ops.count("DELEGATE") == 1
    interp.set_tensor(interp.get_input_details()[0]["index"], x.numpy())
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    with torch.no_grad():
        want = net(x).numpy()
    assert got.shape == want.shape == (1, 8 * copies, 6, 6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
