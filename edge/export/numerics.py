"""The numerics gate: every artifact against the PyTorch network, with per-precision limits in ONE place.

An artifact passes only if every output meets every limit of its precision. The inputs are a fixed,
seeded set of natural photos prepared with the model's own preprocessing (never noise: a network's
outputs on noise say little about its outputs on images).

Metric definitions (all over the whole verification set, per output):
- ``max_abs``: largest absolute difference.
- ``max_rel``: ``max_abs`` divided by the largest reference magnitude. Element-wise relative error blows up
  wherever a reference value is near zero, so it is normalised by the output's range instead.
- ``cosine``: the worst (smallest) per-sample cosine similarity.
- ``sqnr_db``: 10·log10(Σref² / Σ(got-ref)²); capped at ``SQNR_CAP_DB`` when the outputs are identical.
- ``top1_agree``: fraction of samples whose argmax agrees (outputs shaped [N, classes] only).
- ``top5_agree``: mean overlap of the two top-5 class sets, order ignored (outputs shaped [N, classes>=5] only).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

VERIFY_SEED = 0
SQNR_CAP_DB = 200.0  # identical outputs: JSON has no infinity

# How many verification images each precision is checked on. A quantized artifact is judged on a top-1
# percentage (goal >= 90%), which needs more than 8 samples for one flip not to decide it.
VERIFY_SAMPLES = {"fp32": 8, "fp16": 8, "int8": 16, "int8w": 16, "w8a16": 16, "int8dyn": 16}


@dataclass(frozen=True)
class Threshold:
    """Limits one precision's outputs must meet. ``None`` means the metric is reported but not gated."""

    min_sqnr_db: float
    min_cosine: float
    max_rel: float | None
    min_top1: float | None
    min_top5: float | None
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


THRESHOLDS: dict[str, Threshold] = {
    "fp32": Threshold(
        min_sqnr_db=60.0, min_cosine=0.99999, max_rel=1e-3, min_top1=1.0, min_top5=1.0,
        why="fp32 artifacts differ from PyTorch only in operation order and in the runtimes' kernel approximations "
            "(XNNPACK's exp/tanh polynomials, fused GELU): measured >= 100 dB. 60 dB (error 0.1% of the signal) "
            "leaves room for those while a real conversion bug (wrong op, layout or weight) lands far below 40 dB. "
            "At that error no top-1/top-5 decision can flip except on an exact tie.",
    ),
    "fp16": Threshold(
        min_sqnr_db=30.0, min_cosine=0.999, max_rel=5e-2, min_top1=0.875, min_top5=0.8,
        why="fp16 rounds every weight (and in Core ML / ONNX every activation) to 11 significant bits, about 66 dB "
            "per op; over 50-150 layers that accumulates to roughly 35-60 dB. 30 dB (error 3% of the signal) "
            "still catches any wrong op or layout. Random-init networks with re-estimated BatchNorm have "
            "near-tied logits, so one of 8 top-1 decisions may flip (0.875) and top-5 sets may swap one class.",
    ),
    "int8": Threshold(
        min_sqnr_db=20.0, min_cosine=0.99, max_rel=None, min_top1=0.9, min_top5=None,
        why="W8A8 goal from the quantization issue: output SQNR >= 20 dB and top-1 agreement >= 90% against fp32. "
            "max_rel is not gated: an int8 grid step alone can exceed any useful bound on the largest logit.",
    ),
    "w8a16": Threshold(
        min_sqnr_db=20.0, min_cosine=0.99, max_rel=None, min_top1=0.9, min_top5=None,
        why="int16 activations are finer than int8, so W8A8's goal (20 dB, 90% top-1) is the floor; the int8 "
            "weights dominate the error.",
    ),
    "int8w": Threshold(
        min_sqnr_db=30.0, min_cosine=0.999, max_rel=None, min_top1=0.9, min_top5=None,
        why="Weight-only int8 goal from the quantization issue: >= 30 dB; activations stay float, so the only "
            "error is per-channel weight rounding.",
    ),
    "int8dyn": Threshold(
        min_sqnr_db=20.0, min_cosine=0.99, max_rel=None, min_top1=0.9, min_top5=None,
        why="Dynamic-range int8 quantizes activations per call, like W8A8 but with exact ranges: W8A8's goal applies.",
    ),
}


