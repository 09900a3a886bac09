"""Read what the harness and the exporter wrote, as plain JSON data (never importing either).

* ``edge.bench.trial/1`` records (JSON lines) are grouped into :class:`Measurement` s, one per benchmark run of
  one artifact on one device with one runtime setting;
* ``edge.bench.summary/1`` records stand in for trials when only a summary was kept;
* ``edge.manifest/1`` files give sizes, fidelity and op histograms per export;
* ``edge.eval/1`` records give measured top-1 (the only way a top-1 claim becomes measurable).

The latency statistics here (median of trial medians, hierarchical bootstrap CI) are what claims, the report
and ``edge check`` judge on, so all three agree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

TRIAL_SCHEMA = "edge.bench.trial/1"
SUMMARY_SCHEMA = "edge.bench.summary/1"
MANIFEST_SCHEMA = "edge.manifest/1"
EVAL_SCHEMA = "edge.eval/1"


# ------------------------------------------------------------------------------------------------ statistics


def latency_stats(trials: Sequence[dict[str, Any]]) -> tuple[float, float, float]:
    """(median, ci95_lo, ci95_hi) in ms from trial records, exactly as the harness summarises a run.

    The point estimate is the median of the trial medians, so one disturbed trial cannot move it far; the
    interval is the harness's hierarchical bootstrap (trials, then samples inside each trial), so it carries
    both the spread inside a trial and the drift between trials.
    """
    from edge.devices.stats import bootstrap_median_ci

    if not trials:
        raise ValueError("no trials")
    return bootstrap_median_ci([t.get("samples_ms") or [] for t in trials],
                               [float(t["latency_ms"]["median"]) for t in trials])


# ---------------------------------------------------------------------------------------------- measurements


@dataclass
class Measurement:
    """One benchmark run: the trials of one artifact on one device with one runtime setting."""

    model: str | None
    target: str
    precision: str
    device: dict[str, Any]
    runtime: str
    delegate: str | None
    threads: int | None
    artifact: str
    artifact_sha256: str
    run_id: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    timestamp: str = ""
    _stats: tuple[float, float, float] | None = None

    @property
    def device_id(self) -> str:
        return str(self.device.get("id") or "?")

    @property
    def device_kind(self) -> str:
        return str(self.device.get("kind") or "?")

    @property
    def device_label(self) -> str:
        """'host (AMD EPYC 7763, 2 cores)' / 'Pixel 7 (adb:SERIAL)': what the evidence is about."""
        fp = self.device.get("fingerprint") or {}
        name = self.device.get("name") or self.device_id
        if self.device_kind == "host":
            cpu = fp.get("cpu_model") or fp.get("cpu") or name
            cores = fp.get("usable_cpus") or fp.get("logical_cpus") or fp.get("cores")
            return f"host ({cpu}{f', {cores} cores' if cores else ''})"
        return f"{name} ({self.device_id})" if name != self.device_id else str(name)

    @property
    def setting(self) -> str:
        """'tflite fp32, litert/xnnpack, 1 thread'."""
        rt = self.runtime + (f"/{self.delegate}" if self.delegate else "")
        th = f", {self.threads} thread{'s' * (self.threads != 1)}" if self.threads else ""
        return f"{self.target} {self.precision}, {rt}{th}"

    def stats(self) -> tuple[float, float, float]:
        """(median, ci95 lo, ci95 hi) in ms."""
        if self._stats is None:
            if self.trials:
                self._stats = latency_stats(self.trials)
            elif self.summary:
                lo, hi = self.summary.get("ci95_ms") or [self.summary["median_ms"]] * 2
                self._stats = (float(self.summary["median_ms"]), float(lo), float(hi))
            else:
                raise ValueError("measurement without trials or summary")
        return self._stats

    @property
    def median_ms(self) -> float:
        return self.stats()[0]

    @property
    def ci95_ms(self) -> tuple[float, float]:
        return self.stats()[1], self.stats()[2]

    @property
    def samples_ms(self) -> list[float]:
        """All per-inference samples, or the trial medians where a binary reported only aggregates."""
        out: list[float] = []
        for t in self.trials:
            s = t.get("samples_ms") or []
            out.extend(float(x) for x in s) if s else out.append(float(t["latency_ms"]["median"]))
        if not out and self.summary:
            out.append(float(self.summary["median_ms"]))
        return out

    @property
    def peak_memory_mb(self) -> float | None:
        vals = [t.get("peak_memory_mb") for t in self.trials if t.get("peak_memory_mb") is not None]
        if vals:
            return float(max(vals))
        return (self.summary or {}).get("peak_memory_mb")

    def key(self) -> tuple[Any, ...]:
        return (self.model, self.target, self.precision, self.device_id, self.runtime, self.delegate, self.threads)


@dataclass
class Results:
    """Everything read from the result paths."""

    measurements: list[Measurement] = field(default_factory=list)
    manifests: list[dict[str, Any]] = field(default_factory=list)  # each with "_path" added
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> eval record
    sources: list[str] = field(default_factory=list)

    def devices(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for m in self.measurements:
            out.setdefault(m.device_id, m.device)
        return out

    def latest(self) -> list[Measurement]:
        """The newest run per (model, target, precision, device, runtime, delegate, threads)."""
        best: dict[tuple[Any, ...], Measurement] = {}
        for m in self.measurements:
            k = m.key()
            if k not in best or m.timestamp >= best[k].timestamp:
                best[k] = m
        return list(best.values())

    def manifest(self, model: str, target: str, precision: str | None = None) -> dict[str, Any] | None:
        """The newest manifest for a model/target (and precision, else fp32 first)."""
        cands = [m for m in self.manifests if m.get("model") == model and m.get("target") == target
                 and (precision is None or m.get("precision") == precision)]
        if not cands:
            return None
        order = {"fp32": 0, "fp16": 1}
        cands.sort(key=lambda m: (order.get(m.get("precision", ""), 2), -_ts(m.get("created"))))
        return cands[0]

    def filter_device(self, device: str | None) -> Results:
        """Only measurements on ``device`` (its id, name, kind, or profile name)."""
        if not device:
            return self
        keep = [m for m in self.measurements if device_selected(m.device, device)]
        if not keep:
            seen = ", ".join(sorted({m.device_id for m in self.measurements})) or "none"
            raise EdgeError(f"no results for device {device!r}", f"devices in these results: {seen}")
        return Results(keep, self.manifests, self.evals, self.sources)


def _ts(s: Any) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(s).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def device_selected(device: dict[str, Any], wanted: str) -> bool:
    w = wanted.strip().lower()
    names = {str(device.get(k) or "").lower() for k in ("id", "name", "kind", "profile")}
    prof = device.get("profile")
    if isinstance(prof, dict):
        names.add(str(prof.get("name") or "").lower())
    return w in names


def fidelity_of(man: dict[str, Any]) -> dict[str, float | None]:
    """Worst SQNR (dB) and top-1 agreement over an export's outputs.

    The quantization report's own fidelity (``quantization.fidelity``, flat or per output) wins; otherwise the
    numerics gate's per-output metrics are used.
    """
    out: dict[str, float | None] = {"sqnr_db": None, "top1_agree": None}
    fid = (man.get("quantization") or {}).get("fidelity") or {}
    numerics = (man.get("numerics") or {}).get("outputs") or {}
    for source in (fid, {"outputs": fid.get("outputs") or {}}, {"outputs": numerics}):
        for k in out:
            if out[k] is not None:
                continue
            if isinstance(source.get(k), int | float):
                out[k] = float(source[k])
                continue
            vals = [float(o[k]) for o in (source.get("outputs") or {}).values()
                    if isinstance(o, dict) and isinstance(o.get(k), int | float)]
            if vals:
                out[k] = min(vals)
    return out


# -------------------------------------------------------------------------------------------------- loading


def load_results(paths: Iterable[str | os.PathLike[str]], require: bool = True) -> Results:
    """Read trial JSON lines, summaries, manifests and eval records from files and directories (recursively).

    ``require``: finding none of them is an error (a wrong folder is the usual cause).
    """
    paths = list(paths)
    res = Results()
    trials: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise EdgeError(f"results path {str(p)!r} does not exist", "pass bench output files or directories")
        files = [p]
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix in (".json", ".jsonl") and f.is_file())
        for f in files:
            for rec in _records(f, strict=not p.is_dir()):
                schema = rec.get("schema")
                if schema == TRIAL_SCHEMA:
                    trials.append(rec)
                elif schema == SUMMARY_SCHEMA:
                    summaries.append(rec)
                elif schema == MANIFEST_SCHEMA:
                    res.manifests.append({**rec, "_path": str(f)})
                elif schema == EVAL_SCHEMA:
                    if rec.get("model") is not None:
                        res.evals[str(rec["model"])] = rec
            res.sources.append(str(f))
    res.measurements = _group(trials, summaries, res.manifests)
    if require and not (res.measurements or res.manifests or res.evals):
        where = ", ".join(str(p) for p in paths)
        raise EdgeError(f"no edge results in {where}",
                        "pass the folder edge bench wrote (trials.jsonl) or an export folder (manifest.json)")
    return res


def _records(path: Path, strict: bool) -> list[dict[str, Any]]:
    """The schema-tagged records in one file: a JSON-lines file, an object, a list, or an object of those."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise EdgeError(f"cannot read {path}: {e.strerror}") from None
    if path.suffix == ".jsonl":
        from edge._io import read_jsonl

        return [r for r in read_jsonl(path) if isinstance(r, dict)]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        if strict:
            raise EdgeError(f"{path} is not JSON ({e.msg} at line {e.lineno})",
                            "pass the harness's JSON / JSON-lines output") from None
        return []
    return list(_walk(obj, depth=0))


