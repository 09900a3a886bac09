"""Verdicts: confirmed, contradicted, or not measurable here, with claimed and measured side by side.

Where each number comes from:

* params and MACs: counted from the zoo's own network (``edge.models.complexity``), under the paper's convention;
* latency: harness results on the claim's named device, or on a device whose profile says it is of the
  same kind (``same_kind_as``). A host CPU result is evidence about the host only: it never stands in for a phone;
* op counts: the export manifests' op histograms;
* top-1: only an ``edge.eval/1`` record (an ImageNet evaluation); nothing else makes it measurable.

Relative claims (a ratio or difference between two models) are checked on whatever device has results for
both models, one verdict per device and target, each labelled with that device. They are kept apart from the
absolute claims, because a ratio on the host says nothing about the claimed phone's absolute numbers.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.claims import Claim, ClaimSet, claimed_numbers, load_claims, normalize_device, zoo_name
from edge.claims.results import Measurement, Results

CONFIRMED = "confirmed"
CONTRADICTED = "contradicted"
NOT_MEASURABLE = "not measurable here"
STATUSES = (CONFIRMED, CONTRADICTED, NOT_MEASURABLE)

ComplexityFn = Callable[[str], dict[str, Any]]


@dataclass
class Verdict:
    claim: Claim
    status: str
    claimed: float | None = None  # absolute: the claimed value; relative: the bound on the ratio / difference
    measured: float | None = None
    measured_ci: tuple[float, float] | None = None
    unit: str = ""
    evidence: str = ""  # what the measurement is about: a device label, "zoo (counted)", a manifest
    device: str | None = None  # device id (latency verdicts)
    detail: str = ""  # why: the rule applied, or what is missing
    parts: dict[str, Any] = field(default_factory=dict)  # relative: each model's claimed and measured numbers

    @property
    def kind(self) -> str:
        return self.claim.kind

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.claim.id, "kind": self.claim.kind, "metric": self.claim.metric, "status": self.status,
            "statement": self.claim.statement, "paper": self.claim.paper, "source": self.claim.source,
            "subject": self.claim.subject, "reference": self.claim.reference,
            "conditions": dict(self.claim.conditions.__dict__), "relation": self.claim.relation,
            "compare": self.claim.compare if self.claim.kind == "relative" else None,
            "claimed": self.claimed, "measured": self.measured,
            "measured_ci": list(self.measured_ci) if self.measured_ci else None, "unit": self.unit,
            "tolerance": self.claim.tolerance, "abs_tolerance": self.claim.abs_tolerance,
            "evidence": self.evidence, "device": self.device, "detail": self.detail, "parts": self.parts,
            "unconfirmed": self.claim.unconfirmed, "origin": self.claim.origin, "note": self.claim.note,
        }


# ----------------------------------------------------------------------------------------------- comparisons


def holds(measured: float, claimed: float, relation: str, tolerance: float, abs_tolerance: float = 0.0,
          additive: bool = False) -> bool:
    """Does ``measured`` satisfy ``relation`` against ``claimed``?

    ``additive`` tolerances (top-1 points, differences) add; otherwise they scale ``claimed``.
    "<=": measured <= claimed + slack; ">=": measured >= claimed - slack; "~": within slack either way.
    """
    slack = (tolerance if additive else tolerance * abs(claimed)) + abs_tolerance
    if relation == "<=":
        return measured <= claimed + slack + 1e-12
    if relation == ">=":
        return measured >= claimed - slack - 1e-12
    return abs(measured - claimed) <= slack + 1e-12


def decide(ci: tuple[float, float], claimed: float, relation: str, tolerance: float, abs_tolerance: float = 0.0,
           additive: bool = False) -> str | None:
    """A verdict from a measurement's 95% interval, or None when the interval straddles the claim's boundary.

    "<=": confirmed when the whole interval satisfies it, contradicted when none of it does. "~": confirmed when
    the whole interval lies inside the tolerance band, contradicted when it lies wholly outside.
    """
    lo, hi = ci
    slack = (tolerance if additive else tolerance * abs(claimed)) + abs_tolerance
    band_lo, band_hi = claimed - slack - 1e-12, claimed + slack + 1e-12
    if relation == "<=":
        return CONFIRMED if hi <= band_hi else CONTRADICTED if lo > band_hi else None
    if relation == ">=":
        return CONFIRMED if lo >= band_lo else CONTRADICTED if hi < band_lo else None
    if band_lo <= lo and hi <= band_hi:
        return CONFIRMED
    return CONTRADICTED if hi < band_lo or lo > band_hi else None


def ratio_ci(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float]:
    """95% interval of a / b from each one's (median, lo, hi), independent errors combined on the log scale."""
    (ma, la, ha), (mb, lb, hb) = a, b
    up = math.hypot(math.log(ha / ma), math.log(mb / lb))
    down = math.hypot(math.log(ma / la), math.log(hb / mb))
    r = ma / mb
    return r * math.exp(-down), r * math.exp(up)


