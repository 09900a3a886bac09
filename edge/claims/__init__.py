"""The papers' claims as data: one record per claim, with its source, conditions and kind.

Two places hold them, and nothing holds a number twice:

* per-variant paper numbers (params, MACs, top-1, latency on a named device) live in the zoo's registry
  (``PaperNumbers`` / ``LatencyClaim`` in ``edge/models/<family>.py``); :func:`registry_claims` turns each into
  an absolute claim;
* ``claims.toml`` beside this file holds the rest: relative claims (one model against another), numbers about
  models the zoo does not build, the host notes of ``shared/papers.md``, and qualitative findings.

:func:`load_claims` returns both. ``edge.claims.verdict`` judges them against measurements.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

CLAIMS_TOML = Path(__file__).with_name("claims.toml")

KINDS = ("absolute", "relative", "qualitative")
METRICS = ("params", "macs", "macs_plain", "top1", "latency", "ops")
RELATIONS = ("<=", ">=", "~")
UNITS = {"params": "M", "macs": "M", "macs_plain": "M", "top1": "%", "latency": "ms", "ops": "ops"}


@dataclass(frozen=True)
class Conditions:
    """Where and how a number was measured. ``device=None`` means the claim holds on no particular device."""

    device: str | None = None
    runtime: str | None = None
    threads: int | None = None
    precision: str | None = None

    @property
    def target(self) -> str | None:
        return runtime_target(self.runtime)

    def describe(self) -> str:
        precision = "precision unstated" if self.precision == "unstated" else self.precision or ""
        parts = [self.device or "", self.runtime or "", f"{self.threads} thread{'s' * (self.threads != 1)}"
                 if self.threads else "", precision]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Claim:
    """One checkable statement of a paper (or of the project notes)."""

    id: str
    paper: str  # key of the paper table (title and arXiv id in ``papers``)
    source: str  # table / figure / section
    statement: str
    kind: str  # absolute | relative | qualitative
    subject: str  # zoo name, or a descriptive name the zoo does not build
    metric: str | None = None
    reference: str | None = None
    compare: str = "ratio"  # relative: ratio (subject / reference) or difference (subject - reference)
    relation: str = "~"
    bound: float | None = None  # relative: the claimed ratio / difference
    claimed: float | None = None  # absolute: the claimed value in ``unit``
    claimed_subject: float | None = None  # relative: the papers' numbers for the two models
    claimed_reference: float | None = None
    unit: str = ""
    tolerance: float = 0.0
    abs_tolerance: float = 0.0
    conditions: Conditions = field(default_factory=Conditions)
    unconfirmed: bool = False
    note: str = ""
    origin: str = "claims.toml"  # or "registry:<model>"
    arxiv: str = ""  # the paper's arXiv id (filled from the paper table)
    op: str | None = None  # ops claims: op name in the histogram, or "total"
    target: str | None = None  # ops claims: which export

    @property
    def device_independent(self) -> bool:
        return self.conditions.device is None

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "conditions"}
        d["conditions"] = dict(self.conditions.__dict__)
        return d


@dataclass(frozen=True)
class ClaimSet:
    claims: tuple[Claim, ...]
    papers: dict[str, dict[str, str]]
    defaults: dict[str, float]

    def __iter__(self):
        return iter(self.claims)

    def __len__(self) -> int:
        return len(self.claims)

    def get(self, claim_id: str) -> Claim:
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise KeyError(claim_id)

    def paper_title(self, key: str) -> str:
        p = self.papers.get(key, {})
        arxiv = p.get("arxiv")
        return f"{p.get('title', key)}" + (f" (arXiv {arxiv})" if arxiv else "")


# ------------------------------------------------------------------------------------------------ helpers


_RUNTIME_TARGETS = {
    "coreml": "coreml", "tflite": "tflite", "litert": "tflite", "tensorflowlite": "tflite",
    "onnx": "onnx", "onnxruntime": "onnx", "ort": "onnx",
}


def runtime_target(runtime: str | None) -> str | None:
    """'Core ML' -> coreml, 'TFLite' / 'LiteRT' -> tflite, 'ONNX Runtime' -> onnx; None when unknown."""
    if not runtime:
        return None
    key = re.sub(r"[^a-z]", "", runtime.lower())
    return _RUNTIME_TARGETS.get(key)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def normalize_device(name: str | None) -> str:
    """Device names compare without case, spaces or punctuation: 'iPhone 12' == 'iphone-12'."""
    return re.sub(r"[^a-z0-9]", "", (name or "").lower())


def _paper_key(arxiv: str, papers: dict[str, dict[str, str]]) -> str:
    for key, p in papers.items():
        if p.get("arxiv") == arxiv:
            return key
    return f"arxiv:{arxiv}"


# ----------------------------------------------------------------------------------------------- loading


def registry_claims(defaults: dict[str, float], papers: dict[str, dict[str, str]]) -> list[Claim]:
    """Absolute claims derived from each zoo variant's PaperNumbers (the one place they are written)."""
    from edge.models import get_info, list_models

    out: list[Claim] = []
    for name in list_models():
        info = get_info(name)
        p = info.paper
        paper = _paper_key(p.arxiv, papers)
        origin = f"registry:{name}"
        common = {"paper": paper, "source": p.source, "subject": name, "kind": "absolute", "origin": origin,
                  "arxiv": p.arxiv}
        if p.params_m is not None:
            out.append(Claim(
                id=f"{name}/params", metric="params", claimed=p.params_m, unit="M",
                statement=f"{name} has {p.params_m:g}M parameters ({info.params_convention})",
                tolerance=defaults["params_tolerance"], unconfirmed="params_m" in p.unconfirmed, **common))
        if p.macs_m is not None:
            out.append(Claim(
                id=f"{name}/macs", metric="macs", claimed=p.macs_m, unit="M",
                statement=f"{name} needs {p.macs_m:g}M multiply-adds at {info.input_size[-1]}px",
                tolerance=defaults["macs_tolerance"], unconfirmed="macs_m" in p.unconfirmed, **common))
        if p.top1 is not None:
            out.append(Claim(
                id=f"{name}/top1", metric="top1", claimed=p.top1, unit="%",
                statement=f"{name} reaches {p.top1:g}% ImageNet-1k top-1",
                tolerance=defaults["top1_tolerance"], unconfirmed="top1" in p.unconfirmed, **common))
        for lc in p.latency:
            cond = Conditions(device=lc.device, runtime=lc.runtime, threads=lc.threads, precision=lc.precision)
            figure = "figure" in (lc.source or "").lower()
            out.append(Claim(
                id=f"{name}/latency/{slug(lc.device)}", metric="latency", claimed=lc.ms, unit="ms", relation="<=",
                statement=f"{name} runs in {lc.ms:g} ms on {cond.describe()}",
                tolerance=defaults["latency_tolerance"],
                abs_tolerance=defaults["figure_abs_tolerance_ms"] if figure else 0.0,
                conditions=cond, note=lc.note,
                unconfirmed=any(u.startswith("latency") for u in p.unconfirmed),
                **{**common, "source": lc.source or p.source}))
    return out


