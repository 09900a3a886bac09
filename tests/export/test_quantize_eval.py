"""--eval DIR: top-1 on an ImageFolder the test builds from the built-in photos (classes = photo names, labels
given by a class-index map), checked against a direct computation. The run through a real ONNX int8 artifact is in
test_quantize_onnx.py (it reuses that file's fp32 export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.data import builtin_images, load_rgb
from edge.errors import EdgeError
from edge.export.quantize.fidelity import evaluate_folder, read_image_folder
from tests.export.quantize_nets import calibrated_tiny, direct_top1, image_folder, make_ctx, predict, shared_for


@pytest.fixture(scope="module")
def net():
    return calibrated_tiny()


@pytest.fixture(scope="module")
def folder(net, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("imagefolder")
    return root, image_folder(net, root)


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
    fp32 = direct_top1(lambda p: predict(net, p), root, mapping)
    assert res["top1"]["fp32"] == pytest.approx(fp32) and fp32 >= 4 / 12  # every full photo is right
    calls = iter(range(1, 100))

    def shifted_direct(p: Path) -> int:
        return (predict(net, p) + next(calls) % 2) % 10

    expect = direct_top1(shifted_direct, root, mapping)
    assert res["top1"]["int8"] == pytest.approx(expect) and expect != fp32
