"""`edge check`: a CI gate over a matrix of models, targets and precisions.

For every case in the config (``edge-check.toml``) it runs, in order:

1. **export**: the real pipeline (``edge.export.export``); a converter error fails the case. Cases that differ
   only in target share one call (see ``_export_groups``);
2. **numerics**: the export's own gate (``manifest.numerics.passed``);
3. **size**: the artifact against ``max_size_mb``;
4. **fidelity**: SQNR and top-1 agreement against ``min_sqnr_db`` / ``min_top1_agree``;
5. **latency**: host latency through the harness (``edge.devices.bench``) against the stored baseline.

How latency is judged (one noisy run must not fail; a real 10% regression must)
-------------------------------------------------------------------------------
Each measurement is K trials of N runs. Its point estimate is the median of the trial medians, and its 95%
interval is the harness's hierarchical bootstrap (trials, then samples inside each trial): exactly what the
harness writes in its summary. With regression threshold ``r`` (default 0.10) a measurement *shows a regression*
when both hold:

* **it is large enough**: the new median exceeds ``baseline_median * (1 + r/2)``. Halfway to ``r`` is the
  decision point with equal margin on both sides: a real ``r`` slowdown sits ``r/2`` above it, and an unchanged
  network ``r/2`` below it, so the point estimate's own noise has to be ``r/2`` to flip either one;
* **it is not noise**: the new interval lies wholly above the baseline's (``new_lo > base_hi``).

A measurement that is large enough but whose intervals overlap is *inconclusive*. Either way, the gate
**re-measures once** with fresh trials and fails only if that second, independent measurement also shows a
regression. A noisy neighbour during one run, a throttled trial or a single outlier therefore cannot fail a
build on its own, while a real slowdown shows in both runs. Intervals too wide to resolve ``r`` (a very noisy
machine) pass with a warning that says so: the gate does not guess.

The baseline also records the host (CPU model and usable cores) and the settings. A baseline from another CPU
or other settings is not comparable: latency is then skipped with that reason, never judged.
"""

from __future__ import annotations

import json
import os
import sys
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.devices.base import DEFAULT_MIN_SECONDS
from edge.errors import EdgeError

BASELINE_SCHEMA = "edge.check.baseline/1"
DEFAULT_CONFIG = "edge-check.toml"
DEFAULT_BASELINE = "edge-check-baseline.json"

PASS, FAIL, SKIP, WARN = "pass", "fail", "skip", "warn"
STEPS = ("export", "numerics", "size", "fidelity", "latency")

_CASE_KEYS = {"model", "name", "targets", "precisions", "img_size", "max_size_mb", "min_sqnr_db", "min_top1_agree",
              "runs", "warmup", "min_seconds", "trials", "threads", "regression", "latency", "checkpoint", "options"}
_DEFAULT_KEYS = _CASE_KEYS - {"model", "name", "targets", "precisions", "checkpoint", "options"} | {"out", "baseline"}


# ------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Case:
    """One model / target / precision to gate."""

    model: str  # zoo name or path/file.py:factory
    target: str
    precision: str
    name: str | None = None  # export name (OUT/<name>/...); defaults to the model's
    img_size: int | None = None
    checkpoint: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    max_size_mb: float | None = None
    min_sqnr_db: float | None = None
    min_top1_agree: float | None = None
    runs: int = 30
    warmup: int = 5
    min_seconds: float = DEFAULT_MIN_SECONDS
    trials: int = 3
    threads: int = 1
    regression: float = 0.10
    latency: bool = True

    @property
    def id(self) -> str:
        return f"{self.name or self.model}/{self.target}-{self.precision}"

    def settings(self) -> dict[str, Any]:
        return {"runs": self.runs, "warmup": self.warmup, "min_seconds": self.min_seconds, "trials": self.trials,
                "threads": self.threads}


@dataclass
class CheckConfig:
    cases: list[Case]
    out: Path
    baseline: Path
    source: Path | None = None


def _per_precision(value: Any, precision: str, key: str, where: str) -> float | None:
    """A budget is a number for every precision, or a table keyed by precision."""
    if value is None:
        return None
    if isinstance(value, dict):
        bad = sorted(set(value) - {"fp32", "fp16", "int8", "int8w", "w8a16", "int8dyn"})
        if bad:
            raise EdgeError(f"{where}: {key} has unknown precision(s) {bad}", "keys are precisions such as fp32, int8")
        v = value.get(precision)
        return None if v is None else float(v)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EdgeError(f"{where}: {key} must be a number or a table by precision, not {value!r}")
    return float(value)