def _toml_claim(rec: dict[str, Any], defaults: dict[str, float]) -> Claim:
    rec = dict(rec)
    cid = rec.get("id", "?")
    cond = rec.pop("conditions", None) or {}
    unknown_cond = set(cond) - {"device", "runtime", "threads", "precision"}
    if unknown_cond:
        raise EdgeError(f"claim {cid!r}: unknown condition(s) {sorted(unknown_cond)}",
                        "conditions take device, runtime, threads, precision")
    kind = rec.get("kind")
    if kind not in KINDS:
        raise EdgeError(f"claim {cid!r}: kind must be one of {KINDS}, not {kind!r}")
    metric = rec.get("metric")
    if kind != "qualitative" and metric not in METRICS:
        raise EdgeError(f"claim {cid!r}: metric must be one of {METRICS}, not {metric!r}")
    if rec.get("relation", "~") not in RELATIONS:
        raise EdgeError(f"claim {cid!r}: relation must be one of {RELATIONS}")
    if kind == "relative" and (rec.get("reference") is None or rec.get("bound") is None):
        raise EdgeError(f"claim {cid!r}: a relative claim needs `reference` and `bound`")
    if kind == "absolute" and rec.get("claimed") is None:
        raise EdgeError(f"claim {cid!r}: an absolute claim needs `claimed`")
    if kind == "absolute" and metric == "latency":
        rec.setdefault("relation", "<=")  # a latency claim is a speed claim
    if kind == "absolute" and "tolerance" not in rec and metric in ("params", "macs", "top1", "latency"):
        rec["tolerance"] = defaults[f"{metric}_tolerance"]
    if metric and "unit" not in rec:
        rec["unit"] = UNITS[metric]
    if kind == "relative":
        rec["unit"] = "x" if rec.get("compare", "ratio") == "ratio" else ("pt" if metric == "top1" else UNITS[metric])
    for k in ("claimed", "bound", "claimed_subject", "claimed_reference", "tolerance", "abs_tolerance"):
        if rec.get(k) is not None:
            rec[k] = float(rec[k])
    try:
        return Claim(conditions=Conditions(**cond), **rec)
    except TypeError as e:
        raise EdgeError(f"claim {cid!r}: {e}", "see the field list at the top of claims.toml") from None