def _walk(obj: Any, depth: int) -> Iterable[dict[str, Any]]:
    if depth > 3:
        return
    if isinstance(obj, dict):
        if isinstance(obj.get("schema"), str) and obj["schema"].startswith("edge."):
            yield obj
        for v in obj.values():
            if isinstance(v, dict | list):
                yield from _walk(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, depth + 1)


def _manifest_for(artifact: str, manifests: list[dict[str, Any]]) -> dict[str, Any] | None:
    a = Path(artifact)
    for m in manifests:
        mp = Path(m["_path"]).parent
        if a == mp or a.parent == mp:
            return m
    cand = (a if a.is_dir() and not a.suffix else a.parent) / "manifest.json"
    if cand.is_file():
        try:
            rec = json.loads(cand.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if rec.get("schema") == MANIFEST_SCHEMA:
            rec["_path"] = str(cand)
            manifests.append(rec)
            return rec
    return None


_IDENTITY = ("run_id", "artifact", "artifact_sha256", "model", "target", "precision", "runtime", "delegate", "threads")


def _group(trials: list[dict[str, Any]], summaries: list[dict[str, Any]],
           manifests: list[dict[str, Any]]) -> list[Measurement]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for t in trials:
        k = tuple(json.dumps(t.get(f), sort_keys=True) for f in _IDENTITY) + (str((t.get("device") or {}).get("id")),)
        groups.setdefault(k, []).append(t)
    out: list[Measurement] = []
    seen_runs: set[tuple[str, str]] = set()
    for recs in groups.values():
        by_trial = {r.get("trial"): r for r in recs}  # a resumed run may repeat a trial: keep the last
        recs = [by_trial[k] for k in sorted(by_trial, key=lambda x: (x is None, x))]
        m = _measurement(recs[0], recs, None, manifests)
        out.append(m)
        seen_runs.add((m.run_id, m.device_id))
    for s in summaries:
        if (str(s.get("run_id")), str((s.get("device") or {}).get("id"))) in seen_runs:
            for m in out:  # attach the harness's own summary to its trials
                if m.run_id == str(s.get("run_id")) and m.artifact == str(s.get("artifact")):
                    m.summary = s
            continue
        if s.get("median_ms") is None:
            continue
        out.append(_measurement(s, [], s, manifests))
    return out


def _measurement(rec: dict[str, Any], trials: list[dict[str, Any]], summary: dict[str, Any] | None,
                 manifests: list[dict[str, Any]]) -> Measurement:
    model, target, precision = rec.get("model"), rec.get("target"), rec.get("precision")
    if model is None or target is None or precision is None:
        man = _manifest_for(str(rec.get("artifact") or ""), manifests)
        if man:
            model = model or man.get("model")
            target = target or man.get("target")
            precision = precision or man.get("precision")
    stamps = [str(t.get("timestamp") or "") for t in trials] or [str(rec.get("timestamp") or "")]
    return Measurement(
        model=model, target=str(target or "?"), precision=str(precision or "?"),
        device=dict(rec.get("device") or {"id": "?", "kind": "?"}), runtime=str(rec.get("runtime") or "?"),
        delegate=rec.get("delegate"), threads=rec.get("threads"), artifact=str(rec.get("artifact") or ""),
        artifact_sha256=str(rec.get("artifact_sha256") or ""), run_id=str(rec.get("run_id") or ""),
        trials=trials, summary=summary, timestamp=max(stamps))
