"""How precise and how cheap is edge-bench's host measurement? Writes docs/harness-bench.md.

For each zoo model's fp32 TFLite (LiteRT + XNNPACK, 1 thread, the harness's default settings:
at least 50 runs and 1 s per trial, 10 warm-up, trials auto (10-30, until the CI is within 2%), big cores):

- precision: the 95% bootstrap CI half-width of the median, divided by the median (goal <= 2%);
- overhead: the harness's median per inference against a bare ``interpreter.invoke()`` loop on the same
  interpreter settings (goal <= 2%). The two are interleaved (harness trial, bare trial, ...) so that
  machine load drifts hit both alike; the per-call cost of the timing loop itself (an empty call through
  the harness's loop) is reported too, since on a shared machine it is the only part not buried in noise.

    .venv/bin/python benchmarks/bench_harness.py [--models a,b] [--cache DIR] [--export]

Artifacts are converted with litert_torch directly from the zoo network's NHWC deploy form
(``reparameterize_model(create(name), layout="nhwc")``, as edge's TFLite target converts it; weights do not change
latency), or with ``--export`` through the export pipeline. They are cached in ``--cache``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge.devices.base import DEFAULT_MIN_SECONDS  # noqa: E402
from edge.devices.bench import AUTO_MAX_TRIALS, AUTO_MIN_TRIALS, TARGET_CI_PCT  # noqa: E402


def tflite_for(name: str, cache: Path, use_export: bool) -> Path:
    out = cache / name / "tflite-fp32"
    if use_export:
        if not (out / "manifest.json").is_file():
            from edge.export import export
            export(name, target="tflite", precision="fp32", out=cache)
        return out
    f = out / "model.tflite"
    if not f.is_file():
        import litert_torch
        import torch

        from edge.models import create, get_info, reparameterize_model

        info = get_info(name)
        model = reparameterize_model(create(name, calibrate=False), layout="nhwc")
        x = torch.randn(1, *info.input_size)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "model.tflite.tmp"
        litert_torch.convert(model, (x,)).export(str(tmp))
        os.replace(tmp, f)
    return f


def bare_trial(model: str, runs: int, warmup: int, seconds: float = 0.0) -> float:
    """The simplest honest loop: fresh interpreter, fixed input, time each invoke, median (ms)."""
    return float(np.median(bare_times(model, runs, warmup, seconds)))


def bare_times(model: str, runs: int, warmup: int, seconds: float = 0.0) -> list[float]:
    """Every timed invoke (ms) of one fresh interpreter session, 1 thread, fixed input: at least ``runs`` runs
    and, in blocks of ``runs``, at least ``seconds``."""
    it = fresh_interpreter(model)
    for _ in range(warmup):
        it.invoke()
    end = time.perf_counter() + seconds
    ts = bare_loop(it, runs)
    while time.perf_counter() < end:
        ts += bare_loop(it, runs)
    return ts


def fresh_interpreter(model: str):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=model, num_threads=1)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.random.default_rng(0).standard_normal(d["shape"]).astype(d["dtype"]))
    return it


def bare_loop(it, runs: int) -> list[float]:
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        it.invoke()
        ts.append(time.perf_counter_ns() - t0)
    return [t / 1e6 for t in ts]


def paired_overhead_pct(harness: list[float], bare: list[float]) -> float:
    """Median over adjacent (harness, bare) pairs of their ratio, as a % overhead.

    The machine's speed level holds for seconds (session_spread.py), so two measurements taken back to back
    mostly share it; their ratio cancels it, where the ratio of two pooled medians mixes levels unequally.
    """
    return 100.0 * (float(np.median(np.asarray(harness) / np.asarray(bare))) - 1.0)


def same_session_overhead(model: str, blocks: int = 20, runs: int = 10, warmup: int = 10) -> float:
    """The harness's timing loop against the bare loop on ONE interpreter, in alternating blocks (%, paired).

    Which speed level a fresh session lands at differs from session to session (see session_spread.py), and that
    is not the harness's doing; on one session only the per-inference cost of the two loops differs.
    """
    from edge.devices.runner import _time_loop

    it = fresh_interpreter(model)
    for _ in range(warmup):
        it.invoke()
    harness: list[float] = []
    bare: list[float] = []
    for k in range(blocks):
        for first in ((True, False) if k % 2 == 0 else (False, True)):
            if first:
                harness.append(float(np.median(_time_loop(it.invoke, runs, 0)[0])))
            else:
                bare.append(float(np.median(bare_loop(it, runs))))
    return paired_overhead_pct(harness, bare)


def loop_cost_ns() -> float:
    """Per-iteration cost of the harness's timing loop around a call that does nothing."""
    from edge.devices.runner import _time_loop

    samples, _ = _time_loop(lambda: None, 20000, 100)
    return float(np.median(samples)) * 1e6


