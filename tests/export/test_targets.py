"""Each target adapter end to end on small networks: real converters, real runtimes (ONNX Runtime, the LiteRT
interpreter, edge's MIL interpreter for Core ML), manifests checked against the files they describe.

Conversions are the expensive part, so each export is made once per module (fixtures) at 32x32 inputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edge._io import sha256_path
from edge.export import export
from edge.export.numerics import THRESHOLDS, compare, verification_inputs
from edge.export.targets import TARGETS, ConversionError
from tests.export.nets import Rejected, tiny

IMG = 32
TARGET_ORDER = ("onnx", "tflite", "coreml")
RUNTIME = {"onnx": "onnxruntime", "tflite": "litert", "coreml": "mil-interpreter"}
MANIFEST_KEYS = {
    "schema", "model", "family", "variant_options", "checkpoint", "activations", "target", "precision", "artifact",
    "inputs", "outputs", "preprocess", "img_size", "channels_last", "tools", "ops", "numerics", "quantization",
    "status", "stage_seconds", "created",
}


def _by_target(results):
    return {r.target: r for r in results}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32")
    return _by_target(export(tiny(attention=True), target="all", precision="fp32", out=out, img_size=IMG))


@pytest.fixture(scope="module")
def fp16(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16")
    return _by_target(export(tiny(attention=True), target="all", precision="fp16", out=out, img_size=IMG))


def _reference(n: int = 8) -> tuple[torch.Tensor, np.ndarray]:
    x = verification_inputs(IMG, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), n=n)
    with torch.no_grad():
        return x, tiny(attention=True)(x).numpy()


# ------------------------------------------------------------------------------------------------- fp32


@pytest.mark.parametrize("target", TARGET_ORDER)
def test_fp32_artifact_and_manifest(fp32, target: str) -> None:
    r = fp32[target]
    m = r.manifest
    assert r.passed and m["status"] == "ok"
    assert MANIFEST_KEYS <= set(m)
    assert m["schema"] == "edge.manifest/1" and m["target"] == target and m["precision"] == "fp32"
    assert r.path.name == f"{target}-fp32" and r.path.parent.name == "tinynet"
    assert r.artifact.name == TARGETS[target].artifact_name
    on_disk = json.loads((r.path / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    assert m["artifact"]["sha256"] == sha256_path(r.artifact)
    assert m["artifact"]["size_bytes"] > 10_000
    assert m["inputs"][0]["shape"][-2:] == [IMG, IMG] and m["inputs"][0]["layout"] == "NCHW"
    assert m["outputs"][0]["shape"] == [1, 10] and m["outputs"][0]["layout"] == "NC"
    assert m["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    num = m["numerics"]
    assert num["runtime"] == RUNTIME[target]
    assert num["outputs"]["logits"]["sqnr_db"] >= THRESHOLDS["fp32"].min_sqnr_db
    assert num["outputs"]["logits"]["top1_agree"] == 1.0 and num["failures"] == []
    assert num["thresholds"]["why"]
    ops = m["ops"]
    assert ops["total"] == sum(ops["histogram"].values()) > 10
    t = TARGETS[target]
    assert ops["layout"]["transpose"] == sum(ops["histogram"].get(k, 0) for k in t.transpose_ops)
    assert ops["layout"]["reshape"] == sum(ops["histogram"].get(k, 0) for k in t.reshape_ops)
    assert {"convert", "verify", "write", "reference"} <= set(m["stage_seconds"])
    assert m["tools"]["torch"].startswith(torch.__version__.split("+")[0])
    converter = {"onnx": "onnxruntime", "tflite": "litert_torch", "coreml": "coremltools"}[target]
    assert m["tools"][converter][0].isdigit()


def test_onnx_is_one_self_contained_file(fp32) -> None:
    import onnx
    from onnx.external_data_helper import uses_external_data

    r = fp32["onnx"]
    assert sorted(p.name for p in r.path.iterdir()) == ["manifest.json", "model.onnx"]
    model = onnx.load(str(r.artifact))
    assert not any(uses_external_data(t) for t in model.graph.initializer)
    assert {o.domain: o.version for o in model.opset_import}[""] == 20 == r.manifest["opset"]
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["edge.model"] == "tinynet" and json.loads(props["edge.preprocess"])["std"][0] == 0.229


def test_artifacts_agree_with_pytorch_outside_the_pipeline(fp32) -> None:
    """Run each artifact with the runtime's own API, not through edge's runners."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    from edge.export import coreml_mil

    x, ref = _reference(4)
    sess = ort.InferenceSession(str(fp32["onnx"].artifact), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": x[i:i + 1].numpy()})[0] for i in range(4)])
    assert compare(ref, got)["sqnr_db"] > 80

    it = Interpreter(model_path=str(fp32["tflite"].artifact))
    it.allocate_tensors()
    rows = []
    for i in range(4):
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1].numpy())
        it.invoke()
        rows.append(it.get_tensor(it.get_output_details()[0]["index"]))
    assert compare(ref, np.concatenate(rows))["sqnr_db"] > 80

    rows = [coreml_mil.run(fp32["coreml"].artifact, {"input": x[i:i + 1].numpy()})["logits"] for i in range(4)]
    assert compare(ref, np.concatenate(rows))["sqnr_db"] > 80


