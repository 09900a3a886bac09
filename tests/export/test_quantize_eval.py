"""--eval DIR: top-1 of fp32 and of a quantized artifact on an ImageFolder the test builds from the built-in photos
(classes = photo names, labels given by a class-index map), checked against a direct computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.data import builtin_images, load_rgb, preprocess
from edge.errors import EdgeError
from edge.export.context import QuantOptions
from edge.export.quantize import quantize
from edge.export.quantize.fidelity import evaluate_folder, read_image_folder
from edge.export.targets import TARGETS
from tests.export.quantize_nets import IMG, MEAN, STD, calibrated_tiny, make_ctx, shared_for

CLASSES = ("astronaut", "chelsea", "coffee", "rocket")


@pytest.fixture(scope="module")
def net():
    return calibrated_tiny()


def _predict(net, path: Path) -> int:
    x = preprocess(load_rgb(path), IMG, MEAN, STD, 0.875, "bilinear")[None]
    with torch.no_grad():
        return int(net(x)[0].argmax())


@pytest.fixture(scope="module")
def folder(net, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """DIR/<photo name>/<3 views>.jpg plus class_index.json. Each class's index is the network's prediction on
    its full photo, so fp32 top-1 is neither 0 nor 1 by construction of the data, not of the code under test."""
    root = tmp_path_factory.mktemp("imagefolder")
    photos = {p.stem: p for p in builtin_images().paths}
    mapping = {}
    for c in CLASSES:
        im = load_rgb(photos[c])
        (root / c).mkdir()
        w, h = im.size
        im.save(root / c / "full.jpg")
        im.crop((0, 0, w // 2, h // 2)).save(root / c / "corner.jpg")
        im.crop((w // 3, h // 3, w, h)).transpose(0).save(root / c / "flip.png")
        mapping[c] = _predict(net, root / c / "full.jpg")
    (root / "chelsea" / "corrupt.jpg").write_bytes(b"\xff\xd8 broken")
    (root / "class_index.json").write_text(json.dumps(mapping))
    return root, mapping


def _direct_top1(predict, root: Path, mapping: dict[str, int]) -> float:
    hits = n = 0
    for c in CLASSES:
        for p in sorted((root / c).iterdir()):
            if load_rgb(p) is None:
                continue
            hits += int(predict(p) == mapping[c])
            n += 1
    return hits / n


def test_read_image_folder_with_and_without_map(folder, tmp_path) -> None:
    root, mapping = folder
    samples, m, source = read_image_folder(root)
    assert source == "class_index.json" and m == mapping and len(samples) == 13
    plain = tmp_path / "plain"
    for c in ("b", "a"):
        (plain / c).mkdir(parents=True)
        load_rgb(builtin_images().paths[0]).save(plain / c / "x.png")
    samples, m, source = read_image_folder(plain)
    assert m == {"a": 0, "b": 1} and source == "sorted folder names"
    keras = tmp_path / "keras"
    (keras / "n01440764").mkdir(parents=True)
    load_rgb(builtin_images().paths[0]).save(keras / "n01440764" / "x.png")
    (keras / "imagenet_class_index.json").write_text(json.dumps({"0": ["n01440764", "tench"], "1": ["n0", "goldfish"]}))
    assert read_image_folder(keras)[1] == {"n01440764": 0}


def test_eval_errors(folder, tmp_path) -> None:
    root, mapping = folder
    with pytest.raises(EdgeError, match="has no class sub-folders"):
        read_image_folder(tmp_path)
    with pytest.raises(EdgeError, match="is not a folder"):
        read_image_folder(tmp_path / "nope")
    bad = tmp_path / "bad"
    (bad / "cat").mkdir(parents=True)
    load_rgb(builtin_images().paths[0]).save(bad / "cat" / "x.png")
    (bad / "class_index.json").write_text(json.dumps({"dog": 1}))
    with pytest.raises(EdgeError, match="no entry for folder"):
        read_image_folder(bad)
    (bad / "class_index.json").write_text("{not json")
    with pytest.raises(EdgeError, match="not valid JSON"):
        read_image_folder(bad)


def test_eval_top1_matches_direct_computation(net, folder, tmp_path) -> None:
    """evaluate_folder against a hand count, with a stand-in "artifact" whose answers differ from fp32's."""
    root, mapping = folder
    shared = shared_for(net)
    ctx = make_ctx(net, "onnx", "int8", tmp_path / "w", shared)

    def shifted(x: np.ndarray) -> list[np.ndarray]:  # predicts (fp32 class + 1) on every second call
        shifted.calls += 1
        y = net(torch.from_numpy(x)).detach().numpy()
        return [np.roll(y, shifted.calls % 2, axis=1)]

    shifted.calls = 0
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        res = evaluate_folder(root, ctx, {"int8": shifted})
    assert res["images"] == 12 and res["skipped_unreadable"] == 1 and res["classes"] == 4
    fp32 = _direct_top1(lambda p: _predict(net, p), root, mapping)
    assert res["top1"]["fp32"] == pytest.approx(fp32) and fp32 >= 4 / 12  # every full photo is right
    calls = iter(range(1, 100))

    def shifted_direct(p: Path) -> int:
        return (_predict(net, p) + next(calls) % 2) % 10

    expect = _direct_top1(shifted_direct, root, mapping)
    assert res["top1"]["int8"] == pytest.approx(expect) and expect != fp32


def test_eval_through_onnx_int8_quantization(net, folder, tmp_path) -> None:
    """The --eval numbers in the manifest equal top-1 computed here with ONNX Runtime on the shipped artifact."""
    import onnxruntime as ort

    root, mapping = folder
    shared = shared_for(net)
    fp32 = TARGETS["onnx"].convert(make_ctx(net, "onnx", "fp32", tmp_path / "fp32", shared))
    ctx = make_ctx(net, "onnx", "int8", tmp_path / "int8", shared, QuantOptions(eval_dir=root, calib_samples=8),
                   float_artifact=fp32)
    with pytest.warns(UserWarning, match="skipped 1"):
        path = quantize(ctx)
    ev = ctx.extras["quantization"]["eval"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def onnx_predict(p: Path) -> int:
        x = preprocess(load_rgb(p), IMG, MEAN, STD, 0.875, "bilinear")[None].numpy()
        return int(np.argmax(sess.run(None, {"input": x})[0]))

    assert ev["top1"]["int8"] == pytest.approx(_direct_top1(onnx_predict, root, mapping))
    assert ev["top1"]["fp32"] == pytest.approx(_direct_top1(lambda p: _predict(net, p), root, mapping))
    assert ev["class_index"] == "class_index.json" and ev["images"] == 12
