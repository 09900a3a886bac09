"""The calibration set: real images, preprocessed exactly as the model's metadata says, never noise.

``--calib DIR`` reads every JPEG/PNG below DIR (recursively, with Pillow); without it the built-in natural
photos (scikit-image + matplotlib wheels, each with its recorded licence) are used, with deterministic crops and
flips so a dozen photos fill the requested number of samples. What was used is recorded for the manifest.

The range estimators in :func:`tensor_ranges` back the ``--calib-method`` choices for backends that only
collect plain statistics themselves (ai-edge-quantizer): ``minmax`` (global extremes), ``percentile``
(99.99% of the mass, as ONNX Runtime's default) and ``entropy`` (TensorRT-style KL-divergence threshold).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.export.context import ExportContext

CALIB_METHODS = ("minmax", "percentile", "entropy")
PERCENTILE = 99.99  # share of |x| kept by the percentile method
HIST_BINS = 2048
CALIB_SEED = 1  # the numerics gate verifies with seed 0: calibrate on other crops


@dataclass
class CalibrationSet:
    """Preprocessed calibration images [n,3,H,W] (float NCHW) and where they came from."""

    batch: torch.Tensor
    source: str
    method: str
    files: int
    skipped: int = 0
    licences: tuple[str, ...] = ()
    preprocess: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The manifest's ``quantization.calibration`` entry."""
        return {
            "source": self.source,
            "samples": int(self.batch.shape[0]),
            "files": self.files,
            "skipped_unreadable": self.skipped,
            "method": self.method,
            "licences": list(self.licences),
            "preprocess": self.preprocess,
        }

    def numpy(self, channels_last: bool = False) -> list[np.ndarray]:
        """One float32 batch-1 array per sample, NCHW (or NHWC)."""
        arr = self.batch.numpy().astype(np.float32)
        if channels_last:
            arr = arr.transpose(0, 2, 3, 1)
        return [np.ascontiguousarray(a[None]) for a in arr]


def preprocess_of(ctx: ExportContext) -> dict[str, Any]:
    """mean/std/crop/interpolation for this export: the zoo metadata, or the user's mean/std with timm defaults."""
    crop_pct, interpolation = 0.875, "bilinear"
    info = getattr(ctx, "info", None)
    if info is not None:
        crop_pct, interpolation = info.preprocess.crop_pct, info.preprocess.interpolation
    return {"mean": [float(v) for v in ctx.mean], "std": [float(v) for v in ctx.std], "crop_pct": float(crop_pct),
            "interpolation": interpolation, "img_size": int(ctx.img_size)}


def check_method(method: str) -> str:
    if method not in CALIB_METHODS:
        raise EdgeError(f"unknown calibration method {method!r}", f"use one of {', '.join(CALIB_METHODS)}")
    return method


def note(ctx: ExportContext, message: str) -> None:
    """A warning the user must see: raised as a UserWarning and kept for the manifest's ``quantization.warnings``
    (the pipeline silences converters' console output while quantizing)."""
    warnings.warn(message, UserWarning, stacklevel=3)
    ctx.extras.setdefault("quant_warnings", []).append(message)


def warn_unused_calibration(ctx: ExportContext) -> None:
    """Weight-only / dynamic modes take no activation statistics: say so when --calib was given anyway."""
    q = ctx.options.quant
    if q.calib_dir is not None:
        note(ctx, f"--calib {q.calib_dir} is ignored for {ctx.precision}: it quantizes weights only and needs no "
                  "calibration images")


def calibration_set(ctx: ExportContext) -> CalibrationSet:
    """Load ``--calib-samples`` images from ``--calib DIR`` or the built-in set, preprocessed per the metadata."""
    q = ctx.options.quant
    method = check_method(q.calib_method)
    n = int(q.calib_samples)
    if n < 1:
        raise EdgeError(f"--calib-samples must be at least 1 (got {n})", "e.g. --calib-samples 32")
    pp = preprocess_of(ctx)
    args = (pp["img_size"], pp["mean"], pp["std"], pp["crop_pct"], pp["interpolation"])
    if q.calib_dir is None:
        from edge.data import builtin_images, image_batch

        images = builtin_images()
        photos = len(images.paths)
        with warnings.catch_warnings():  # the bundled files are known-good; a skip is counted in the record
            warnings.simplefilter("ignore")
            batch, used = image_batch(n + photos, *args, images=images, seed=CALIB_SEED)
        # image_batch puts each photo's uncropped view first; the numerics gate verifies on those, so drop them
        batch = batch[photos - used.skipped:][:n]
        return CalibrationSet(batch, f"built-in natural photos: {used.source}; {n} seeded crops/flips (seed "
                              f"{CALIB_SEED}) of {photos - used.skipped} photos, uncropped views left to verification",
                              method, photos, used.skipped, used.licences, pp)
    return _folder_set(ctx, Path(q.calib_dir), n, method, pp, args)