TOO_NOISY = "too noisy to tell here: the 95% interval {ci} straddles the claim's boundary; measure with more " \
            "trials or on a quieter machine"


def _rule(claim: Claim, value: float, unit: str, additive: bool) -> str:
    slack = f"±{claim.tolerance:g}{unit}" if additive else f"±{claim.tolerance:.0%}" if claim.tolerance else ""
    if claim.abs_tolerance:
        slack += f" ±{claim.abs_tolerance:g} {unit}".rstrip()
    rel = {"<=": "≤", ">=": "≥", "~": "≈"}[claim.relation]
    return f"{rel} {value:g}{'' if unit in ('x', '') else ' ' + unit} {slack}".strip()


# ---------------------------------------------------------------------------------------------- device rules


def same_kind_as(device: dict[str, Any]) -> list[str]:
    """Device names a profile says this device stands in for (``same_kind_as`` in its profile TOML)."""
    out: list[str] = []
    for src in (device, device.get("profile") if isinstance(device.get("profile"), dict) else {}):
        v = src.get("same_kind_as")
        out += [v] if isinstance(v, str) else list(v or [])
    return out


def device_matches(device: dict[str, Any], claimed_device: str | None) -> bool:
    """Is a result on ``device`` evidence about ``claimed_device``?

    "host" claims accept host results only. A host result never counts for a named phone, whatever its profile
    says. Otherwise the names must agree, or the device's profile must say it counts as the claimed device.
    """
    want = normalize_device(claimed_device)
    is_host = device.get("kind") == "host"
    if want == "host":
        return is_host
    if is_host or not want:
        return False
    names = {normalize_device(device.get("name")), normalize_device(device.get("id"))}
    names |= {normalize_device(n) for n in same_kind_as(device)}
    return want in names


# -------------------------------------------------------------------------------------------------- evaluate


def evaluate(
    claims: ClaimSet | Iterable[Claim] | None = None,
    results: Results | None = None,
    *,
    device: str | None = None,
    complexity: ComplexityFn | ComplexityCache | None = None,
) -> list[Verdict]:
    """Judge every claim. ``device`` restricts latency evidence to one device (id, name, kind or profile)."""
    claims = load_claims() if claims is None else claims
    results = (results or Results()).filter_device(device)
    comp = complexity if isinstance(complexity, ComplexityCache) else ComplexityCache(complexity)
    out: list[Verdict] = []
    for c in claims:
        if c.kind == "qualitative":
            out.append(Verdict(c, NOT_MEASURABLE, claimed=c.claimed, unit=c.unit,
                               detail="a qualitative finding: there is no number to check" +
                                      (f"; {c.note}" if c.note else "")))
        elif c.kind == "absolute":
            out.append(_absolute(c, results, comp))
        else:
            out.extend(_relative(c, results, comp))
    return out