@functools.lru_cache(maxsize=4)
def _load(path: str, with_registry: bool) -> ClaimSet:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise EdgeError(f"cannot read claims file {path}: {e}", "fix the TOML syntax") from None
    defaults = {k: float(v) for k, v in data.get("defaults", {}).items()}
    papers = data.get("papers", {})
    toml_claims = [_toml_claim({**r, "arxiv": papers.get(r.get("paper"), {}).get("arxiv", "")}, defaults)
                   for r in data.get("claim", [])]
    claims: list[Claim] = registry_claims(defaults, papers) if with_registry else []
    claims += [_canonical(c) for c in toml_claims] if with_registry else toml_claims
    seen: set[str] = set()
    for c in claims:
        if c.id in seen:
            raise EdgeError(f"duplicate claim id {c.id!r}", "each claim needs its own id")
        seen.add(c.id)
    return ClaimSet(tuple(claims), papers, defaults)


def _canonical(c: Claim) -> Claim:
    """Resolve zoo aliases in subject / reference so claims and measurements use one name."""
    return replace(c, subject=zoo_name(c.subject) or c.subject,
                   reference=(zoo_name(c.reference) or c.reference) if c.reference else None)


def zoo_name(name: str | None) -> str | None:
    """The zoo's canonical name for ``name``, or None when the zoo does not build it."""
    if not name:
        return None
    from edge.models import get_info

    try:
        return get_info(name).name
    except EdgeError:
        return None


def load_claims(path: str | Path | None = None, with_registry: bool = True) -> ClaimSet:
    """All claims: the registry's per-variant numbers plus ``claims.toml`` (or ``path``)."""
    return _load(str(path or CLAIMS_TOML), with_registry)


def claimed_numbers(claim: Claim) -> tuple[float | None, float | None]:
    """A relative claim's numbers for subject and reference: the registry's first, then the record's own."""
    return (claim.claimed_subject if claim.claimed_subject is not None else _registry_value(claim, claim.subject),
            claim.claimed_reference if claim.claimed_reference is not None else _registry_value(claim, claim.reference))


def _registry_value(claim: Claim, model: str | None) -> float | None:
    name = zoo_name(model)
    if name is None or claim.metric is None:
        return None
    from edge.models import get_info

    p = get_info(name).paper
    if claim.metric == "params":
        return p.params_m
    if claim.metric == "macs":
        return p.macs_m
    if claim.metric == "top1":
        return p.top1
    if claim.metric == "latency":
        # Only a number from the claim's own paper: two papers' phones, OS versions and apps differ, so a ratio
        # of one paper's number to another's is not what either claimed.
        want = normalize_device(claim.conditions.device)
        for lc in p.latency:
            other_paper = claim.arxiv and re.search(r"\d{4}\.\d{4,5}", lc.source or "") and claim.arxiv not in lc.source
            if normalize_device(lc.device) == want and not other_paper and (
                    runtime_target(lc.runtime) == claim.conditions.target or claim.conditions.runtime is None):
                return lc.ms
    return None


__all__ = [
    "CLAIMS_TOML",
    "Claim",
    "ClaimSet",
    "Conditions",
    "claimed_numbers",
    "load_claims",
    "normalize_device",
    "registry_claims",
    "runtime_target",
    "zoo_name",
]
