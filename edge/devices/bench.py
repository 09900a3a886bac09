"""Orchestration: cool down, snapshot thermals, run a trial, append it, repeat; one job per device.

For each device (in its own thread) and each artifact: prepare (push files), fingerprint, then for each
trial: cool down (sleep ``cooldown_s`` and/or wait until the device is below ``max_temp_c``), read the
temperature and frequency caps, run the trial (warm-up + timed runs inside), append the record to
``trials.jsonl`` with fsync. A device that fails stops its own job only; what it measured stays on disk,
a partial summary is written, and ``resume=True`` continues the same run later.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge._io import write_bytes, write_text
from edge._progress import Progress
from edge.devices import results
from edge.devices.base import DEFAULT_MIN_SECONDS, Artifact, BenchSpec, Device, load_artifacts
from edge.devices.profiles import Profile, parse_cores_option, parse_spec
from edge.errors import DeviceError, EdgeError

AUTO = "auto"
# --trials auto: the least and most trials, and the CI half-width (% of the median) that ends a run early.
# As BenchmarkDotNet's default (2% relative error, 15-100 iterations), it measures until the interval is
# tight rather than for a fixed count. At least 10, so a device whose speed switches between levels (this
# project's 2-core VM: about a third of its seconds slow) is unlikely to show only one level before it stops. At
# most 30: on that VM, going on to 100 reached the 2% target in 1 of 6 runs (at trial 42) and left the others at
# 2.5-12% after minutes more each, as its speed drifted (benchmarks/results/max_trials.md).
AUTO_MIN_TRIALS = 10
AUTO_MAX_TRIALS = 30
TARGET_CI_PCT = 2.0


@dataclass
class BenchReport:
    summaries: list[dict[str, Any]]
    errors: list[tuple[str, EdgeError]] = field(default_factory=list)
    out: Path | None = None

    @property
    def trials_file(self) -> Path | None:
        return self.out / results.TRIALS_FILE if self.out else None


def open_device(spec: str | Profile, *, adb: str | None = None, adb_server: str | None = None,
                profiles_dir: str | None = None) -> Device:
    """A Device for ``host`` / ``adb[:SERIAL]`` / ``ssh://...`` / a profile name or file."""
    from edge.devices.adb import AdbDevice
    from edge.devices.host import HostDevice
    from edge.devices.ssh import SshDevice

    prof = spec if isinstance(spec, Profile) else parse_spec(spec, profiles_dir)
    if prof.transport == "adb":
        if adb:
            prof = dataclasses.replace(prof, adb=adb)
        if adb_server:
            prof = dataclasses.replace(prof, server=adb_server)
    return {"host": HostDevice, "adb": AdbDevice, "ssh": SshDevice}[prof.transport](prof)


