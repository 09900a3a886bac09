"""The numerics gate's metrics and limits, on arrays with known answers (no conversion)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edge.export import numerics
from edge.export.context import PRECISIONS


def test_identical_outputs_are_perfect() -> None:
    ref = np.random.default_rng(0).normal(size=(8, 10)).astype(np.float32)
    m = numerics.compare(ref, ref.copy())
    assert m["max_abs"] == 0 and m["max_rel"] == 0
    assert m["cosine"] == pytest.approx(1.0)
    assert m["sqnr_db"] == numerics.SQNR_CAP_DB
    assert m["top1_agree"] == 1.0 and m["top5_agree"] == 1.0


def test_sqnr_and_relative_error_have_their_definitions() -> None:
    ref = np.ones((4, 10), np.float64) * 2.0
    ref[:, 0] = 4.0
    noise = np.full_like(ref, 0.02)
    m = numerics.compare(ref, ref + noise)
    expected = 10 * math.log10(np.sum(ref**2) / np.sum(noise**2))
    assert m["sqnr_db"] == pytest.approx(expected, abs=1e-3)
    assert m["max_abs"] == pytest.approx(0.02)
    assert m["max_rel"] == pytest.approx(0.02 / 4.0)  # normalised by the largest reference magnitude


def test_top1_and_top5_agreement_count_flips() -> None:
    ref = np.tile(np.arange(10, dtype=np.float32), (4, 1))  # top-1 is class 9, top-5 {5..9}
    got = ref.copy()
    got[0, 0] = 100.0  # sample 0: new top-1, and class 0 enters the top-5 (4 of 5 shared)
    m = numerics.compare(ref, got)
    assert m["top1_agree"] == pytest.approx(0.75)
    assert m["top5_agree"] == pytest.approx((4 / 5 + 3) / 4)


def test_non_class_outputs_have_no_topk() -> None:
    ref = np.random.default_rng(1).normal(size=(2, 3, 4, 4))
    m = numerics.compare(ref, ref)
    assert m["top1_agree"] is None and m["top5_agree"] is None
    assert numerics.gate({"output": m}, "fp32") == []


def test_cosine_is_the_worst_sample() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(3, 50))
    got = ref.copy()
    got[1] = -ref[1]
    assert numerics.compare(ref, got)["cosine"] == pytest.approx(-1.0)


def test_non_finite_output_fails_the_gate() -> None:
    ref = np.ones((2, 10))
    got = ref.copy()
    got[0, 3] = np.nan
    m = numerics.compare(ref, got)
    fails = numerics.gate({"logits": m}, "fp16")
    assert any(f["metric"] == "non_finite" and f["value"] == 1 for f in fails)


def test_gate_names_the_output_and_the_size_of_the_breach() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(8, 100))
    good = ref + rng.normal(size=ref.shape) * 1e-6
    bad = ref + rng.normal(size=ref.shape) * 0.5
    metrics = {"logits": numerics.compare(ref, good), "aux": numerics.compare(ref, bad)}
    fails = numerics.gate(metrics, "fp32")
    assert fails and {f["output"] for f in fails} == {"aux"}
    sq = next(f for f in fails if f["metric"] == "sqnr_db")
    assert sq["value"] < 10 and sq["limit"] == numerics.THRESHOLDS["fp32"].min_sqnr_db
    text = numerics.describe_failures(fails)
    assert "aux" in text and "sqnr_db" in text and "limit 60" in text


def test_every_precision_has_a_reasoned_threshold() -> None:
    assert set(numerics.THRESHOLDS) == set(PRECISIONS) == set(numerics.VERIFY_SAMPLES)
    for p, t in numerics.THRESHOLDS.items():
        assert len(t.why) > 60, p
    # the quantization issue's goals are the int8 limits
    assert numerics.THRESHOLDS["int8"].min_sqnr_db == 20 and numerics.THRESHOLDS["int8"].min_top1 == 0.9
    assert numerics.THRESHOLDS["int8w"].min_sqnr_db == 30
    # fp32 is the strictest, fp16 next
    assert numerics.THRESHOLDS["fp32"].min_sqnr_db > numerics.THRESHOLDS["fp16"].min_sqnr_db > 20


def test_fp16_rounding_noise_passes_fp16_but_not_fp32() -> None:
    """Rounding a logit vector to fp16 is the kind of error the fp16 limit is for, and fp32 must reject it."""
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(8, 1000)).astype(np.float32) * 3
    got = ref + rng.normal(size=ref.shape).astype(np.float32) * 3e-3  # ~60 dB: a deep fp16 network
    m = {"logits": numerics.compare(ref, got)}
    assert numerics.gate(m, "fp16") == []
    got32 = ref + rng.normal(size=ref.shape).astype(np.float32) * 3e-2
    assert numerics.gate({"logits": numerics.compare(ref, got32)}, "fp32")


def test_verification_set_is_fixed_natural_images() -> None:
    a = numerics.verification_inputs(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), n=8)
    b = numerics.verification_inputs(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), n=8)
    assert a.shape == (8, 3, 32, 32)
    assert torch.equal(a, b)
    # photos, not noise: pixels sit on the 8-bit grid, and neighbouring pixels are strongly correlated
    px = a * 0.25 + 0.5
    assert torch.allclose(px * 255, torch.round(px * 255), atol=1e-3)
    x = a[:, :, :, :-1].flatten()
    y = a[:, :, :, 1:].flatten()
    assert torch.corrcoef(torch.stack([x, y]))[0, 1] > 0.5
    assert len({tuple(img.flatten()[:50].tolist()) for img in a}) == 8  # eight different images