def load_config(path: str | os.PathLike[str] = DEFAULT_CONFIG) -> CheckConfig:
    """Read and validate ``edge-check.toml``; paths in it are relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise EdgeError(f"check config {str(path)!r} not found",
                        "create edge-check.toml (see docs/ci.md) or pass --config")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise EdgeError(f"{path} is not valid TOML: {e}") from None
    return config_from_dict(data, base=path.parent, source=path)


def config_from_dict(data: dict[str, Any], base: Path = Path("."), source: Path | None = None) -> CheckConfig:
    from edge.export.context import PRECISIONS, TARGET_NAMES

    where = str(source or "check config")
    unknown_top = sorted(set(data) - {"defaults", "check"})
    if unknown_top:
        raise EdgeError(f"{where}: unknown section(s) {unknown_top}", "use [defaults] and [[check]]")
    defaults = dict(data.get("defaults") or {})
    bad = sorted(set(defaults) - _DEFAULT_KEYS)
    if bad:
        raise EdgeError(f"{where}: unknown key(s) in [defaults]: {bad}", f"known: {sorted(_DEFAULT_KEYS)}")
    entries = data.get("check") or []
    if not entries:
        raise EdgeError(f"{where}: no [[check]] entries", "add one per model: model, targets, precisions")
    cases: list[Case] = []
    for i, e in enumerate(entries, start=1):
        w = f"{where} [[check]] #{i}"
        bad = sorted(set(e) - _CASE_KEYS)
        if bad:
            raise EdgeError(f"{w}: unknown key(s) {bad}", f"known: {sorted(_CASE_KEYS)}")
        if not e.get("model"):
            raise EdgeError(f"{w}: `model` is missing", "a zoo name or path/file.py:factory")
        merged = {**{k: v for k, v in defaults.items() if k not in ("out", "baseline")}, **e}
        targets = merged.get("targets", ["onnx", "tflite", "coreml"])
        precisions = merged.get("precisions", ["fp32"])
        for t in targets:
            if t not in TARGET_NAMES:
                raise EdgeError(f"{w}: unknown target {t!r}", f"choose from {', '.join(TARGET_NAMES)}")
        for p in precisions:
            if p not in PRECISIONS:
                raise EdgeError(f"{w}: unknown precision {p!r}", f"choose from {', '.join(PRECISIONS)}")
        model = str(merged["model"])
        if ".py:" in model and not Path(model.split(":", 1)[0]).is_absolute():
            model = str(base / model)
        for t in targets:
            for p in precisions:
                try:
                    cases.append(Case(
                        model=model, target=t, precision=p, name=merged.get("name"), img_size=merged.get("img_size"),
                        checkpoint=str(base / merged["checkpoint"]) if merged.get("checkpoint") else None,
                        options=tuple(sorted((merged.get("options") or {}).items())),
                        max_size_mb=_per_precision(merged.get("max_size_mb"), p, "max_size_mb", w),
                        min_sqnr_db=_per_precision(merged.get("min_sqnr_db"), p, "min_sqnr_db", w),
                        min_top1_agree=_per_precision(merged.get("min_top1_agree"), p, "min_top1_agree", w),
                        runs=int(merged.get("runs", 30)), warmup=int(merged.get("warmup", 5)),
                        min_seconds=float(merged.get("min_seconds", DEFAULT_MIN_SECONDS)),
                        trials=int(merged.get("trials", 3)), threads=int(merged.get("threads", 1)),
                        regression=float(merged.get("regression", 0.10)), latency=bool(merged.get("latency", True))))
                except (TypeError, ValueError) as ex:
                    raise EdgeError(f"{w}: {ex}") from None
    for c in cases:
        if (c.trials < 1 or c.runs < 1 or c.warmup < 0 or c.threads < 1 or not c.min_seconds >= 0
                or not 0 < c.regression < 10):
            raise EdgeError(f"{where}: case {c.id}: runs, trials, threads must be >= 1, warmup, min_seconds >= 0, "
                            "0 < regression < 10")
    ids = [c.id for c in cases]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise EdgeError(f"{where}: case(s) listed twice: {dup}", "give each [[check]] its own model or name")
    return CheckConfig(cases, out=base / str(defaults.get("out", "out/check")),
                       baseline=base / str(defaults.get("baseline", DEFAULT_BASELINE)), source=source)


# ---------------------------------------------------------------------------------------------- judging


@dataclass
class LatencyStats:
    median_ms: float
    ci95_ms: tuple[float, float]
    trial_medians_ms: list[float]

    @classmethod
    def from_trials(cls, trials: Sequence[dict[str, Any]]) -> LatencyStats:
        from edge.claims.results import latency_stats

        m, lo, hi = latency_stats(trials)
        return cls(m, (lo, hi), [float(t["latency_ms"]["median"]) for t in trials])

    @classmethod
    def from_baseline(cls, rec: dict[str, Any]) -> LatencyStats:
        lo, hi = rec["ci95_ms"]
        return cls(float(rec["median_ms"]), (float(lo), float(hi)), list(rec.get("trial_medians_ms") or []))


@dataclass
class Judgement:
    verdict: str  # "ok" | "regression" | "inconclusive"
    change: float  # new median / baseline median - 1
    message: str


def judge_latency(baseline: LatencyStats, new: LatencyStats, regression: float = 0.10) -> Judgement:
    """One measurement against the baseline (the rule in this module's docstring)."""
    b, m = baseline.median_ms, new.median_ms
    change = m / b - 1.0
    decision = b * (1.0 + regression / 2.0)
    ci = f"median {m:.3f} ms [{new.ci95_ms[0]:.3f}, {new.ci95_ms[1]:.3f}] vs baseline {b:.3f} ms " \
         f"[{baseline.ci95_ms[0]:.3f}, {baseline.ci95_ms[1]:.3f}] ({change:+.1%})"
    if m <= decision:
        return Judgement("ok", change, ci)
    if new.ci95_ms[0] > baseline.ci95_ms[1]:
        return Judgement("regression", change, f"{ci}: slower than the {regression:.0%} gate's decision point "
                                               f"({decision:.3f} ms) and outside the baseline's interval")
    return Judgement("inconclusive", change, f"{ci}: past the decision point ({decision:.3f} ms) but the intervals "
                                             "overlap")


MeasureFn = Callable[["Case", Path], list[dict[str, Any]]]


def decide_latency(case: Case, base_rec: dict[str, Any], measure: Callable[[], list[dict[str, Any]]],
                   first: list[dict[str, Any]]) -> tuple[str, str, list[dict[str, Any]]]:
    """Judge ``first``; on a suspected regression re-measure once and fail only if that confirms it.

    Returns (status, message, trials used for the reported numbers).
    """
    base = LatencyStats.from_baseline(base_rec)
    j1 = judge_latency(base, LatencyStats.from_trials(first), case.regression)
    if j1.verdict == "ok":
        return PASS, j1.message, first
    second = measure()
    j2 = judge_latency(base, LatencyStats.from_trials(second), case.regression)
    if j2.verdict == "regression":
        return FAIL, f"latency regression confirmed by a re-measurement: {j2.message} (first run: {j1.change:+.1%})", \
            second
    if j2.verdict == "inconclusive":
        return WARN, f"possible slowdown, too noisy to tell (re-measured twice): {j2.message}", second
    return PASS, f"first run looked {j1.verdict} ({j1.change:+.1%}); the re-measurement did not: {j2.message}", second


# --------------------------------------------------------------------------------------------- running


@dataclass
class Step:
    name: str
    status: str
    message: str = ""
    seconds: float = 0.0
    change: float | None = None  # latency: reported median / baseline median - 1


@dataclass
class CaseResult:
    case: Case
    steps: list[Step] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    export_dir: Path | None = None

    @property
    def failed(self) -> bool:
        return any(s.status == FAIL for s in self.steps)

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)