def bench(artifacts: str | Path | Artifact | list[str | Path | Artifact],
          devices: str | Device | list[str | Device] = "host", *, runtime: str | None = None,
          delegate: str | None = None, threads: int = 1, runs: int = 50,
          warmup: int = 10, min_seconds: float = DEFAULT_MIN_SECONDS, cores: str | None = None,
          op_profile: bool = False, binary: str | None = None,
          trials: int | str = AUTO, target_ci: float = TARGET_CI_PCT, max_trials: int = AUTO_MAX_TRIALS,
          cooldown: float | None = None, max_temp: float | None = None,
          poll: float | None = None, cooldown_timeout: float | None = None, out: str | Path = "bench-results",
          resume: bool = False, require_full_delegation: bool = False, profiles_dir: str | None = None,
          adb: str | None = None, adb_server: str | None = None, progress: Progress | None = None,
          check: bool = True) -> BenchReport:
    """Benchmark artifacts on devices. Returns every summary; with ``check`` raises the first device error
    (after everything measured is on disk). ``trials="auto"`` runs ``AUTO_MIN_TRIALS`` to ``max_trials``
    trials and stops once the CI half-width is at most ``target_ci`` % of the median."""
    if runs < 1 or warmup < 0 or threads < 1 or not min_seconds >= 0:
        raise EdgeError(f"--runs {runs} --threads {threads} --warmup {warmup} --min-seconds {min_seconds}: need "
                        "--runs and --threads >= 1, --warmup and --min-seconds >= 0")
    plan = trial_plan(trials, target_ci, max_trials)
    cores = parse_cores_option(cores)
    arts: list[Artifact] = []
    for a in artifacts if isinstance(artifacts, list) else [artifacts]:
        arts.extend([a] if isinstance(a, Artifact) else load_artifacts(a))
    devs = [d if isinstance(d, Device) else open_device(d, adb=adb, adb_server=adb_server, profiles_dir=profiles_dir)
            for d in (devices if isinstance(devices, list) else [devices])]
    ids = [d.id for d in devs]
    if len(set(ids)) != len(ids):
        raise EdgeError(f"the same device is listed twice ({', '.join(ids)})", "one job per device")
    progress = progress or Progress()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = BenchSpec(runtime=runtime, delegate=delegate, threads=threads, runs=runs, warmup=warmup,
                     min_seconds=float(min_seconds), cores=cores, op_profile=op_profile, binary=binary)
    for a in arts:
        if a.manifest and a.manifest.get("status") not in (None, "ok"):
            progress.info(f"warning: {a.label} failed its numerics check at export ({a.manifest.get('status')}); "
                          "timing it anyway")
    report = BenchReport(summaries=[], out=out)
    lock = threading.Lock()

    def job(dev: Device) -> None:
        prof = dev.profile
        spec = dataclasses.replace(base, cores=base.cores or parse_cores_option(prof.cores) or "big")
        policy = {
            "cooldown_s": cooldown if cooldown is not None else prof.thermal.cooldown_s,
            "max_temp_c": max_temp if max_temp is not None else prof.thermal.max_temp_c,
            "poll_s": poll if poll is not None else prof.thermal.poll_s,
            "timeout_s": cooldown_timeout if cooldown_timeout is not None else prof.thermal.timeout_s,
        }
        try:
            with progress.stage("connect", dev.id):
                dev.open()
            fingerprint = None
            for art in arts:
                with progress.stage("prepare", f"{art.label} on {dev.id}"):
                    dev.prepare(art, spec)
                    if fingerprint is None:
                        fingerprint = dev.fingerprint()
                summary = _run_artifact(dev, fingerprint, art, spec, plan, policy, out, resume, progress,
                                        require_full_delegation)
                with lock:
                    report.summaries.append(summary)
        except EdgeError as e:
            with lock:
                report.errors.append((dev.id, e))
        finally:
            dev.close()

    if len(devs) == 1:
        job(devs[0])
    else:
        with ThreadPoolExecutor(max_workers=len(devs), thread_name_prefix="edge-bench") as pool:
            for f in [pool.submit(job, d) for d in devs]:
                f.result()
    if check and report.errors:
        for dev_id, e in report.errors[1:]:
            progress.info(f"error on {dev_id}: {e}")
        raise report.errors[0][1]
    return report


def trial_plan(trials: int | str, target_ci: float = TARGET_CI_PCT,
               max_trials: int = AUTO_MAX_TRIALS) -> dict[str, Any]:
    """How many trials: ``{"trials": K}``, or the auto rule that ``results.summarize`` judges complete."""
    if trials == AUTO:
        if max_trials < 1 or not target_ci > 0:
            raise EdgeError(f"--max-trials {max_trials} / --target-ci {target_ci}: need --max-trials >= 1 and "
                            "--target-ci > 0 (a percentage of the median, e.g. 2)")
        return {"trials": max_trials, "rule": {"min_trials": min(AUTO_MIN_TRIALS, max_trials),
                                               "max_trials": max_trials, "target_ci_pct": float(target_ci)}}
    k = int(trials) if isinstance(trials, int) or str(trials).strip().isdigit() else 0
    if k < 1:
        raise EdgeError(f"--trials {trials}: need a whole number >= 1 or `auto`",
                        "e.g. --trials 5, or --trials auto (until the 95% CI is within --target-ci %)")
    return {"trials": k, "rule": None}


