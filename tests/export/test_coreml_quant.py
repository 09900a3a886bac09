"""Core ML quantization on Linux: int8 weights, and W8A8 calibrated with the reference MIL interpreter.

The op counts are pinned: the W8A8 path drives private coremltools passes, so a coremltools upgrade that
changes what they write must fail here, loudly, rather than change the artifacts silently.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")

from edge.data import image_batch  # noqa: E402
from edge.errors import EdgeError  # noqa: E402
from edge.export import coreml_mil as cm  # noqa: E402
from edge.export.numerics import compare  # noqa: E402
from edge.export.quantize import coreml as cq  # noqa: E402
from tests.export.test_coreml_mil import _small_net  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# What coremltools 9.0's passes write for the small test net (conv/BN/hardswish, depthwise+relu6, split/concat,
# attention, upsample, max/avg pool, linear head). Only the qkv weight (3072 elements) is above the 2048-element
# weight threshold, so one constexpr.
W8A8_OPS_FP32 = {"constexpr_affine_dequantize": 1, "dequantize": 20, "quantize": 19}
W8A8_OPS_FP16 = {"constexpr_affine_dequantize": 1, "dequantize": 19, "quantize": 17}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    net = _small_net()
    example = torch.randn(1, 3, 32, 32)
    traced = torch.jit.trace(net, example)
    root = tmp_path_factory.mktemp("coreml-quant")
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for prec, cp in (("fp32", ct.precision.FLOAT32), ("fp16", ct.precision.FLOAT16)):
            ml = ct.convert(traced, inputs=[ct.TensorType(name="input", shape=example.shape, dtype=np.float32)],
                            convert_to="mlprogram", compute_precision=cp, minimum_deployment_target=ct.target.iOS16)
            paths[prec] = root / f"{prec}.mlpackage"
            ml.save(str(paths[prec]))
    calib, _ = image_batch(6, 32, MEAN, STD, seed=1)
    verify, _ = image_batch(8, 32, MEAN, STD, seed=0)
    with torch.no_grad():
        ref = net(verify).numpy()
    samples = [calib[i:i + 1].numpy() for i in range(len(calib))]
    stats = {p: cq.activation_stats(paths[p], samples[:4]) for p in paths}
    return types.SimpleNamespace(net=net, paths=paths, samples=samples, stats=stats, verify=verify.numpy(), ref=ref,
                                 root=root)


def _outputs(path, x: np.ndarray) -> np.ndarray:
    program = cm.load_program(path)
    name = program.outputs[0].name
    return np.concatenate([cm.run(program, {"input": x[i:i + 1]})[name] for i in range(len(x))]).astype(np.float32)


@pytest.fixture(scope="module")
def w8a8(setup):
    out = {}
    for prec in ("fp32", "fp16"):
        model, counts = cq.quantize_w8a8(cq._load_model(setup.paths[prec]), setup.stats[prec].ranges)
        path = setup.root / f"w8a8-{prec}.mlpackage"
        cq._save(model, path)
        out[prec] = (path, counts)
    return out


@pytest.mark.parametrize("prec", ["fp32", "fp16"])
def test_w8a8_op_counts_are_pinned(w8a8, prec):
    path, counts = w8a8[prec]
    assert counts == (W8A8_OPS_FP32 if prec == "fp32" else W8A8_OPS_FP16)
    assert cq.op_counts(path) == counts
    hist = cm.op_histogram(path)
    assert hist["conv"] == 3 and hist["linear"] == 3  # nothing else was rewritten away


@pytest.mark.parametrize("prec", ["fp32", "fp16"])
def test_w8a8_matches_pytorch_within_int8_error(setup, w8a8, prec):
    path, _ = w8a8[prec]
    got = _outputs(path, setup.verify)
    m = compare(setup.ref, got)
    assert 25.0 <= m["sqnr_db"] < 70.0, m  # quantized (not exact), and far above the 20 dB goal
    assert m["top1_agree"] >= 0.875, m
    float_err = compare(setup.ref, _outputs(setup.paths[prec], setup.verify))["sqnr_db"]
    assert float_err > m["sqnr_db"] + 10, "the int8 activations must be what costs the SQNR"


def test_every_conv_and_linear_input_is_quantized(w8a8):
    program = cm.load_program(w8a8["fp32"][0])
    producer = {o.name: s.op_type for s in program.steps for o in s.outputs}
    for step in program.steps:
        if step.op_type in ("conv", "linear", "avg_pool", "max_pool"):
            assert producer.get(step.args["x"]) == "dequantize", f"{step.op_type} {step.name} reads a float tensor"


def test_coremltools_suffix_pass_still_needs_the_fp32_range_fix(setup):
    """coremltools 9.0 fails on fp32 programs without the fix; when an upgrade fixes it, drop the workaround."""
    from coremltools import _SPECIFICATION_VERSION_IOS_17
    from coremltools.converters.mil.frontend.milproto import load as milproto_load
    from coremltools.converters.mil.mil.passes.graph_pass import PassOption
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    from coremltools.models import utils as model_utils

    passes = [PASS_REGISTRY["compression::insert_prefix_quantize_dequantize_pair"],
              PASS_REGISTRY["compression::insert_suffix_quantize_dequantize_pair"]]
    for p in passes:
        p.set_options([PassOption("config", cq.activation_config())])
        p.set_options([PassOption("activation_stats", setup.stats["fp32"].ranges)])
    with pytest.raises(Exception, match="fp16"), cq._quiet():
        model_utils._apply_graph_pass(cq._load_model(setup.paths["fp32"]), passes,
                                      spec_version=_SPECIFICATION_VERSION_IOS_17,
                                      pymil_load_func=milproto_load.load, skip_model_load=True)


def test_ranges_cover_all_samples_unlike_coremltools(setup):
    from collections import defaultdict

    from coremltools.optimize.coreml.experimental._post_training_quantization import _update_tensor_range

    a, b = np.array([-5.0, 1.0]), np.array([-1.0, 2.0])
    theirs: dict = defaultdict(dict)
    _update_tensor_range("t", a, theirs)
    _update_tensor_range("t", b, theirs)
    assert theirs["t"] == {"rmin": -1.0, "rmax": 2.0}, "coremltools 9.0 keeps the last sample only (documented)"

    one = [cq.activation_stats(setup.paths["fp32"], [s]).ranges for s in setup.samples[:2]]
    both = cq.activation_stats(setup.paths["fp32"], setup.samples[:2]).ranges
    assert set(both) == set(one[0])
    for name, r in both.items():
        assert r["rmin"] == min(o[name]["rmin"] for o in one)
        assert r["rmax"] == max(o[name]["rmax"] for o in one)
    assert any(one[0][n] != one[1][n] for n in both), "the two images must differ somewhere"


def test_concat_tensors_share_one_range(setup):
    program = cm.load_program(setup.paths["fp32"])
    groups = cq.concat_groups(program)
    assert len(groups) == setup.stats["fp32"].concat_groups == 2
    ranges = setup.stats["fp32"].ranges
    for group in groups:
        assert len({(ranges[n]["rmin"], ranges[n]["rmax"]) for n in group}) == 1, group


def test_stats_cover_inputs_and_every_float_intermediate(setup):
    program = cm.load_program(setup.paths["fp32"])
    ranges = setup.stats["fp32"].ranges
    assert "input" in ranges
    float_vars = {o.name for s in program.steps if not s.constant for o in s.outputs if o.dtype == "fp32"}
    assert float_vars <= set(ranges)
    lo, hi = min(float(s.min()) for s in setup.samples[:4]), max(float(s.max()) for s in setup.samples[:4])
    assert ranges["input"] == {"rmin": pytest.approx(lo), "rmax": pytest.approx(hi)}


def test_percentile_ranges_are_inside_minmax(setup):
    pct = cq.activation_stats(setup.paths["fp32"], setup.samples[:2], method="percentile").ranges
    mm = cq.activation_stats(setup.paths["fp32"], setup.samples[:2], method="minmax").ranges
    narrower = 0
    for name, r in pct.items():
        assert mm[name]["rmin"] <= r["rmin"] + 1e-6 and r["rmax"] <= mm[name]["rmax"] + 1e-6
        narrower += r["rmax"] < mm[name]["rmax"] - 1e-6
    assert narrower > 0


@pytest.fixture(scope="module")
def int8w(setup):
    model, counts = cq.quantize_weights(cq._load_model(setup.paths["fp32"]))
    path = setup.root / "int8w.mlpackage"
    cq._save(model, path)
    return path, counts


def test_int8_weights_quantize_every_weight_above_the_threshold(setup, int8w):
    program = cm.load_program(setup.paths["fp32"])
    big = sum(1 for s in program.steps if s.op_type in ("conv", "linear")
              for key in ("weight",) if program.consts[s.args[key]].numel() > cq.WEIGHT_THRESHOLD)
    path, counts = int8w
    assert counts == {"constexpr_affine_dequantize": big} and big == 1
    m = compare(setup.ref, _outputs(path, setup.verify))
    assert 30.0 <= m["sqnr_db"] < 90.0 and m["top1_agree"] == 1.0, m


def test_int8_weights_equal_pytorch_with_the_same_weight_rounding(setup, int8w):
    """An independent simulation: round the same weights per output channel to int8 in PyTorch ([-127, 127],
    scale max|w|/127, as coremltools' linear_symmetric); the Core ML program must compute the same function."""
    import copy

    path, _ = int8w
    net = copy.deepcopy(setup.net)
    for mod in net.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and mod.weight.numel() > cq.WEIGHT_THRESHOLD:
            w = mod.weight.data
            s = (w.abs().reshape(w.shape[0], -1).amax(1) / 127).reshape(-1, *[1] * (w.dim() - 1))
            mod.weight.data = torch.round(w / s).clamp(-127, 127) * s
    with torch.no_grad():
        sim = net(torch.from_numpy(setup.verify)).numpy()
    got = _outputs(path, setup.verify)
    assert compare(sim, got)["sqnr_db"] > 90, "same rounding, same function (float32 noise only)"
    assert compare(setup.ref, got)["sqnr_db"] < 80, "and it differs from the float network"


def test_keep_float_leaves_that_op_unquantized(setup):
    program = cm.load_program(setup.paths["fp32"])
    graph = cq.MilGraph(program, MEAN, STD)
    conv = next(s for s in program.steps if s.op_type == "conv")
    assert graph.resolve([conv.outputs[0].name]) == [conv.name]
    with pytest.raises(EdgeError, match="--keep-float 'nope'"):
        graph.resolve(["nope"])
    model, counts = cq.quantize_w8a8(cq._load_model(setup.paths["fp32"]), setup.stats["fp32"].ranges,
                                     keep_float=(conv.name,))
    assert counts["quantize"] < W8A8_OPS_FP32["quantize"]
    path = setup.root / "keep.mlpackage"
    cq._save(model, path)
    q = cm.load_program(path)
    producer = {o.name: s.op_type for s in q.steps for o in s.outputs}
    kept = next(s for s in q.steps if s.name == conv.name)
    assert producer.get(kept.args["x"]) != "dequantize"


def test_unsupported_precision_is_refused():
    ctx = types.SimpleNamespace(precision="w8a16", float_artifact=None)
    with pytest.raises(EdgeError, match="w8a16"):
        cq.quantize(ctx)


def test_pipeline_int8_records_calibration_and_fidelity(tmp_path):
    """The export pipeline's --int8 for Core ML: quantize(ctx) end to end, gated by the interpreter."""
    from edge.export import QuantOptions, export

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = export(_small_net(), target="coreml", precision="int8", out=tmp_path, img_size=32, name="smallnet",
                     quant=QuantOptions(calib_samples=4), strict=False)
    m = res[0].manifest
    assert m["status"] == "ok" and m["numerics"]["runtime"] == "mil-interpreter"
    q = m["quantization"]
    assert q["mode"] == "int8" and q["calibration"]["samples"] == 4 and q["calibration"]["method"] == "minmax"
    assert "all calibration samples" in q["calibration"]["range"]
    assert q["ops"]["quantize"] > 10 and q["ops"]["dequantize"] >= q["ops"]["quantize"]
    fid = q["fidelity"]["outputs"]["logits"]
    assert fid["sqnr_db"] >= 20.0 and fid["top1_agree"] >= 0.9
    assert q["fidelity"]["layers"]["most_sensitive"], "the per-layer study ranks the quantized ops"
    assert m["ops"]["histogram"]["quantize"] == q["ops"]["quantize"]