def test_coreml_metadata(fp32) -> None:
    import coremltools as ct

    spec = ct.models.MLModel(str(fp32["coreml"].artifact), skip_model_load=True).get_spec()
    d = spec.description
    assert "tinynet" in d.metadata.shortDescription and d.metadata.author.startswith("edge")
    assert "normalised" in d.input[0].shortDescription and "logits over 10 classes" in d.output[0].shortDescription
    assert d.metadata.userDefined["edge.precision"] == "fp32"
    assert d.input[0].type.multiArrayType.dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert spec.specificationVersion >= 7  # iOS 16 ML Program


# ------------------------------------------------------------------------------------------------- fp16


@pytest.mark.parametrize("target", TARGET_ORDER)
def test_fp16_artifacts_pass_and_are_really_fp16(fp16, fp32, target: str) -> None:
    r = fp16[target]
    m = r.manifest
    assert r.passed and m["precision"] == "fp16" and r.path.name == f"{target}-fp16"
    sq = m["numerics"]["outputs"]["logits"]["sqnr_db"]
    assert THRESHOLDS["fp16"].min_sqnr_db <= sq < 110  # fp16 rounding is visible, so this is not an fp32 file
    assert m["inputs"][0]["dtype"] == "float32" and m["outputs"][0]["dtype"] == "float32"  # float32 I/O kept
    assert m["artifact"]["size_bytes"] < 0.8 * fp32[target].manifest["artifact"]["size_bytes"]
    hist = m["ops"]["histogram"]
    if target == "tflite":
        assert hist.get("DEQUANTIZE", 0) >= 4  # float16 weights dequantized at load time
    elif target == "onnx":
        import onnx

        model = onnx.load(str(r.artifact))
        n16 = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
        assert n16 >= len(model.graph.initializer) / 2
        onnx.checker.check_model(model)  # valid ONNX: float16 casts in topological order
    else:
        assert hist.get("cast", 0) == 2  # float32 in -> fp16 program -> float32 out


# --------------------------------------------------------------------------------------- layouts, images


@pytest.fixture(scope="module")
def channels_last(tmp_path_factory):
    out = tmp_path_factory.mktemp("cl")
    return _by_target(export(tiny(attention=False), target="tflite,onnx", out=out, img_size=IMG, channels_last=True))


def test_channels_last_conv_net_has_no_transpose_in_tflite(channels_last) -> None:
    m = channels_last["tflite"].manifest
    assert m["channels_last"] is True
    assert m["inputs"][0]["shape"] == [1, IMG, IMG, 3] and m["inputs"][0]["layout"] == "NHWC"
    assert m["ops"]["layout"]["transpose"] == 0 and "TRANSPOSE" not in m["ops"]["histogram"]
    assert m["numerics"]["passed"]  # the check fed NHWC images


def test_channels_last_onnx_takes_nhwc(channels_last) -> None:
    m = channels_last["onnx"].manifest
    assert m["inputs"][0]["shape"] == [1, IMG, IMG, 3] and m["inputs"][0]["layout"] == "NHWC"
    assert m["numerics"]["passed"]


def test_coreml_image_input_folds_per_channel_normalisation(tmp_path) -> None:
    import coremltools as ct

    labels = [f"class {i}" for i in range(10)]
    (r,) = export(tiny(attention=False), target="coreml", out=tmp_path, img_size=IMG, image_input=True,
                  class_labels=labels)
    m = r.manifest
    assert r.passed, m["numerics"]
    img = m["image_input"]
    assert img["scale"] == pytest.approx(1 / (255 * np.mean([0.229, 0.224, 0.225])))
    assert img["per_channel_factor"] is not None  # ImageNet stds differ per channel
    assert m["inputs"][0]["dtype"] == "image:RGB" and m["inputs"][0]["layout"] == "image"
    spec = ct.models.MLModel(str(r.artifact), skip_model_load=True).get_spec()
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    assert json.loads(spec.description.metadata.userDefined["edge.class_labels"]) == labels
    assert m["class_labels"] == labels