def verification_inputs(img_size: int, mean, std, crop_pct: float = 0.875, interpolation: str = "bilinear",
                        n: int = 8, seed: int = VERIFY_SEED) -> torch.Tensor:
    """The fixed verification set: ``n`` natural photos (and seeded crops of them), model-preprocessed."""
    from edge.data import image_batch

    batch, _ = image_batch(n, img_size, mean, std, crop_pct, interpolation, seed=seed)
    return batch


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float | None]:
    """Fidelity of ``got`` against ``ref``, both shaped [N, ...] over the verification set."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, artifact {got.shape}")
    diff = got - ref
    if not np.all(np.isfinite(got)):
        return {"max_abs": None, "max_rel": None, "cosine": -1.0, "sqnr_db": -SQNR_CAP_DB,
                "top1_agree": 0.0 if _is_logits(ref) else None, "top5_agree": 0.0 if _is_logits(ref, 5) else None,
                "non_finite": int(np.sum(~np.isfinite(got)))}
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    r = ref.reshape(ref.shape[0], -1)
    g = got.reshape(got.shape[0], -1)
    num = np.sum(r * g, axis=1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(np.all(r == g, axis=1), 1.0, 0.0))
    noise = float(np.sum(diff**2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        sqnr = SQNR_CAP_DB
    elif signal == 0:
        sqnr = -SQNR_CAP_DB
    else:
        sqnr = min(SQNR_CAP_DB, 10.0 * math.log10(signal / noise))
    out: dict[str, float | None] = {
        "max_abs": max_abs,
        "max_rel": max_rel if math.isfinite(max_rel) else None,
        "cosine": float(np.min(cos)) if cos.size else 1.0,
        "sqnr_db": round(sqnr, 3),
        "top1_agree": None,
        "top5_agree": None,
    }
    if _is_logits(ref):
        out["top1_agree"] = float(np.mean(np.argmax(ref, 1) == np.argmax(got, 1)))
    if _is_logits(ref, 5):
        tr = np.argsort(-ref, axis=1)[:, :5]
        tg = np.argsort(-got, axis=1)[:, :5]
        out["top5_agree"] = float(np.mean([len(set(a) & set(b)) / 5.0 for a, b in zip(tr, tg)]))
    return out


def _is_logits(ref: np.ndarray, k: int = 2) -> bool:
    return ref.ndim == 2 and ref.shape[1] >= k


def gate(metrics: dict[str, dict[str, float | None]], precision: str) -> list[dict[str, Any]]:
    """Every breach of ``THRESHOLDS[precision]``, as {output, metric, value, limit}; empty means pass."""
    t = THRESHOLDS[precision]
    failures: list[dict[str, Any]] = []

    def check(output: str, metric: str, value: float | None, limit: float | None, higher_is_better: bool) -> None:
        if limit is None:
            return
        if value is None:
            if metric in ("top1_agree", "top5_agree"):
                return  # the output is not a class score vector
            failures.append({"output": output, "metric": metric, "value": None, "limit": limit})
            return
        bad = value < limit if higher_is_better else value > limit
        if bad:
            failures.append({"output": output, "metric": metric, "value": value, "limit": limit})

    for name, m in metrics.items():
        if m.get("non_finite"):
            failures.append({"output": name, "metric": "non_finite", "value": m["non_finite"], "limit": 0})
        check(name, "sqnr_db", m.get("sqnr_db"), t.min_sqnr_db, True)
        check(name, "cosine", m.get("cosine"), t.min_cosine, True)
        check(name, "max_rel", m.get("max_rel"), t.max_rel, False)
        check(name, "top1_agree", m.get("top1_agree"), t.min_top1, True)
        check(name, "top5_agree", m.get("top5_agree"), t.min_top5, True)
    return failures


def describe_failures(failures: list[dict[str, Any]]) -> str:
    """One line: which output failed which limit, and by how much."""
    parts = []
    for f in failures:
        v, lim = f["value"], f["limit"]
        if f["metric"] == "unverifiable":
            parts.append(f"{f['output']}: could not be checked: {f.get('error')}")
        elif f["metric"] == "non_finite":
            parts.append(f"{f['output']}: {v} non-finite value(s)")
        elif v is None:
            parts.append(f"{f['output']}: {f['metric']} could not be computed (limit {lim:g})")
        else:
            op = ">" if f["metric"] == "max_rel" else "<"
            where = f" ({f['runtime']})" if f.get("runtime") else ""
            parts.append(f"{f['output']}{where}: {f['metric']} {v:.4g} {op} limit {lim:g}")
    return "; ".join(parts)