def _folder_set(ctx: ExportContext, root: Path, n: int, method: str, pp: dict[str, Any], args: tuple) -> CalibrationSet:
    from edge.data import folder_images, load_rgb, preprocess

    images = folder_images(root)  # EdgeError for a missing folder or one without images
    tensors, bad = [], []
    for p in images.paths:
        im = load_rgb(p)
        if im is None:
            bad.append(p)
            continue
        tensors.append(preprocess(im, *args))
        if len(tensors) >= n:
            break
    if bad:
        names = ", ".join(str(b.relative_to(root)) for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
        note(ctx, f"skipped {len(bad)} unreadable or corrupt image(s) in --calib {root}: {names}")
    if not tensors:
        raise EdgeError(f"no readable images in --calib {str(root)!r} ({len(bad)} file(s) could not be decoded)",
                        "give a folder of valid JPEG/PNG files")
    if len(tensors) < n:
        note(ctx, f"--calib {root} has {len(tensors)} readable image(s), fewer than --calib-samples {n}; "
                  "calibrating on those")
    return CalibrationSet(torch.stack(tensors), f"user folder {root}", method, len(tensors) + len(bad), len(bad),
                          (), pp)


# ---------------------------------------------------------------------------------------------------------------
# Range estimators for backends that hand us raw tensors (ai-edge-quantizer): one histogram per tensor.


class RangeCollector:
    """Per-tensor min/max and |x| histogram over all calibration samples; ranges by the chosen method."""

    def __init__(self, method: str) -> None:
        self.method = check_method(method)
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}
        self.hist: dict[str, np.ndarray] = {}
        self.edge: dict[str, float] = {}

    def add_minmax(self, name: str, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32)
        lo, hi = float(x.min()), float(x.max())
        self.lo[name] = min(lo, self.lo.get(name, lo))
        self.hi[name] = max(hi, self.hi.get(name, hi))

    def add_hist(self, name: str, x: np.ndarray) -> None:
        """Second pass (after every add_minmax): accumulate |x| into a fixed histogram up to the global |max|."""
        top = max(abs(self.lo[name]), abs(self.hi[name])) or 1e-12
        h, _ = np.histogram(np.abs(np.asarray(x, np.float32)), bins=HIST_BINS, range=(0.0, top))
        self.edge[name] = top
        self.hist[name] = self.hist.get(name, 0) + h

    def range(self, name: str) -> tuple[float, float]:
        lo, hi = self.lo[name], self.hi[name]
        if self.method == "minmax" or name not in self.hist:
            return lo, hi
        h, top = self.hist[name], self.edge[name]
        t = percentile_threshold(h, top) if self.method == "percentile" else entropy_threshold(h, top)
        return max(lo, -t), min(hi, t)


def percentile_threshold(hist: np.ndarray, top: float, pct: float = PERCENTILE) -> float:
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    idx = int(np.searchsorted(cdf, pct / 100.0))
    return float(top * min(idx + 1, len(hist)) / len(hist))


def entropy_threshold(hist: np.ndarray, top: float, levels: int = 128) -> float:
    """The clipping threshold whose 8-bit quantized distribution is closest (KL) to the observed |x| histogram."""
    hist = hist.astype(np.float64)
    nbins = len(hist)
    best, best_i = np.inf, nbins
    for i in range(levels, nbins + 1, 16):
        kept = hist[:i]
        p = kept.copy()
        p[i - 1] += hist[i:].sum()  # the reference keeps the clipped mass, in its last bin
        if p.sum() == 0:
            continue
        # the candidate: the kept bins merged into `levels` quantization bins, each spread back evenly over its
        # non-empty source bins (it cannot represent the clipped mass)
        idx = (np.arange(i) * levels) // i
        merged = np.bincount(idx, weights=kept, minlength=levels)
        nonzero = np.bincount(idx, weights=(kept > 0).astype(np.float64), minlength=levels)
        q = np.where(kept > 0, merged[idx] / np.maximum(nonzero[idx], 1), 0.0)
        pn, qn = p / p.sum(), q / max(q.sum(), 1e-30)
        mask = pn > 0
        kl = float(np.sum(pn[mask] * np.log(pn[mask] / np.maximum(qn[mask], 1e-30))))
        if kl < best:
            best, best_i = kl, i
    return float(top * best_i / nbins)