@dataclass
class CheckReport:
    results: list[CaseResult]
    baseline_path: Path
    baseline_written: bool = False
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.results)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def host_identity(trials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What makes latencies comparable: the CPU, the kernel-relevant features it offers (a VM's generic model name
    hides whether it has AMX or VNNI), and how many cores the process may use."""
    fp = ((trials[0].get("device") or {}).get("fingerprint") or {}) if trials else {}
    return {"cpu_model": fp.get("cpu_model"), "usable_cpus": fp.get("usable_cpus"), "machine": fp.get("machine"),
            "cpu_features": fp.get("cpu_features")}


def bench_on_host(case: Case, export_dir: Path, out: Path) -> list[dict[str, Any]]:
    """Measure one export on the host with the harness; the trials it appended for this run."""
    from edge._progress import Progress
    from edge.devices import bench
    from edge.devices.results import load_trials

    rep = bench(str(export_dir), devices="host", threads=case.threads, runs=case.runs, warmup=case.warmup,
                min_seconds=case.min_seconds, trials=case.trials, out=out, progress=Progress(quiet=True))
    run_ids = {s.get("run_id") for s in rep.summaries}
    return [t for t in load_trials(out) if t.get("run_id") in run_ids]


def check(config: str | os.PathLike[str] = DEFAULT_CONFIG, *, baseline: str | os.PathLike[str] | None = None,
          update_baseline: bool = False, junit: str | os.PathLike[str] | None = None,
          markdown: str | os.PathLike[str] | None = None, only: Sequence[str] = ()) -> CheckReport:
    """`edge check` as a Python call: load the config, keep the cases whose id contains any of ``only``, run."""
    cfg = load_config(config)
    if only:
        cfg.cases = [c for c in cfg.cases if any(o in c.id for o in only)]
        if not cfg.cases:
            raise EdgeError(f"--only {' '.join(only)} matches no case in {config}",
                            "case ids look like model/target-precision")
    return run_check(cfg, baseline=baseline, update_baseline=update_baseline, junit=junit, markdown=markdown)


def run_check(config: CheckConfig, *, baseline: str | os.PathLike[str] | None = None, update_baseline: bool = False,
              junit: str | os.PathLike[str] | None = None, markdown: str | os.PathLike[str] | None = None,
              measure: MeasureFn | None = None, log: Callable[[str], None] | None = None) -> CheckReport:
    """Run every case; write JUnit / Markdown / the baseline as asked. Never raises for a failing case."""
    t0 = time.perf_counter()
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    baseline_path = Path(baseline) if baseline else config.baseline
    base = read_baseline(baseline_path)
    bench_out = config.out / "_bench"
    measure = measure or (lambda case, d: bench_on_host(case, d, bench_out))
    results = []
    for group in _export_groups(config.cases):
        for r in _export_group(group, config.out, log):
            if r.manifest is not None:
                _judge_case(r, base, measure, update_baseline, log)
            marks = " ".join(f"{s.name}:{s.status}" for s in r.steps)
            log(f"[{r.case.id}] {'FAIL' if r.failed else 'ok'}  {marks}")
            for s in r.steps:
                if s.status in (FAIL, WARN):
                    log(f"    {s.name}: {s.message}")
            results.append(r)
    report = CheckReport(results, baseline_path, seconds=time.perf_counter() - t0)
    if update_baseline:
        write_baseline(baseline_path, base, results)
        report.baseline_written = True
        log(f"baseline written: {baseline_path}")
    if junit:
        from edge._io import write_text

        write_text(junit, render_junit(report))
    if markdown:
        from edge._io import write_text

        write_text(markdown, render_markdown(report))
    return report


def _export_key(case: Case) -> tuple[Any, ...]:
    return case.model, case.precision, case.name, case.img_size, case.checkpoint, case.options


def _export_groups(cases: Sequence[Case]) -> list[list[Case]]:
    """Runs of consecutive cases that differ only in target: one ``export`` call writes all of them, as
    ``--target all`` does (one network load and trace; TFLite converts in a second process beside the others)."""
    groups: list[list[Case]] = []
    for case in cases:
        if groups and _export_key(groups[-1][0]) == _export_key(case):
            groups[-1].append(case)
        else:
            groups.append([case])
    return groups


def _export_group(group: Sequence[Case], out: Path, log: Callable[[str], None]) -> list[CaseResult]:
    """Export every case of one group; each result holds its export step (and its manifest when written)."""
    from edge.export import export

    first = group[0]
    targets = [c.target for c in group]
    log(f"[{first.name or first.model} {first.precision}] exporting {', '.join(targets)}")
    t = time.perf_counter()
    errors: dict[str, str] = {}
    try:
        res = export(first.model, target=targets, precision=first.precision, out=out, name=first.name,
                     img_size=first.img_size, checkpoint=first.checkpoint, options=dict(first.options) or None,
                     strict=False, progress=_quiet_progress())
    except Exception as e:
        per_target = getattr(e, "errors", None) or ([e] if getattr(e, "target", None) else [])
        if len(group) > 1 and not per_target:
            # an error about the whole call (one target refusing the precision, say): judge each case alone
            return [r for case in group for r in _export_group([case], out, log)]
        if not isinstance(e, EdgeError):  # a converter crash is a failed conversion, not a crash of the gate
            e = EdgeError(f"{type(e).__name__}: {e}")
        res = list(getattr(e, "results", []))
        for err in per_target or [e]:
            errors[getattr(err, "target", None) or ""] = f"{err}"
    seconds = time.perf_counter() - t
    written = {er.target: er for er in res}
    together = f"; {len(group)} targets exported together in {seconds:.1f}s" if len(group) > 1 else ""
    results = []
    for case in group:
        r = CaseResult(case)
        er = written.get(case.target)
        if er is None:
            why = errors.get(case.target) or errors.get("") or "; ".join(errors.values()) or "no artifact written"
            r.steps.append(Step("export", FAIL, why, seconds / len(group)))
            r.steps += [Step(s, SKIP, "export failed") for s in STEPS[1:]]
        else:
            r.manifest, r.export_dir = er.manifest, er.path
            r.steps.append(Step("export", PASS, f"{er.artifact} in {seconds:.1f}s{together}", seconds / len(group)))
        results.append(r)
    return results


def _judge_case(r: CaseResult, base: dict[str, Any], measure: MeasureFn, update_baseline: bool,
                log: Callable[[str], None]) -> None:
    """Steps 2-5 for one written artifact."""
    case, man = r.case, r.manifest or {}
    num = man.get("numerics") or {}
    if num.get("passed", False):
        r.steps.append(Step("numerics", PASS, f"{num.get('runtime', '')}: {_worst_output(num)}"))
    else:
        from edge.export.numerics import describe_failures

        fails = describe_failures(num.get("failures") or [])
        r.steps.append(Step("numerics", FAIL,
                            f"numerics gate failed ({num.get('runtime', '?')}): {fails or 'see the manifest'}"))
    size_mb = (man.get("artifact") or {}).get("size_bytes", 0) / 1e6
    if case.max_size_mb is None:
        r.steps.append(Step("size", SKIP, f"{size_mb:.2f} MB; no budget set"))
    elif size_mb <= case.max_size_mb:
        r.steps.append(Step("size", PASS, f"{size_mb:.2f} MB <= {case.max_size_mb:g} MB"))
    else:
        r.steps.append(Step("size", FAIL, f"{size_mb:.2f} MB exceeds the budget of {case.max_size_mb:g} MB "
                                          f"(+{size_mb / case.max_size_mb - 1:.0%})"))
    r.steps.append(_fidelity_step(case, man))
    r.steps.append(_latency_step(case, r, base, measure, update_baseline, log))


def _quiet_progress() -> Any:
    from edge._progress import Progress

    return Progress(quiet=True)


def _worst_output(num: dict[str, Any]) -> str:
    parts = []
    for name, o in (num.get("outputs") or {}).items():
        if isinstance(o, dict):
            bits = [f"{k} {o[k]:.4g}" for k in ("max_abs", "cosine", "sqnr_db", "top1_agree") if o.get(k) is not None]
            parts.append(f"{name}: " + ", ".join(bits))
    return "; ".join(parts)


def _fidelity_step(case: Case, man: dict[str, Any]) -> Step:
    if case.min_sqnr_db is None and case.min_top1_agree is None:
        return Step("fidelity", SKIP, "no budget set")
    from edge.claims.results import fidelity_of

    f = fidelity_of(man)
    problems, seen = [], []
    for key, floor, unit in (("sqnr_db", case.min_sqnr_db, " dB"), ("top1_agree", case.min_top1_agree, "")):
        if floor is None:
            continue
        v = f[key]
        if v is None:
            problems.append(f"{key} not reported by the export")
        elif v < floor:
            problems.append(f"{key} {v:.4g}{unit} < {floor:g}{unit}")
        else:
            seen.append(f"{key} {v:.4g}{unit} >= {floor:g}{unit}")
    if problems:
        return Step("fidelity", FAIL, "; ".join(problems + seen))
    return Step("fidelity", PASS, "; ".join(seen))


def _latency_step(case: Case, r: CaseResult, base: dict[str, Any], measure: MeasureFn, update_baseline: bool,
                  log: Callable[[str], None]) -> Step:
    if not case.latency:
        return Step("latency", SKIP, "latency = false for this case")
    if r.step("numerics") and r.step("numerics").status == FAIL:  # type: ignore[union-attr]
        return Step("latency", SKIP, "not timed: the artifact failed its numerics gate")
    if case.target == "coreml" and sys.platform != "darwin":
        return Step("latency", SKIP, "Core ML executes only on macOS; checked on Linux by the MIL interpreter only")
    assert r.export_dir is not None
    t = time.perf_counter()
    log(f"[{case.id}] timing on the host ({case.trials} trials x {case.runs} runs and {case.min_seconds:g} s)")
    try:
        r.trials = measure(case, r.export_dir)
    except EdgeError as e:
        return Step("latency", FAIL, f"benchmark failed: {e}", time.perf_counter() - t)
    if not r.trials:
        return Step("latency", FAIL, "the benchmark produced no trials", time.perf_counter() - t)
    st = LatencyStats.from_trials(r.trials)
    now = f"median {st.median_ms:.3f} ms [{st.ci95_ms[0]:.3f}, {st.ci95_ms[1]:.3f}]"
    if update_baseline:
        return Step("latency", PASS, f"{now}; recorded as the new baseline", time.perf_counter() - t)
    rec = (base.get("cases") or {}).get(case.id)
    if rec is None:
        return Step("latency", SKIP, f"{now}; no baseline for this case (run edge check --update-baseline)",
                    time.perf_counter() - t)
    why = _incomparable(case, rec, base, r.trials)
    if why:
        return Step("latency", SKIP, f"{now}; not compared: {why}", time.perf_counter() - t)
    log(f"[{case.id}] judging against the baseline")
    status, msg, used = decide_latency(case, rec, lambda: measure(case, r.export_dir), r.trials)  # type: ignore[arg-type]
    r.trials = used
    change = LatencyStats.from_trials(used).median_ms / float(rec["median_ms"]) - 1.0
    return Step("latency", status, msg, time.perf_counter() - t, change=change)


def _incomparable(case: Case, rec: dict[str, Any], base: dict[str, Any], trials: list[dict[str, Any]]) -> str:
    have = host_identity(trials)
    want = base.get("host") or {}
    for k in ("cpu_model", "usable_cpus", "cpu_features"):
        if want.get(k) is not None and have.get(k) is not None and want.get(k) != have.get(k):
            return (f"the baseline was recorded on another host ({k} {want.get(k)!r}, this one {have.get(k)!r}); "
                    "record one on this runner with --update-baseline")
    settings = rec.get("settings") or {}
    if settings and settings.get("threads") != case.threads:
        return f"the baseline used {settings.get('threads')} thread(s), this case {case.threads}"
    return ""


# -------------------------------------------------------------------------------------------- baseline


def read_baseline(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        return {"schema": BASELINE_SCHEMA, "cases": {}}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EdgeError(f"baseline {str(p)!r} cannot be read: {e}", "fix it, or rewrite it with --update-baseline") \
            from None
    if data.get("schema") != BASELINE_SCHEMA:
        raise EdgeError(f"baseline {str(p)!r} is not an {BASELINE_SCHEMA} file",
                        "rewrite it with edge check --update-baseline")
    return data


def write_baseline(path: Path, old: dict[str, Any], results: Sequence[CaseResult]) -> None:
    """Merge this run's latencies into the baseline and write it atomically (temp file, then rename)."""
    from edge._io import write_json

    cases = dict(old.get("cases") or {})
    host = dict(old.get("host") or {})
    measured = [r for r in results if r.trials and r.step("latency") is not None
                and r.step("latency").status in (PASS, WARN, SKIP)]  # type: ignore[union-attr]
    if measured:
        new_host = host_identity(measured[0].trials)
        if host and any(host.get(k) != new_host.get(k) for k in ("cpu_model", "usable_cpus")):
            cases = {}  # numbers from another CPU must not sit under this CPU's identity
        host = new_host
    for r in measured:
        st = LatencyStats.from_trials(r.trials)
        cases[r.case.id] = {
            "median_ms": round(st.median_ms, 5), "ci95_ms": [round(st.ci95_ms[0], 5), round(st.ci95_ms[1], 5)],
            "trial_medians_ms": [round(x, 5) for x in st.trial_medians_ms], "settings": r.case.settings(),
            "artifact_sha256": (r.manifest or {}).get("artifact", {}).get("sha256"),
            "size_bytes": (r.manifest or {}).get("artifact", {}).get("size_bytes"),
            "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    tools = {}
    for r in results:
        tools.update((r.manifest or {}).get("tools") or {})
    write_json(path, {"schema": BASELINE_SCHEMA, "host": host, "tools": tools or old.get("tools", {}),
                      "updated": datetime.now(UTC).isoformat(timespec="seconds"), "cases": dict(sorted(cases.items()))})


# ---------------------------------------------------------------------------------------------- output


def render_junit(report: CheckReport) -> str:
    """JUnit XML: one <testcase> per case and step, failures with their message."""
    n = sum(len(r.steps) for r in report.results)
    fails = sum(s.status == FAIL for r in report.results for s in r.steps)
    skips = sum(s.status == SKIP for r in report.results for s in r.steps)
    root = ET.Element("testsuites", name="edge check", tests=str(n), failures=str(fails), skipped=str(skips),
                      time=f"{report.seconds:.3f}")
    for r in report.results:
        suite = ET.SubElement(root, "testsuite", name=r.case.id, tests=str(len(r.steps)),
                              failures=str(sum(s.status == FAIL for s in r.steps)),
                              skipped=str(sum(s.status == SKIP for s in r.steps)),
                              time=f"{sum(s.seconds for s in r.steps):.3f}")
        for s in r.steps:
            tc = ET.SubElement(suite, "testcase", classname=f"edge-check.{r.case.id}", name=s.name,
                               time=f"{s.seconds:.3f}")
            if s.status == FAIL:
                ET.SubElement(tc, "failure", message=s.message[:500], type=s.name).text = s.message
            elif s.status == SKIP:
                ET.SubElement(tc, "skipped", message=s.message[:500])
            elif s.message:
                ET.SubElement(tc, "system-out").text = s.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


_ICON = {PASS: "✅", FAIL: "❌", SKIP: "➖", WARN: "⚠️"}


def render_markdown(report: CheckReport) -> str:
    """A summary fit for a pull-request comment: a status line, one table row per case, then the failures."""
    failed = [r for r in report.results if r.failed]
    n = len(report.results)
    head = (f"### edge check: ❌ {len(failed)} of {n} case(s) failed" if failed
            else f"### edge check: ✅ all {n} case(s) passed")
    lines = [head, "", "| case | " + " | ".join(STEPS) + " | MB | host median (change) |",
             "|---" * (len(STEPS) + 3) + "|"]
    for r in report.results:
        cells = []
        for name in STEPS:
            s = r.step(name)
            cells.append(_ICON.get(s.status, "") if s else "")
        size = (r.manifest or {}).get("artifact", {}).get("size_bytes")
        lat = ""
        if r.trials:
            st = LatencyStats.from_trials(r.trials)
            lat = f"{st.median_ms:.2f} ms"
            ls = r.step("latency")
            if ls and ls.change is not None:
                lat += f" ({ls.change:+.1%})"
        lines.append(f"| `{r.case.id}` | " + " | ".join(cells) +
                     f" | {'' if size is None else f'{size / 1e6:.2f} MB'} | {lat} |")
    problems = [(r, s) for r in report.results for s in r.steps if s.status in (FAIL, WARN)]
    if problems:
        lines += ["", "<details open><summary>Failures and warnings</summary>", ""]
        for r, s in problems:
            lines.append(f"- {_ICON[s.status]} `{r.case.id}` **{s.name}**: {s.message.replace(chr(10), ' ')}")
        lines += ["", "</details>"]
    lines += ["", f"<sub>{_ICON[PASS]} pass · {_ICON[FAIL]} fail · {_ICON[WARN]} warning · {_ICON[SKIP]} skipped. "
                  f"Latency: host, judged against `{report.baseline_path.name}` from 95% confidence intervals with "
                  "one re-measurement before failing.</sub>"]
    return "\n".join(lines) + "\n"
