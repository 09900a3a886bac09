"""Where does edge-bench's trial-to-trial spread come from: the session, or the machine?

    python benchmarks/session_spread.py MODEL.tflite [MODEL.tflite ...] [--sessions 12] [--runs 50]

Each trial of the harness is a fresh interpreter session. This script opens ``--sessions`` fresh LiteRT
sessions (XNNPACK, 1 thread) per model, in turn unpinned and pinned to one core (``os.sched_setaffinity``),
interleaved, and reports for each setting the spread of the session medians ((max - min) / median) against the
spread inside a session (p90 / p10 of its runs). Session medians that differ far more than runs inside a session
do mean that a fresh session lands at a different speed; pinning tests whether core placement is the cause.
It imports only numpy and ai-edge-litert (``--trial-seconds`` also edge's statistics), so it runs on any machine the
artifacts are copied to.

``--trial-seconds S [S ...]`` asks whether longer trials would help edge-bench's CI: ``--sessions`` rounds, each
opening one fresh session per length S (interleaved) that runs until at least ``--runs`` runs and S seconds; per
S, the trial medians and the 95% bootstrap CI of their median as edge-bench computes it (``edge.devices.stats``),
as +-% of the median. A trial long enough to average over the machine's levels would narrow it.

``--series SECONDS`` asks the question the other way round: one session only, timed for that long, its median
reported per second. Levels that switch inside one session belong to the machine (its other tenants, its clock),
not to the session, and no choice of session can remove them; only timing the files to compare interleaved can.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_harness import bare_times  # noqa: E402


def session(path: str, runs: int, warmup: int) -> tuple[float, float]:
    """Median ms of one fresh session, and its p90/p10 ratio."""
    ts_ms = np.asarray(bare_times(path, runs, warmup))
    return float(np.median(ts_ms)), float(np.percentile(ts_ms, 90) / np.percentile(ts_ms, 10))


def trial_lengths(path: str, lengths: list[float], sessions: int, runs: int, warmup: int) -> dict[str, object]:
    """Per trial length: the trial medians and edge-bench's CI of their median (+-% of it)."""
    from edge.devices.stats import bootstrap_median_ci

    trials: dict[float, list[list[float]]] = {s: [] for s in lengths}
    for _ in range(sessions):
        for s in lengths:  # interleaved, so the machine's levels hit every length alike
            trials[s].append(bare_times(path, runs, warmup, s))
    out = {}
    for s, ts in trials.items():
        med, lo, hi = bootstrap_median_ci(ts)
        out[str(s)] = {"trial_medians_ms": [round(float(np.median(t)), 3) for t in ts],
                       "runs_per_trial": int(np.median([len(t) for t in ts])),
                       "ci_pct": round(100 * (hi - lo) / 2 / med, 2)}
    return out


def series(path: str, seconds: float, warmup: int) -> dict[str, object]:
    """Per-second medians (ms) of one session invoked back to back for ``seconds``."""
    from bench_harness import fresh_interpreter

    it = fresh_interpreter(path)
    for _ in range(warmup):
        it.invoke()
    per_second: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        ts, t_end = [], time.perf_counter() + 1.0
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            it.invoke()
            ts.append(time.perf_counter() - t0)
        per_second.append(1e3 * float(np.median(ts)))
    ms = np.asarray(per_second)
    fast = float(np.min(ms))
    slow_share = float(np.mean(ms > 1.15 * fast))  # seconds at least 15% slower than the fastest second
    switches = int(np.sum((ms[1:] > 1.15 * fast) != (ms[:-1] > 1.15 * fast)))
    return {"per_second_ms": [round(v, 3) for v in ms], "spread_pct": round(100 * float(np.ptp(ms) / np.median(ms)), 1),
            "slow_seconds_share": round(slow_share, 3), "level_switches": switches}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--sessions", type=int, default=12)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--core", type=int, default=None, help="core to pin to (default: the last one allowed)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--series", type=float, default=None, metavar="SECONDS",
                    help="time one session for this long instead, per-second medians")
    ap.add_argument("--trial-seconds", type=float, nargs="+", default=None, metavar="S",
                    help="trials at least this long instead: does edge-bench's CI narrow with trial length?")
    args = ap.parse_args(argv)
    if args.trial_seconds:
        out = {}
        for path in args.models:
            out[path] = r = trial_lengths(path, args.trial_seconds, args.sessions, args.runs, args.warmup)
            for s, row in r.items():
                ms = row["trial_medians_ms"]
                print(f"{Path(path).parent.name or path}: trials of >= {s} s ({row['runs_per_trial']} runs): medians "
                      f"{min(ms):.2f}-{max(ms):.2f} ms, CI of their median +-{row['ci_pct']}%", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"mode": "trial_seconds", "results": out}, indent=1))
        return 0
    if args.series is not None:
        out = {}
        for path in args.models:
            out[path] = r = series(path, args.series, args.warmup)
            print(f"{path}: one session, {len(r['per_second_ms'])} s: per-second medians "
                  f"{min(r['per_second_ms']):.2f}-{max(r['per_second_ms']):.2f} ms (spread {r['spread_pct']}%), "
                  f"{r['level_switches']} switches between levels, {100 * r['slow_seconds_share']:.0f}% of seconds "
                  "slow", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"mode": "series", "results": out}, indent=1))
        return 0
    allowed = sorted(os.sched_getaffinity(0))
    core = args.core if args.core is not None else allowed[-1]
    settings = {"unpinned": set(allowed), f"pinned to core {core}": {core}}
    results = {}
    for path in args.models:
        medians: dict[str, list[float]] = {k: [] for k in settings}
        inner: dict[str, list[float]] = {k: [] for k in settings}
        for _ in range(args.sessions):
            for label, cpus in settings.items():  # interleaved, so drift hits both alike
                os.sched_setaffinity(0, cpus)
                m, r = session(path, args.runs, args.warmup)
                medians[label].append(m)
                inner[label].append(r)
        os.sched_setaffinity(0, set(allowed))
        res = {}
        for label in settings:
            ms = np.asarray(medians[label])
            res[label] = {"session_medians_ms": [round(v, 3) for v in ms],
                          "session_spread_pct": round(100 * float(np.ptp(ms) / np.median(ms)), 1),
                          "within_session_p90_p10": round(float(np.median(inner[label])), 3)}
            print(f"{Path(path).parent.name or path}: {label}: session medians {np.min(ms):.2f}-{np.max(ms):.2f} ms "
                  f"(spread {res[label]['session_spread_pct']}%), within a session p90/p10 "
                  f"{res[label]['within_session_p90_p10']}", flush=True)
        results[path] = res
    if args.json:
        Path(args.json).write_text(json.dumps({"cores": len(allowed), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