class ComplexityCache:
    """Counted params / MACs per zoo model, computed once each.

    Counting MACs runs a forward pass (seconds for the large variants), so results are also kept on disk,
    keyed by a hash of the zoo's source and the torch version: editing any network invalidates them.
    ``EDGE_CACHE_DIR`` moves the cache (default ``~/.cache/edge``); ``disk=False`` turns it off. A custom
    ``fn`` (tests) is never cached on disk.
    """

    def __init__(self, fn: ComplexityFn | None = None, disk: bool = True) -> None:
        if fn is None:
            from edge.models import complexity as fn
        # only the zoo's own counter is cached on disk: a stand-in (a test's table) must never be remembered
        self.disk = disk and getattr(fn, "__module__", None) == "edge.models" and fn.__name__ == "complexity"
        self.fn = fn
        self.cache: dict[str, dict[str, Any]] = {}

    @staticmethod
    @functools.cache
    def _zoo_hash() -> str:
        import hashlib

        import torch

        import edge.models

        h = hashlib.sha256(torch.__version__.encode())
        for f in sorted(Path(edge.models.__file__).parent.glob("*.py")):
            h.update(f.name.encode() + f.read_bytes())
        return h.hexdigest()[:16]

    def _path(self, name: str) -> Path:
        root = Path(os.environ.get("EDGE_CACHE_DIR") or Path.home() / ".cache" / "edge")
        return root / "complexity" / f"{name}-{self._zoo_hash()}.json"

    def __call__(self, name: str) -> dict[str, Any]:
        if name in self.cache:
            return self.cache[name]
        path = self._path(name) if self.disk else None
        if path is not None and path.is_file():
            try:
                self.cache[name] = json.loads(path.read_text())
                return self.cache[name]
            except (OSError, json.JSONDecodeError):
                pass
        self.cache[name] = self._count(name)
        if path is not None:
            try:
                from edge._io import write_json

                write_json(path, self.cache[name])
            except OSError:
                pass  # a read-only home only costs the recount
        return self.cache[name]

    def _count(self, name: str) -> dict[str, Any]:
        """One forward pass counts the MACs; one thread is enough, and on a loaded machine torch's OpenMP pool
        contends badly (a 42M-MAC network took 13 s with 2 threads against 0.13 s with one)."""
        import torch

        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.fn(name)
        finally:
            torch.set_num_threads(prev)

    def value(self, name: str, metric: str) -> float:
        c = self(name)
        key = {"params": "params_paper_convention", "macs": "macs_paper_convention", "macs_plain": "macs"}[metric]
        return c[key] / 1e6


def _not_in_zoo(c: Claim, model: str) -> Verdict:
    return Verdict(c, NOT_MEASURABLE, claimed=c.claimed if c.kind == "absolute" else c.bound, unit=c.unit,
                   detail=f"{model} is not in the zoo, so nothing here builds or measures it")


def _absolute(c: Claim, results: Results, comp: ComplexityCache) -> Verdict:
    assert c.claimed is not None
    name = zoo_name(c.subject)
    if c.metric == "top1":
        rec = results.evals.get(name or c.subject)
        if rec is None or rec.get("top1") is None:
            return Verdict(c, NOT_MEASURABLE, claimed=c.claimed, unit="%",
                           detail="top-1 needs an ImageNet-1k evaluation (an edge.eval/1 result); none was given")
        m = float(rec["top1"])
        ok = holds(m, c.claimed, "~", c.tolerance, additive=True)
        return Verdict(c, CONFIRMED if ok else CONTRADICTED, claimed=c.claimed, measured=m, unit="%",
                       evidence=f"evaluation on {rec.get('dataset', '?')} ({rec.get('n', '?')} images)",
                       detail=_rule(c, c.claimed, "pt", True))
    if name is None:
        return _not_in_zoo(c, c.subject)
    if c.metric in ("params", "macs", "macs_plain"):
        m = comp.value(name, c.metric)
        ok = holds(m, c.claimed, "~", c.tolerance, c.abs_tolerance)
        conv = comp(name).get("params_convention" if c.metric == "params" else "macs_convention", "")
        if c.metric == "macs_plain":
            conv = "conv + linear + matmul MACs (edge.models.count_macs), no paper-specific extras"
        return Verdict(c, CONFIRMED if ok else CONTRADICTED, claimed=c.claimed, measured=round(m, 3), unit="M",
                       evidence="zoo (counted)", detail=_rule(c, c.claimed, "M", False),
                       parts={"convention": conv})
    if c.metric == "ops":
        return _ops(c, name, results)
    if c.metric == "latency":
        return _absolute_latency(c, name, results)
    raise ValueError(f"unknown metric {c.metric!r} in claim {c.id}")


def _ops(c: Claim, name: str, results: Results) -> Verdict:
    man = results.manifest(name, c.target or "")
    if man is None:
        return Verdict(c, NOT_MEASURABLE, claimed=c.claimed, unit="ops",
                       detail=f"needs a {c.target} export manifest of {name} (edge export {name} --target {c.target})")
    ops = man.get("ops") or {}
    if c.op == "total":
        m = ops.get("total")
    else:
        hist = {k.lower(): v for k, v in (ops.get("histogram") or {}).items()}
        m = hist.get((c.op or "").lower(), 0)
    if m is None:
        return Verdict(c, NOT_MEASURABLE, claimed=c.claimed, unit="ops", detail="the manifest has no op count")
    ok = holds(float(m), float(c.claimed or 0), "~", c.tolerance)
    return Verdict(c, CONFIRMED if ok else CONTRADICTED, claimed=c.claimed, measured=float(m), unit="ops",
                   evidence=f"{c.target}-{man.get('precision')} export manifest",
                   detail=_rule(c, float(c.claimed or 0), "ops", False) + " (the zoo's port, not the public code)")