# --------------------------------------------------------------------------------------- converter errors


@pytest.mark.parametrize("target", TARGET_ORDER)
def test_rejected_operator_is_named_with_its_module(tmp_path, target: str) -> None:
    with pytest.raises(ConversionError) as ei:
        export(Rejected(), target=target, out=tmp_path, img_size=8)
    e = ei.value
    assert e.target == target and e.module_path == "block.1"
    text = str(e)
    assert "erf" in e.op.lower() and target in text and "`block.1` (Erfinv)" in text
    assert "polynomial" in (e.hint or "")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


# ----------------------------------------------------------------------------------------- zoo subset (CI)


def _one_per_family() -> list[str]:
    from edge.models import get_info, list_models

    seen: dict[str, str] = {}
    for name in list_models():
        seen.setdefault(get_info(name).family, name)
    return list(seen.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", _one_per_family())
def test_zoo_variant_converts_to_every_target(tmp_path, name: str) -> None:
    """CI's representative subset: one variant per family, all three targets, fp32, default input size."""
    results = export(name, target="all", out=tmp_path, strict=False)
    assert [r.target for r in results] == list(TARGET_ORDER)
    for r in results:
        assert r.passed, (r.target, r.manifest["numerics"])


def test_fp16_onnx_repair_of_duplicate_casts() -> None:
    """ORT's float16 tool can emit one Cast twice (EfficientFormerV2); ORT then refuses the model."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edge.export.targets.onnx import _drop_duplicate_nodes, _toposort

    cast = helper.make_node("Cast", ["h"], ["h32"], name="h_cast", to=TensorProto.FLOAT)
    nodes = [
        helper.make_node("Relu", ["h32"], ["a"], name="relu"),
        helper.make_node("Sigmoid", ["h32"], ["b"], name="sig"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
        cast, cast,  # appended after their users, twice
        helper.make_node("Cast", ["x"], ["h"], name="x_cast", to=TensorProto.FLOAT16),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    with pytest.raises(Exception, match="same node name"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    fixed = _toposort(_drop_duplicate_nodes(model))
    onnx.checker.check_model(fixed)
    sess = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([-1.0, 2.0], np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], np.maximum(x, 0) + 1 / (1 + np.exp(-x)), rtol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ghostnet-1.0x", "mobilenetv3-large-1.0"])
def test_conv_only_zoo_networks_have_no_transpose_with_channels_last(tmp_path, name: str) -> None:
    """Issue 6's goal for the CNNs of its table: NHWC I/O and not one TRANSPOSE inside the TFLite graph."""
    (r,) = export(name, target="tflite", out=tmp_path, channels_last=True)
    m = r.manifest
    assert r.passed, m["numerics"]
    assert m["inputs"][0]["layout"] == "NHWC"
    assert m["ops"]["layout"]["transpose"] == 0, m["ops"]["histogram"]


def test_coreml_validates_once_and_still_catches_a_broken_program() -> None:
    """The per-pass check is off only inside the conversion, and the check it hands back still fails a program whose
    ops and vars disagree (coremltools' own invariant)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil.block import InvalidBlockStateError
    from coremltools.converters.mil.mil.program import Program

    from edge.export.targets.coreml import validated_once

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))])
    def prog(x):
        return mb.relu(x=mb.add(x=x, y=1.0))

    real = Program.validate
    with pytest.raises(RuntimeError, match="inside"), validated_once() as validate:
        assert Program.validate is not real
        validate(prog)  # a sound program passes
        relu = prog.functions["main"].find_ops(op_type="relu")[0]
        relu.x.child_ops.append(relu)  # the add's output now claims two uses by relu; relu reads it once
        prog.validate()  # the per-pass check is off
        with pytest.raises(InvalidBlockStateError):
            validate(prog)
        raise RuntimeError("inside")
    assert Program.validate is real  # restored, exception or not


def test_tflite_conversion_with_lazy_fx_code_is_byte_identical() -> None:
    """Deferring FX code generation (edge.export.targets.tflite.lazy_fx_code) must not change the converted file."""
    import litert_torch

    from edge.export.targets.tflite import lazy_fx_code

    model = tiny(attention=True).eval()
    x = (torch.randn(1, 3, IMG, IMG),)
    eager = litert_torch.convert(model, x).model_content()
    with lazy_fx_code():
        from torch.fx._lazy_graph_module import _get_graph_module_cls

        assert _get_graph_module_cls().__name__ == "_LazyGraphModule"  # the pinned torch has them: really lazy
        lazy = litert_torch.convert(model, x).model_content()
    assert len(eager) > 1000 and lazy == eager
