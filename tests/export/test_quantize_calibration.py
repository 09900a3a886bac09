"""The calibration set: user folders (recursive, corrupt files skipped and counted), the built-in photos with their
licences (never noise, never the verification images), and the range estimators behind --calib-method."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.data import builtin_images, load_rgb, preprocess
from edge.errors import EdgeError
from edge.export.context import QuantOptions
from edge.export.numerics import verification_inputs
from edge.export.quantize.calibration import (
    RangeCollector,
    calibration_set,
    entropy_threshold,
    percentile_threshold,
    warn_unused_calibration,
)
from tests.export.quantize_nets import IMG, MEAN, STD, calibrated_tiny, make_ctx, shared_for


@pytest.fixture(scope="module")
def net():
    return calibrated_tiny()


@pytest.fixture(scope="module")
def shared(net):
    return shared_for(net)


def _ctx(net, shared, tmp_path: Path, precision: str = "int8", **quant):
    return make_ctx(net, "onnx", precision, tmp_path / "work", shared, QuantOptions(**quant))


@pytest.fixture
def photo_tree(tmp_path: Path) -> Path:
    """A nested folder of real photos (JPEG and PNG), one corrupt JPEG and one non-image file."""
    root = tmp_path / "calib"
    photos = builtin_images().paths[:5]
    for i, p in enumerate(photos):
        sub = root / ("a" if i % 2 else "b") / "deeper"
        sub.mkdir(parents=True, exist_ok=True)
        load_rgb(p).save(sub / f"img{i}.{'jpg' if i % 2 else 'png'}")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_is_read_recursively_and_preprocessed_like_the_model(net, shared, tmp_path, photo_tree) -> None:
    ctx = _ctx(net, shared, tmp_path, calib_dir=photo_tree, calib_samples=32)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable or corrupt image\(s\).*broken\.jpg"):
        cs = calibration_set(ctx)
    assert cs.batch.shape == (5, 3, IMG, IMG)  # 5 readable photos, fewer than 32 asked for
    rec = cs.record()
    assert rec["skipped_unreadable"] == 1 and rec["files"] == 6 and rec["samples"] == 5
    assert rec["preprocess"]["mean"] == list(MEAN) and rec["preprocess"]["crop_pct"] == 0.875
    first = sorted(p for p in photo_tree.rglob("*") if p.suffix in (".jpg", ".png") and p.name != "broken.jpg")[0]
    expect = preprocess(load_rgb(first), IMG, MEAN, STD, 0.875, "bilinear")
    assert torch.equal(cs.batch[0], expect)
    assert any("skipped 1" in w for w in ctx.extras["quant_warnings"])  # kept for the manifest too


def test_calib_samples_limits_the_count(net, shared, tmp_path, photo_tree) -> None:
    ctx = _ctx(net, shared, tmp_path, calib_dir=photo_tree, calib_samples=2)
    with pytest.warns(UserWarning, match="skipped 1") as rec:  # a/broken.jpg sorts first
        cs = calibration_set(ctx)
    assert cs.batch.shape[0] == 2
    assert not any("fewer than" in str(w.message) for w in rec)  # enough images for 2 samples


def test_empty_folder_is_a_clear_error(net, shared, tmp_path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.md").write_text("no images here")
    with pytest.raises(EdgeError, match="holds no images"):
        calibration_set(_ctx(net, shared, tmp_path, calib_dir=empty))
    with pytest.raises(EdgeError, match="does not exist"):
        calibration_set(_ctx(net, shared, tmp_path, calib_dir=tmp_path / "missing"))


def test_only_corrupt_images_is_a_clear_error(net, shared, tmp_path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"x{i}.png").write_bytes(b"\x89PNG truncated")
    with pytest.warns(UserWarning, match="skipped 3"), pytest.raises(EdgeError, match="no readable images"):
        calibration_set(_ctx(net, shared, tmp_path, calib_dir=bad))


def test_builtin_set_is_real_photos_with_licences_and_not_the_verification_images(net, shared, tmp_path) -> None:
    cs = calibration_set(_ctx(net, shared, tmp_path, calib_samples=24))
    assert cs.batch.shape == (24, 3, IMG, IMG)
    rec = cs.record()
    assert "scikit-image" in rec["source"] and rec["files"] >= 4
    assert any("public domain" in lic for lic in rec["licences"]) and len(rec["licences"]) == rec["files"]
    # natural images: neighbouring pixels are strongly correlated (noise would give ~0)
    a = cs.batch[:, :, :, :-1].reshape(-1).numpy()
    b = cs.batch[:, :, :, 1:].reshape(-1).numpy()
    assert np.corrcoef(a, b)[0, 1] > 0.7
    # calibration never sees the gate's verification images
    ver = verification_inputs(IMG, MEAN, STD, n=16)
    d = torch.cdist(cs.batch.flatten(1), ver.flatten(1))
    assert float(d.min()) > 1.0


def test_bad_options_are_clear_errors(net, shared, tmp_path) -> None:
    with pytest.raises(EdgeError, match="--calib-samples must be at least 1"):
        calibration_set(_ctx(net, shared, tmp_path, calib_samples=0))
    with pytest.raises(EdgeError, match="unknown calibration method 'kl'"):
        calibration_set(_ctx(net, shared, tmp_path, calib_method="kl"))


def test_calib_with_weight_only_warns(net, shared, tmp_path, photo_tree) -> None:
    ctx = _ctx(net, shared, tmp_path, precision="int8w", calib_dir=photo_tree)
    with pytest.warns(UserWarning, match="ignored for int8w"):
        warn_unused_calibration(ctx)
    quiet = _ctx(net, shared, tmp_path, precision="int8w")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unused_calibration(quiet)


def test_range_estimators() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 200_000).astype(np.float32)
    x[:5] = [40.0, -35.0, 30.0, 25.0, -20.0]  # rare outliers stretch min/max
    mm = RangeCollector("minmax")
    pc = RangeCollector("percentile")
    en = RangeCollector("entropy")
    for rc in (mm, pc, en):
        for chunk in np.split(x, 4):
            rc.add_minmax("t", chunk)
        for chunk in np.split(x, 4):
            rc.add_hist("t", chunk)
    assert mm.range("t") == (-35.0, 40.0)
    lo, hi = pc.range("t")
    assert 3.5 < hi < 6.0 and -6.0 < lo < -3.5  # 99.99% of |x| for N(0,1) is about 3.9, outliers clipped
    elo, ehi = en.range("t")
    assert ehi < 20.0 and elo > -20.0  # KL keeps the bulk, not the outliers
    # thresholds on raw histograms: a uniform |x| keeps (almost) all of its range
    h = np.full(2048, 10)
    assert percentile_threshold(h, 1.0) > 0.99
    assert entropy_threshold(h, 1.0) > 0.9