def _run_artifact(dev: Device, fingerprint: dict[str, Any], art: Artifact, spec: BenchSpec, plan: dict[str, Any],
                  policy: dict[str, Any], out: Path, resume: bool, progress: Progress,
                  require_full: bool) -> dict[str, Any]:
    ident = {
        "artifact": str(art.path), "artifact_sha256": art.sha256, "model": art.model, "target": art.target,
        "precision": art.precision,
        "device": {**dev.describe(), "fingerprint": fingerprint},
        "runtime": dev.runtime_name, "delegate": spec.delegate_for(art.target), "threads": spec.threads,
        "cores": spec.cores, "runs": spec.runs, "warmup": spec.warmup, "min_seconds": spec.min_seconds,
    }
    key = results.identity_key(ident)
    run_id, kept = results.find_resumable(out, key) if resume else (None, [])
    if resume and run_id is None:
        progress.info(f"[{dev.id}] nothing to resume for {art.label}; starting a new run")
    run_id = run_id or results.new_run_id()
    done = {r["trial"] for r in kept}
    most, rule = plan["trials"], plan["rule"]
    of = f"{'<=' if rule else ''}{most}"
    if kept:
        progress.info(f"[{dev.id}] resuming run {run_id}: {len(kept)} of {of} trials already measured")
    records = list(kept)

    def summary_now() -> dict[str, Any]:
        return results.summarize(sorted(records, key=lambda r: r["trial"]), requested=most, rule=rule)

    def judged() -> dict[str, Any] | None:
        """Under --trials auto, the summary once ``min_trials`` are in: the rule says whether it is complete."""
        return summary_now() if rule and len(records) >= rule["min_trials"] else None

    auto = judged()  # a resumed run may be done already
    try:
        for k in range(1, most + 1):
            if auto and auto["complete"]:
                break  # --trials auto: the CI is tight enough
            if k in done:
                continue
            cool = _cool_down(dev, policy, progress)
            th = cool.pop("thermal")
            m = dev.run_trial(art, spec)
            rec: dict[str, Any] = {"schema": results.TRIAL_SCHEMA, "run_id": run_id, "trial": k, **ident,
                                   "cpu_mask": m.cpu_mask, "latency_ms": m.latency_ms, "samples_ms": m.samples_ms,
                                   "measured_runs": m.runs, "peak_memory_mb": m.peak_memory_mb,
                                   "delegate_coverage": m.delegate_coverage, "temperature_c": th.temperature_c,
                                   "max_freq_khz": th.max_freq_khz, "thermal_zones_c": th.zones or None,
                                   "battery_c": th.battery_c, "cooldown": cool, "op_profile": m.op_profile,
                                   "notes": m.notes, "timestamp": results.now()}
            raw = _save_raw(out, run_id, dev.id, art, k, m)
            if raw:
                rec["raw"] = raw
            results.append(out / results.TRIALS_FILE, rec)
            records.append(rec)
            lat = m.latency_ms
            temp = f"  {th.temperature_c:.1f} C" if th.temperature_c is not None else ""
            p10 = f"  p10 {lat['p10']:.3f}" if lat.get("p10") is not None else ""
            auto = judged()
            ci = f"  CI ±{auto['ci95_half_width_pct']:.1f}% (target {rule['target_ci_pct']:g}%)" if auto else ""
            progress.info(f"[{dev.id}] {art.label} trial {k}/{of}: median {lat['median']:.3f} ms{p10}{temp}{ci}")
            if require_full:
                _check_full_delegation(m, dev.id)
    except EdgeError as e:
        if records:
            results.append(out / results.SUMMARY_FILE, summary_now())
        if isinstance(e, DeviceError):
            n = len(records)
            raise DeviceError(f"{e.message}; {n} of {of} trial(s) kept in {out / results.TRIALS_FILE}",
                              e.hint or "rerun the same command with --resume to continue") from e
        raise
    summary = auto or summary_now()
    summary["device"] = {**ident["device"]}
    if rule and not summary["trials_rule"]["target_met"]:
        progress.info(f"[{dev.id}] {art.label}: 95% CI still ±{summary['ci95_half_width_pct']:.1f}% of the median "
                      f"after {len(records)} trials (target {rule['target_ci_pct']:g}%): the device's speed "
                      "moves between trials; see the trial medians, or raise --max-trials")
    results.append(out / results.SUMMARY_FILE, summary)
    return summary