def _condition_score(m: Measurement, c: Claim) -> tuple[int, ...]:
    """Higher is a closer match to the claim's runtime, threads and precision; newest breaks ties."""
    cond = c.conditions
    return (int(cond.target is None or m.target == cond.target),
            int(cond.threads is None or m.threads == cond.threads),
            int(m.precision == (cond.precision or "fp32")),
            int(m.precision in ("fp32", "fp16")))


def _absolute_latency(c: Claim, name: str, results: Results) -> Verdict:
    cond = c.conditions
    on_device = [m for m in results.latest() if m.model == name and device_matches(m.device, cond.device)]
    usable = [m for m in on_device if (cond.target is None or m.target == cond.target)
              and (cond.threads is None or m.threads in (None, cond.threads))]
    if not usable:
        devices = sorted({m.device_label for m in results.measurements if m.model == name})
        why = f"needs {name} measured on {cond.describe()}"
        if on_device:
            why += f"; results on that device use other settings ({', '.join(sorted({m.setting for m in on_device}))})"
        elif devices:
            why += f"; results for {name} exist only on {', '.join(devices)}"
            if normalize_device(cond.device) != "host" and any("host" in d for d in devices):
                why += f" (a host CPU result is evidence about the host, never about {cond.device})"
        return Verdict(c, NOT_MEASURABLE, claimed=c.claimed, unit="ms", detail=why)
    best = max(usable, key=lambda m: (_condition_score(m, c), m.timestamp))
    med, lo, hi = best.stats()
    status = decide((lo, hi), c.claimed or 0.0, "<=", c.tolerance, c.abs_tolerance)
    detail = f"median {_rule(c, c.claimed or 0.0, 'ms', False)} (a speed claim: faster also confirms), " \
             "judged on the 95% interval"
    if status is None:
        detail = TOO_NOISY.format(ci=f"[{lo:.3g}, {hi:.3g}] ms") + f"; claim: {_rule(c, c.claimed or 0.0, 'ms', False)}"
    return Verdict(c, status or NOT_MEASURABLE, claimed=c.claimed, measured=round(med, 4),
                   measured_ci=(round(lo, 4), round(hi, 4)), unit="ms", device=best.device_id,
                   evidence=f"{best.device_label}, {best.setting}", detail=detail)


# -------------------------------------------------------------------------------------------------- relative


def _relative(c: Claim, results: Results, comp: ComplexityCache) -> list[Verdict]:
    assert c.bound is not None and c.reference is not None
    cs, cr = claimed_numbers(c)
    parts: dict[str, Any] = {"subject": c.subject, "reference": c.reference, "claimed_subject": cs,
                             "claimed_reference": cr, "claimed_value": _combine(c, cs, cr)}
    sname, rname = zoo_name(c.subject), zoo_name(c.reference)
    if c.metric == "top1":
        es, er = results.evals.get(sname or c.subject), results.evals.get(rname or c.reference)
        if not (es and er):
            paper = parts["claimed_value"]
            detail = "top-1 needs an ImageNet-1k evaluation (edge.eval/1) of both models"
            if paper is not None and not holds(paper, c.bound, c.relation, c.tolerance, additive=True):
                detail += f"; note: the papers' own numbers give {paper:+.1f} points, which does not meet the claim"
            return [Verdict(c, NOT_MEASURABLE, claimed=c.bound, unit=c.unit, detail=detail, parts=parts)]
        m = float(es["top1"]) - float(er["top1"])
        ok = holds(m, c.bound, c.relation, c.tolerance, additive=True)
        return [Verdict(c, CONFIRMED if ok else CONTRADICTED, claimed=c.bound, measured=round(m, 3), unit="pt",
                        evidence="evaluations", detail=_rule(c, c.bound, "pt", True), parts=parts)]
    for model, zn in ((c.subject, sname), (c.reference, rname)):
        if zn is None:
            v = _not_in_zoo(c, model)
            v.parts = parts
            return [v]
    assert sname and rname
    if c.metric in ("params", "macs", "macs_plain"):
        ms, mr = comp.value(sname, c.metric), comp.value(rname, c.metric)
        m = _combine(c, ms, mr)
        assert m is not None
        parts.update(measured_subject=round(ms, 3), measured_reference=round(mr, 3))
        ok = holds(m, c.bound, c.relation, c.tolerance, additive=c.compare == "difference")
        return [Verdict(c, CONFIRMED if ok else CONTRADICTED, claimed=c.bound, measured=round(m, 4), unit=c.unit,
                        evidence="zoo (counted)", detail=_rule(c, c.bound, c.unit, c.compare == "difference"),
                        parts=parts)]
    if c.metric == "latency":
        return _relative_latency(c, sname, rname, results, parts)
    raise ValueError(f"unknown metric {c.metric!r} in claim {c.id}")


