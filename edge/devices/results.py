"""Benchmark records on disk: one JSON line per finished trial, appended and fsync'd at once.

Layout of an output folder (``--out DIR``):

- ``trials.jsonl``: ``edge.bench.trial/1`` records, one per trial, written the moment the trial ends, so
  a phone that drops off mid-run loses nothing already measured;
- ``summary.jsonl``: ``edge.bench.summary/1`` records, one per (run, device, artifact) when its trials end
  (partial summaries carry ``"complete": false``);
- ``raw/``: what the device printed and the op profiles it wrote, per trial.

``--resume`` finds the newest run with the same identity (artifact hash, device, runtime, settings) and
continues its trial numbering. ``load_summaries`` is what claims, report and check read.
"""

from __future__ import annotations

import datetime as _dt
import threading
import uuid
from pathlib import Path
from typing import Any

from edge._io import append_jsonl, read_jsonl
from edge.devices import stats

TRIAL_SCHEMA = "edge.bench.trial/1"
SUMMARY_SCHEMA = "edge.bench.summary/1"
TRIALS_FILE = "trials.jsonl"
SUMMARY_FILE = "summary.jsonl"

# fields that make two trials comparable: same artifact bytes, device, runtime and settings
IDENTITY = ("artifact_sha256", "target", "precision", "runtime", "delegate", "threads", "cores", "runs", "warmup",
            "min_seconds")
SUMMARY_IDENTITY = ("run_id", "artifact", "artifact_sha256", "model", "target", "precision", "device", "runtime",
                    "delegate", "threads", "cores", "runs", "warmup", "min_seconds")

_lock = threading.Lock()


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_run_id() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def append(path: str | Path, record: dict[str, Any]) -> None:
    """Append + fsync; one writer at a time (device jobs run in threads)."""
    with _lock:
        append_jsonl(path, record)


def identity_key(record: dict[str, Any]) -> tuple:
    dev = record.get("device") or {}
    return (dev.get("id"),) + tuple(record.get(k) for k in IDENTITY)


def find_resumable(out_dir: str | Path, key: tuple) -> tuple[str | None, list[dict[str, Any]]]:
    """The newest run with this identity and its trials (sorted), or (None, [])."""
    trials = [r for r in read_jsonl(Path(out_dir) / TRIALS_FILE)
              if r.get("schema") == TRIAL_SCHEMA and identity_key(r) == key]
    if not trials:
        return None, []
    run_id = trials[-1]["run_id"]
    mine = sorted((r for r in trials if r["run_id"] == run_id), key=lambda r: r["trial"])
    dedup: dict[int, dict[str, Any]] = {r["trial"]: r for r in mine}
    return run_id, [dedup[k] for k in sorted(dedup)]


def summarize(trials: list[dict[str, Any]], requested: int | None = None,
              rule: dict[str, Any] | None = None) -> dict[str, Any]:
    """Combine one run's trial records into an ``edge.bench.summary/1`` record.

    With ``rule`` (``--trials auto``: min_trials, max_trials, target_ci_pct) the run is complete once it has
    ``min_trials`` and its CI half-width is within the target, or it reached ``max_trials``.
    """
    if not trials:
        raise ValueError("no trials to summarise")
    first = trials[0]
    medians = [t["latency_ms"]["median"] for t in trials]
    median, lo, hi = stats.bootstrap_median_ci([t.get("samples_ms") or [] for t in trials], medians)
    p10s = [t["latency_ms"].get("p10") for t in trials]
    p90s = [t["latency_ms"].get("p90") for t in trials]
    tms = [t["latency_ms"].get("trimmed_mean") for t in trials]
    mems = [t.get("peak_memory_mb") for t in trials if t.get("peak_memory_mb") is not None]
    temps = [t.get("temperature_c") for t in trials]
    freqs = [t.get("max_freq_khz") for t in trials]
    rec: dict[str, Any] = {"schema": SUMMARY_SCHEMA}
    for k in SUMMARY_IDENTITY:
        rec[k] = first.get(k)
    ci_pct = 100.0 * (hi - lo) / 2.0 / median if median else None
    complete = requested is None or len(trials) >= requested
    if rule:
        met = ci_pct is not None and ci_pct <= rule["target_ci_pct"]
        complete = len(trials) >= rule["max_trials"] or (len(trials) >= rule["min_trials"] and met)
        rec["trials_rule"] = {**rule, "target_met": met}
    rec.update({
        "trials": len(trials),
        "trials_requested": rule["max_trials"] if rule else requested if requested is not None else len(trials),
        "complete": complete,
        "median_ms": median,
        "ci95_ms": [lo, hi],
        "ci95_half_width_pct": ci_pct,
        "p10_ms": _median_or_none(p10s),
        "p90_ms": _median_or_none(p90s),
        "trimmed_mean_ms": _median_or_none(tms),
        "min_ms": min(t["latency_ms"]["min"] for t in trials if t["latency_ms"].get("min") is not None)
        if any(t["latency_ms"].get("min") is not None for t in trials) else None,
        "first_ms": _median_or_none([t["latency_ms"].get("first") for t in trials]),
        "init_ms": _median_or_none([t["latency_ms"].get("init") for t in trials]),
        "trial_medians_ms": medians,
        "drift": stats.drift(medians, temps, freqs),
        "peak_memory_mb": max(mems) if mems else None,
        "delegate_coverage": trials[-1].get("delegate_coverage"),
        "temperature_c": [t.get("temperature_c") for t in trials],
        "timestamp": trials[-1].get("timestamp"),
    })
    return rec


def _median_or_none(vals: list[Any]) -> float | None:
    v = sorted(float(x) for x in vals if x is not None)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0


def load_trials(path: str | Path) -> list[dict[str, Any]]:
    """Trial records from a folder (its trials.jsonl) or a JSON-lines file."""
    p = Path(path)
    files = [p / TRIALS_FILE] if p.is_dir() else [p]
    return [r for f in files for r in read_jsonl(f) if r.get("schema") == TRIAL_SCHEMA]


def load_summaries(path: str | Path) -> list[dict[str, Any]]:
    """One summary per run from a results folder or file (recomputed from trials where none was written).

    The newest summary of a run wins (a resumed run writes a new one when it completes).
    """
    p = Path(path)
    files = sorted(p.rglob("*.jsonl")) if p.is_dir() else [p]
    by_run: dict[tuple, dict[str, Any]] = {}
    trials: dict[tuple, list[dict[str, Any]]] = {}
    for f in files:
        for r in read_jsonl(f):
            key = (r.get("run_id"), (r.get("device") or {}).get("id"), r.get("artifact_sha256"))
            if r.get("schema") == SUMMARY_SCHEMA:
                by_run[key] = r
            elif r.get("schema") == TRIAL_SCHEMA:
                trials.setdefault(key, []).append(r)
    for key, ts in trials.items():
        have = by_run.get(key)
        if have is None or have.get("trials", 0) < len(ts):
            dedup = {t["trial"]: t for t in ts}
            rule = {k: v for k, v in ((have or {}).get("trials_rule") or {}).items() if k != "target_met"} or None
            by_run[key] = summarize([dedup[k] for k in sorted(dedup)], requested=(have or {}).get("trials_requested"),
                                    rule=rule)
    return sorted(by_run.values(), key=lambda r: (r.get("timestamp") or "", r.get("run_id") or ""))