def _check_full_delegation(m: Any, dev_id: str) -> None:
    cov = m.delegate_coverage
    if cov is None:
        raise EdgeError(f"--require-full-delegation: {m.runtime} on {dev_id} reports no delegate coverage",
                        "use a runtime that reports it (benchmark_model, LiteRT with XNNPACK, ORT with --op-profile)")
    if cov.get("full") is False or (cov.get("total") is not None and (cov.get("delegated") or 0) < cov["total"]):
        d, t = cov.get("delegated"), cov.get("total")
        what = f"took {d} of {t} nodes; {t - d} fall back to the CPU" if t is not None else "is not fully delegated"
        if cov.get("fallback_ops"):
            what += " (" + ", ".join(f"{op} x{n}" for op, n in cov["fallback_ops"].items()) + ")"
        raise EdgeError(f"--require-full-delegation: {m.delegate} on {dev_id} {what}",
                        "see the op profile (--op-profile) for the ops that fell back")


def _cool_down(dev: Device, policy: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Sleep and/or wait until cool enough; returns what happened plus the final thermal snapshot."""
    t0 = time.monotonic()
    if policy["cooldown_s"]:
        time.sleep(float(policy["cooldown_s"]))
    th = dev.thermal()
    start = th.temperature_c
    limit = policy["max_temp_c"]
    timed_out = False
    if limit is not None and th.temperature_c is None:
        if not policy.get("warned"):
            progress.info(f"[{dev.id}] no temperature sensor; --max-temp is ignored")
            policy["warned"] = True
    elif limit is not None:
        while th.temperature_c > limit:
            if time.monotonic() - t0 > policy["timeout_s"]:
                timed_out = True
                progress.info(f"[{dev.id}] still {th.temperature_c:.1f} C after {policy['timeout_s']:.0f} s of "
                              f"cool-down (limit {limit} C); measuring anyway")
                break
            time.sleep(float(policy["poll_s"]))
            th = dev.thermal()
    return {"waited_s": round(time.monotonic() - t0, 3), "start_temp_c": start, "max_temp_c": limit,
            "timed_out": timed_out, "thermal": th}


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")[:80] or "x"


def _save_raw(out: Path, run_id: str, dev_id: str, art: Artifact, k: int, m: Any) -> str | None:
    if not m.raw_output and not m.raw_files:
        return None
    d = out / "raw" / run_id / _safe(dev_id)
    stem = f"{_safe(art.path.stem)}-trial{k}"
    if m.raw_output:
        write_text(d / f"{stem}.txt", m.raw_output)
    for name, data in m.raw_files.items():
        write_bytes(d / f"{stem}-{_safe(name)}", data)
    return str((d / stem).relative_to(out))


# --------------------------------------------------------------------------------------------- the table
def format_table(summaries: list[dict[str, Any]]) -> str:
    head = ("device", "artifact", "runtime", "thr", "trials", "median ms", "95% CI", "±%", "p10", "p90", "peak MB",
            "delegated", "drift")
    rows = [head]
    for s in summaries:
        cov = s.get("delegate_coverage") or {}
        d = s.get("drift") or {}
        flags = [n for n, k in (("latency↑", "latency_rising"), ("temp↑", "temperature_rising"),
                                ("freq↓", "frequency_falling")) if d.get(k)]
        art = f"{s['model']} {s['target']}-{s.get('precision') or '?'}" if s.get("model") else Path(s["artifact"]).name
        lo, hi = s["ci95_ms"]
        rows.append((
            (s.get("device") or {}).get("id", "?"), art, f"{s['runtime']}/{s.get('delegate') or '-'}",
            str(s.get("threads")), f"{s['trials']}" + ("" if s.get("complete", True) else f"/{s['trials_requested']}"),
            f"{s['median_ms']:.3f}", f"{lo:.3f}–{hi:.3f}",
            f"{s['ci95_half_width_pct']:.1f}" if s.get("ci95_half_width_pct") is not None else "-",
            _f(s.get("p10_ms")), _f(s.get("p90_ms")), _f(s.get("peak_memory_mb"), 1),
            f"{cov.get('delegated')}/{cov.get('total')}" if cov.get("total") is not None else "-",
            ",".join(flags) or "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _f(v: float | None, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def print_table(summaries: list[dict[str, Any]], stream: Any = None) -> None:
    print(format_table(summaries), file=stream or sys.stdout)