def _combine(c: Claim, s: float | None, r: float | None) -> float | None:
    if s is None or r is None:
        return None
    if c.compare == "difference":
        return round(s - r, 4)
    return round(s / r, 4) if r else None


def _relative_latency(c: Claim, sname: str, rname: str, results: Results, parts: dict[str, Any]) -> list[Verdict]:
    """One verdict per (device, target) with both models measured under the same settings."""
    latest = results.latest()
    subj = [m for m in latest if m.model == sname]
    ref = [m for m in latest if m.model == rname]
    pairs: dict[tuple[str, str], tuple[Measurement, Measurement]] = {}
    for a in subj:
        for b in ref:
            if (a.device_id, a.target, a.precision, a.runtime, a.delegate, a.threads) != \
                    (b.device_id, b.target, b.precision, b.runtime, b.delegate, b.threads):
                continue
            k = (a.device_id, a.target)
            if k not in pairs or _condition_score(a, c) > _condition_score(pairs[k][0], c):
                pairs[k] = (a, b)
    if not pairs:
        have = sorted({f"{m.model} on {m.device_label}" for m in subj + ref}) or ["no latency results"]
        return [Verdict(c, NOT_MEASURABLE, claimed=c.bound, unit="x", parts=parts,
                        detail=f"needs {sname} and {rname} measured on one device with the same settings; "
                               f"have: {'; '.join(have)}")]
    out = []
    claimed_dev = c.conditions.device
    for (dev, _target), (a, b) in sorted(pairs.items()):
        sa, sb = a.stats(), b.stats()
        ma, mb = sa[0], sb[0]
        ratio = ma / mb
        lo, hi = ratio_ci(sa, sb)
        status = decide((lo, hi), c.bound, c.relation, c.tolerance)
        detail = f"ratio {_rule(c, c.bound, 'x', False)}, judged on the 95% interval"
        if status is None:
            detail = TOO_NOISY.format(ci=f"[{lo:.3g}, {hi:.3g}]") + f"; claim: ratio {_rule(c, c.bound, 'x', False)}"
        if claimed_dev and not device_matches(a.device, claimed_dev):
            detail += f"; evidence about this device only, not about the claimed {claimed_dev}"
        out.append(Verdict(
            c, status or NOT_MEASURABLE, claimed=c.bound, measured=round(ratio, 4),
            measured_ci=(round(lo, 4), round(hi, 4)), unit="x", device=dev,
            evidence=f"{a.device_label}, {a.setting}", detail=detail,
            parts={**parts, "measured_subject": round(ma, 4), "measured_reference": round(mb, 4)}))
    return out


def format_value(v: float | None, unit: str, relation: str | None = None,
                 ci: tuple[float, float] | None = None) -> str:
    """'≤1x', '5.6 ms [5.47, 5.71]', '588 ops', '73.9%'."""
    if v is None:
        return "-"
    rel = {"<=": "≤", ">=": "≥", "~": "≈"}.get(relation or "", "")
    num = f"{v:,.0f}" if unit == "ops" or abs(v) >= 1000 else f"{v:.3g}"
    suffix = {"x": "x", "%": "%", "": ""}.get(unit, f" {unit}")
    s = f"{rel}{num}{suffix}"
    if ci:
        s += " [" + ", ".join(f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}" for x in ci) + "]"
    return s


def claims(results: Iterable[str | os.PathLike[str]] = (), *, device: str | None = None,
           kind: str | None = None) -> list[Verdict]:
    """`edge claims` as a Python call: every claim (or one kind) judged against the results in ``results``."""
    from edge.claims.results import load_results

    paths = list(results)
    selected = [c for c in load_claims() if kind is None or c.kind == kind]
    return evaluate(selected, load_results(paths) if paths else None, device=device)


def summarize(verdicts: Iterable[Verdict]) -> dict[str, dict[str, int]]:
    """Counts per kind and status."""
    out: dict[str, dict[str, int]] = {}
    for v in verdicts:
        d = out.setdefault(v.kind, dict.fromkeys(STATUSES, 0))
        d[v.status] += 1
    return out