def measure(name: str, path: Path, out: Path, runs: int, warmup: int, trials: int) -> dict:
    from edge._progress import Progress
    from edge.devices import bench
    from edge.devices.base import load_artifacts

    art = load_artifacts(path)[0]
    harness, bare = [], []
    summary = None
    for k in range(trials):  # interleave: one harness trial, one bare trial
        rep = bench(art, "host", runs=runs, warmup=warmup, trials=1, out=out / f"{name}-t{k}",
                    progress=Progress(quiet=True))
        harness.append(rep.summaries[0]["trial_medians_ms"][0])
        bare.append(bare_trial(str(art.path), runs, warmup, DEFAULT_MIN_SECONDS))  # as long as the harness's
    # the precision number comes from one ordinary harness run with every default
    t0 = time.perf_counter()
    rep = bench(art, "host", out=out / f"{name}-defaults", progress=Progress(quiet=True))
    default_s = time.perf_counter() - t0
    summary = rep.summaries[0]
    h, b = float(np.median(harness)), float(np.median(bare))
    lo, hi = summary["ci95_ms"]
    sessions = np.array(harness + bare)  # each one a fresh interpreter on the same file
    return {"name": name, "median": summary["median_ms"], "ci": (lo, hi), "trials": summary["trials"],
            "default_s": default_s,
            "half_pct": summary["ci95_half_width_pct"], "p10": summary["p10_ms"], "harness": h, "bare": b,
            "overhead_pct": paired_overhead_pct(harness, bare), "drift": summary["drift"],
            "same_session_overhead_pct": same_session_overhead(str(art.path)),
            "session_spread_pct": 100.0 * float(np.ptp(sessions) / np.median(sessions))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated zoo names (default: all)")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "edge-bench-harness"))
    ap.add_argument("--export", action="store_true", help="make the artifacts with the export pipeline")
    ap.add_argument("--out", default=str(REPO / "docs" / "harness-bench.md"))
    ap.add_argument("--convert-only", action="store_true", help="fill the artifact cache and stop")
    ap.add_argument("--render", action="store_true", help="rewrite the page from the last run's saved numbers")
    a = ap.parse_args()
    from edge.cli import _quiet_libraries
    from edge.devices.runner import versions
    from edge.models import list_models

    _quiet_libraries()
    names = a.models.split(",") if a.models else list_models()
    cache = Path(a.cache)
    saved = cache / "last_run.json"
    if a.render:
        import json
        d = json.loads(saved.read_text())
        write_report(Path(a.out), d["rows"], d["failed"], d["cost_ns"], d["versions"], d["secs"], list_models(),
                     d["load"], d["when"])
        return 0
    rows, failed = [], []
    t_all = time.time()
    cost = loop_cost_ns()
    for name in names:
        t0 = time.time()
        try:
            path = tflite_for(name, cache, a.export)
        except Exception as e:  # noqa: BLE001 - report and go on with the other models
            failed.append((name, f"conversion failed: {str(e).splitlines()[0][:120]}"))
            print(f"{name}: conversion failed: {e}", file=sys.stderr)
            continue
        if a.convert_only:
            print(f"{name}: {path} [{time.time() - t0:.0f} s]", file=sys.stderr)
            continue
        r = measure(name, path, cache / "results", 50, 10, 10)
        r["cost_pct"] = 100.0 * cost / 1e6 / r["bare"]
        rows.append(r)
        print(f"{name}: median {r['median']:.3f} ms  CI ±{r['half_pct']:.2f}%  harness {r['harness']:.3f} vs bare "
              f"{r['bare']:.3f} ms ({r['overhead_pct']:+.2f}%)  [{time.time() - t0:.0f} s]", file=sys.stderr)
    if not a.convert_only:
        import json
        load = list(os.getloadavg()) if hasattr(os, "getloadavg") else [float("nan")] * 3
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        saved.write_text(json.dumps({"rows": rows, "failed": failed, "cost_ns": cost, "versions": versions(),
                                     "secs": time.time() - t_all, "load": load, "when": when}))
        write_report(Path(a.out), rows, failed, cost, versions(), time.time() - t_all, list_models(), load, when)
    return 0


def write_report(path: Path, rows: list[dict], failed: list, cost_ns: float, vers: dict, secs: float,
                 zoo: list[str], load: list[float], when: str) -> None:
    from edge._io import write_text

    ok_ci = sum(1 for r in rows if r["half_pct"] <= 2.0)
    ok_ov = sum(1 for r in rows if abs(r["overhead_pct"]) <= 2.0)
    same = [r.get("same_session_overhead_pct") for r in rows]
    ok_same = sum(1 for v in same if v is not None and abs(v) <= 2.0)
    lines = [
        "# edge-bench harness: precision and overhead on the host",
        "",
        "Written by `benchmarks/bench_harness.py` (do not edit by hand). Each zoo model's fp32 TFLite, LiteRT with",
        "XNNPACK, 1 thread, the harness's default settings (at least 50 runs and "
        f"{DEFAULT_MIN_SECONDS:g} s per trial after 10 warm-up,",
        "`--trials auto`, `--cores big`).",
        "",
        "- **CI ±%**: half-width of the 95% bootstrap CI of the median (resampling trials, then runs inside each",
        "  trial), divided by the median. Goal: at most 2%. `--trials auto` adds trials until it is within "
        f"{TARGET_CI_PCT:g}%",
        f"  (at least {AUTO_MIN_TRIALS}, at most {AUTO_MAX_TRIALS}); **trials** is how many the run took, and the "
        "seconds it lasted.",
        "- **overhead**: median per inference through the harness (`bench(..., trials=1)`, a fresh interpreter each",
        "  trial) against a bare `interpreter.invoke()` loop, 10 interleaved trials each, as the median of the",
        "  ratios of adjacent (harness, bare) trials (the two medians are shown). Goal: at most 2%. On a",
        "  machine shared with other jobs this difference is mostly noise of either sign; the **loop cost** column",
        "  is the harness timing loop's own cost per inference (an empty call timed through it), which is the",
        "  overhead the harness adds by construction.",
        "- **same session**: the harness's timing loop against the bare loop on one interpreter, 20 alternating",
        "  blocks of 10 runs each (median of adjacent blocks' ratios). This is the harness's own per-inference",
        "  overhead without the session-to-session spread that the overhead column inherits. Goal: at most 2%.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} logical CPUs, load average {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} at the end; Python {vers.get('python')}, ai-edge-litert {vers.get('ai_edge_litert')}, "
        f"numpy {vers.get('numpy')}. Run {when}, "
        f"{secs / 60:.0f} min. Timing-loop cost: {cost_ns:.0f} ns per inference.",
        "",
    ]
    ncpu = os.cpu_count() or 1
    if load[0] > 1.5 * ncpu:
        lines += [
            f"**This run was oversubscribed**: a load average of {load[0]:.0f} on {ncpu} CPUs means each inference "
            f"got roughly 1/{load[0] / ncpu:.0f} of a core, in bursts. Latencies are several times the quiet-machine "
            "ones (for scale: ghostnet-1.0x measured 5.3 ms at 1 thread on this machine when it was quiet, issue 6),",
            "and the CI and overhead columns measure the other jobs' scheduling, not the harness. Rerun on a quiet",
            "machine to judge the 2% goals.",
            "",
        ]
    lines += [
        "| model | median ms | 95% CI ms | CI ±% | trials | p10 ms | harness ms | bare ms | overhead | same session "
        "| loop cost | session spread | drift |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["drift"]
        flags = ", ".join(k for k in ("latency_rising", "temperature_rising", "frequency_falling") if d.get(k)) or "-"
        lines.append(f"| {r['name']} | {r['median']:.3f} | {r['ci'][0]:.3f}–{r['ci'][1]:.3f} | "
                     f"{r['half_pct']:.2f}{'' if r['half_pct'] <= 2 else ' ✗'} | {_trials(r)} | {r['p10']:.3f} | "
                     f"{r['harness']:.3f} | "
                     f"{r['bare']:.3f} | {r['overhead_pct']:+.2f}%{'' if abs(r['overhead_pct']) <= 2 else ' ✗'} | "
                     f"{_same(r.get('same_session_overhead_pct'))} | "
                     f"{r['cost_pct']:.4f}% | {r['session_spread_pct']:.1f}% | {flags} |")
    lines += ["", f"CI goal met for {ok_ci} of {len(rows)} models; overhead goal met for {ok_ov} of {len(rows)} across "
              f"sessions and for {ok_same} of {sum(v is not None for v in same)} within one session."]
    for name, why in failed:
        lines.append(f"- {name}: not measured ({why})")
    done = {r["name"] for r in rows} | {n for n, _ in failed}
    rest = [n for n in zoo if n not in done]
    if rest:
        lines += ["", f"Not run in this pass (to keep it to minutes): {', '.join(rest)}. "
                  "Run `benchmarks/bench_harness.py` without `--models` for every model."]
    miss = [r for r in rows if r["half_pct"] > 2.0 or abs(r["overhead_pct"]) > 2.0]
    if miss and not load[0] <= ncpu:  # loaded, or load unknown
        lines += ["", "Where a goal is missed, the spread comes from the machine (other jobs on shared cores move",
                  "latency between and within trials), not from the harness: the loop cost stays far below 0.1%.",
                  "A quiet machine narrows the CI."]
    elif miss:
        spread = max(r["session_spread_pct"] for r in rows)
        lines += ["", "Where a goal is missed on this otherwise idle machine, the spread is between sessions: the",
                  "**session spread** column is (max - min) / median of the 10 fresh-interpreter medians taken for",
                  f"the overhead columns (up to {spread:.0f}% here) for the same file and input. Each trial lasts at",
                  f"least {DEFAULT_MIN_SECONDS:g} s, so speed swings shorter than that average out inside it",
                  "(`benchmarks/results/trial_length.md`), but the speed level is the machine's, not the session's,",
                  "and it also holds for many seconds: timed for a minute, one session switches between levels",
                  "10-13 times (`benchmarks/session_spread.py --series 60`: GhostNet 5.1-9.2 ms, EfficientFormerV2-S0",
                  "9.7-15.6 ms per second, 22-35% of seconds slow, on the 2-core Xeon VM of 2026-11-26), and over",
                  "minutes the mixture drifts (100 one-second trials of GhostNet: medians 5.5-13.4 ms,",
                  "`benchmarks/results/max_trials.md`). The harness counts this on purpose (each trial is a",
                  "fresh session, as an app launch is), so its CI narrows only while the slow level stays a steady",
                  "minority of the trials: `--trials auto` then reaches "
                  f"{TARGET_CI_PCT:g}% within its {AUTO_MAX_TRIALS} trials, otherwise it stops at {AUTO_MAX_TRIALS}",
                  "and says so; going on to 100 trials reached the target in 1 of 6 runs (max_trials.md). The",
                  "overhead column compares fresh sessions and inherits what is left of that spread after pairing.",
                  "The loop cost, the overhead the harness adds by construction, stays far below 0.1%. An idle",
                  "16-core Xeon shows the same session levels, pinned or not:",
                  "[harness-bench-other-cpu.md](harness-bench-other-cpu.md)."]
    write_text(path, "\n".join(lines) + "\n\n" + HOW)


def _trials(r: dict) -> str:
    return f"{r['trials']} ({r['default_s']:.0f} s)" if "trials" in r else "5"


def _same(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}%{'' if abs(v) <= 2 else ' ✗'}"


HOW = """## How edge-bench measures (for reading the numbers above)

- **A trial** is one fresh session (interpreter / ORT session / benchmark-binary launch): init time, the first
  (cold) inference, `--warmup` more, then `--runs` timed inferences, and more until `--min-seconds` have passed
  (default 1, as benchmark_model's `--min_secs`). Per trial: median, p10/p90, trimmed mean
  of the middle 80%, min, first and init. Benchmark binaries print aggregates only (no per-run samples); their
  median is used where the build prints one, else their average (noted in the record).
- **Across trials**: the median of the trial medians, with a 95% percentile-bootstrap CI that resamples trials
  and then runs inside each trial (`edge/devices/stats.py`), so it carries both run-to-run and trial-to-trial
  spread. Drift flags: latency rising (Theil–Sen trend > 3% over the trials), temperature rising (>= 2 C),
  a core's frequency cap falling (>= 5%).
- **Stability**: before each trial, `--cooldown S` sleeps and `--max-temp C` waits until the device (battery on
  phones, hottest CPU zone elsewhere) is below C. Runs are pinned with `taskset` (phones, boards) or CPU
  affinity (host) to the big cores, found from each core's `cpuinfo_max_freq` (`--cores big|prime|all|MASK`).
  Each trial's temperature and frequency caps are recorded beside its latency.
- **Records**: `OUT/trials.jsonl` gets one `edge.bench.trial/1` line per trial, fsync'd as soon as it ends;
  `OUT/summary.jsonl` one `edge.bench.summary/1` per run; `OUT/raw/` the binaries' output and op profiles.
  A device that drops keeps what it measured; `--resume` continues the same run.
"""


if __name__ == "__main__":
    sys.exit(main())
