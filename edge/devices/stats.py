"""Latency statistics: per trial, across trials (bootstrap CI of the median), and drift between trials.

One noisy number is what makes phone benchmarks disagree by 10%; a trial is summarised robustly
(median, p10/p90, trimmed mean of the middle 80%), trials are combined by the median of their medians
with a hierarchical bootstrap CI (resample trials, then samples inside each trial), and trends across
trials (latency rising, temperature rising, frequency falling) are flagged instead of averaged away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

DRIFT_LATENCY_PCT = 3.0  # latency rising by more than this across the trials (Theil-Sen fit) is drift
DRIFT_TEMPERATURE_C = 2.0  # a rise of this many degrees from the first to the last trial
DRIFT_FREQUENCY_PCT = 5.0  # any core's frequency cap falling by this much


def trimmed_mean(x: Sequence[float], keep: float = 0.8) -> float:
    """Mean of the middle ``keep`` fraction (0.8 drops the fastest and slowest 10% each)."""
    a = np.sort(np.asarray(x, dtype=np.float64))
    if a.size == 0:
        return math.nan
    cut = int(math.floor(a.size * (1.0 - keep) / 2.0 + 1e-9))  # 10 samples at 0.8 drop exactly 1 each side
    a = a[cut: a.size - cut] if a.size - 2 * cut > 0 else a
    return float(a.mean())


def summarize_samples(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median, p10/p90, trimmed mean, min/max/mean/std of one trial's per-inference times."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    return {
        "median": float(np.median(a)),
        "p10": float(np.percentile(a, 10)),
        "p90": float(np.percentile(a, 90)),
        "trimmed_mean": trimmed_mean(a),
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
    }


def bootstrap_median_ci(trials: Sequence[Sequence[float]], trial_medians: Sequence[float] | None = None,
                        level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Median of trial medians and its percentile-bootstrap CI.

    Each replicate resamples the trials with replacement and, for trials that kept their samples,
    resamples the samples inside each chosen trial, so the interval reflects both run-to-run and
    within-run spread. Trials without samples (binaries that print aggregates only) contribute their
    median as it is. Returns (median, lo, hi).
    """
    meds = np.asarray(
        [float(np.median(t)) if len(t) else math.nan for t in trials] if trial_medians is None
        else [float(m) for m in trial_medians], dtype=np.float64)
    k = meds.size
    if k == 0:
        raise ValueError("no trials")
    point = float(np.median(meds))
    rng = np.random.default_rng(seed)
    # per-trial bootstrap medians, shape [k, n_boot]
    per_trial = np.empty((k, n_boot), dtype=np.float64)
    for i, t in enumerate(trials if trials else [[]] * k):
        a = np.asarray(t, dtype=np.float64)
        if a.size >= 2:
            step = max(1, 2_000_000 // a.size)  # bounded memory for long trials
            for s in range(0, n_boot, step):
                idx = rng.integers(0, a.size, size=(min(step, n_boot - s), a.size))
                per_trial[i, s: s + idx.shape[0]] = np.median(a[idx], axis=1)
        else:
            per_trial[i] = meds[i]
    if k == 1:
        reps = per_trial[0]
    else:
        pick = rng.integers(0, k, size=(n_boot, k))
        reps = np.median(per_trial[pick, np.arange(n_boot)[:, None]], axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return point, float(min(lo, point)), float(max(hi, point))


def theil_sen_slope(y: Sequence[float]) -> float:
    """Median of pairwise slopes against the trial index: a trend that one outlier cannot fake."""
    y = [float(v) for v in y]
    slopes = [(y[j] - y[i]) / (j - i) for i in range(len(y)) for j in range(i + 1, len(y))]
    return float(np.median(slopes)) if slopes else 0.0


def drift(trial_medians: Sequence[float], temperatures: Sequence[float | None] = (),
          freqs: Sequence[dict[str, int] | None] = ()) -> dict[str, Any]:
    """Flag latency rising, temperature rising and frequency falling across trials."""
    out: dict[str, Any] = {"latency_rising": False, "temperature_rising": False, "frequency_falling": False,
                           "latency_change_pct": None, "temperature_change_c": None, "frequency_change_pct": None}
    m = [float(v) for v in trial_medians]
    if len(m) >= 3:
        slope = theil_sen_slope(m)
        ref = float(np.median(m))
        change = 100.0 * slope * (len(m) - 1) / ref if ref > 0 else 0.0
        out["latency_change_pct"] = round(change, 2)
        # rising = a sustained trend (Theil-Sen) AND the last trials really are slower than the first
        out["latency_rising"] = bool(change > DRIFT_LATENCY_PCT and m[-1] > m[0])
    temps = [float(t) for t in temperatures if t is not None]
    if len(temps) >= 2:
        change_c = theil_sen_slope(temps) * (len(temps) - 1)
        out["temperature_change_c"] = round(change_c, 2)
        out["temperature_rising"] = bool(change_c >= DRIFT_TEMPERATURE_C)
    fs = [f for f in freqs if f]
    if len(fs) >= 2:
        worst = 0.0
        first = fs[0]
        for later in fs[1:]:
            for core, f0 in first.items():
                f1 = later.get(core)
                if f0 and f1 is not None:
                    worst = min(worst, 100.0 * (f1 - f0) / f0)
        out["frequency_change_pct"] = round(worst, 2)
        out["frequency_falling"] = bool(-worst >= DRIFT_FREQUENCY_PCT)
    return out
