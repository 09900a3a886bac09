"""`edge report`: one self-contained HTML page (or Markdown) from bench results and export manifests.

The page opens offline: CSS is inline, every plot is a matplotlib PNG embedded as base64, and there is no script.
It holds the claims' verdicts, the fastest artifact per model, latency distributions, latency against MACs and
params (with the pairs where MACs say nothing about latency), claimed against measured, int8 fidelity, artifact
sizes, and each device's fingerprint with the tool versions.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.claims import zoo_name
from edge.claims.results import Measurement, Results, fidelity_of, load_results
from edge.claims.verdict import (
    CONFIRMED,
    CONTRADICTED,
    NOT_MEASURABLE,
    ComplexityCache,
    ComplexityFn,
    Verdict,
    evaluate,
    format_value,
    summarize,
)

QUANTIZED = ("int8", "int8w", "w8a16", "int8dyn")

# Two models with MACs within this factor of each other count as "similar MACs"; a latency ratio of at least
# FLOPS_GAP_LATENCY between them is where the MAC count says nothing about latency.
FLOPS_SIMILAR = 1.5
FLOPS_GAP_LATENCY = 1.5


@dataclass
class FlopsGap:
    """Two models on one device and setting: similar MACs, very different latency."""

    device: str
    setting: str
    slow: str
    fast: str
    macs_ratio: float
    latency_ratio: float
    slow_ms: float
    fast_ms: float


@dataclass
class ReportData:
    results: Results
    verdicts: list[Verdict]
    measurements: list[Measurement]
    complexity: dict[str, dict[str, Any]]
    flops_gaps: list[FlopsGap]
    title: str = "edge report"
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def quantized_manifests(self) -> list[dict[str, Any]]:
        return [m for m in self.results.manifests if m.get("precision") in QUANTIZED]


def collect(paths: Iterable[str | os.PathLike[str]], *, device: str | None = None,
            complexity: ComplexityFn | ComplexityCache | None = None, claims: Any = None) -> ReportData:
    """Read the results and judge the claims; everything the renderers need."""
    results = load_results(paths)
    if device:
        results = results.filter_device(device)
    cache = complexity if isinstance(complexity, ComplexityCache) else ComplexityCache(complexity)
    verdicts = evaluate(claims, results, complexity=cache)
    ms = sorted(results.latest(), key=lambda m: (m.device_id, m.model or "", m.target, m.precision, m.threads or 0))
    comp: dict[str, dict[str, Any]] = {}
    for m in ms:
        name = zoo_name(m.model)
        if name and name not in comp:
            comp[name] = cache(name)
    return ReportData(results, verdicts, ms, comp, flops_gaps(ms, comp))


def flops_gaps(ms: Sequence[Measurement], comp: dict[str, dict[str, Any]]) -> list[FlopsGap]:
    """Pairs measured under the same setting whose MACs are within 1.5x but whose latency differs >= 1.5x."""
    out = []
    groups: dict[tuple[Any, ...], list[Measurement]] = {}
    for m in ms:
        if zoo_name(m.model) in comp:
            groups.setdefault((m.device_id, m.target, m.precision, m.runtime, m.delegate, m.threads), []).append(m)
    for group in groups.values():
        for a, b in itertools.combinations(group, 2):
            if a.model == b.model:
                continue
            slow, fast = (a, b) if a.median_ms >= b.median_ms else (b, a)
            macs_s = comp[zoo_name(slow.model)]["macs_paper_convention"]
            macs_f = comp[zoo_name(fast.model)]["macs_paper_convention"]
            mr = macs_s / macs_f if macs_f else math.inf
            lr = slow.median_ms / fast.median_ms
            if 1 / FLOPS_SIMILAR <= mr <= FLOPS_SIMILAR and lr >= FLOPS_GAP_LATENCY:
                out.append(FlopsGap(slow.device_label, slow.setting, str(slow.model), str(fast.model), mr, lr,
                                    slow.median_ms, fast.median_ms))
    out.sort(key=lambda g: -g.latency_ratio / g.macs_ratio)
    return out


def fastest_per_model(ms: Sequence[Measurement]) -> list[Measurement]:
    """Per model and device, the artifact with the lowest median latency."""
    best: dict[tuple[str, str], Measurement] = {}
    for m in ms:
        k = (str(m.model), m.device_id)
        if k not in best or m.median_ms < best[k].median_ms:
            best[k] = m
    return sorted(best.values(), key=lambda m: (m.device_id, m.median_ms))


def tool_versions(data: ReportData) -> dict[str, str]:
    """Tool versions from manifests and trial fingerprints (a version seen twice differently is listed as both)."""
    seen: dict[str, set[str]] = {}
    for man in data.results.manifests:
        for k, v in (man.get("tools") or {}).items():
            if v:
                seen.setdefault(k, set()).add(str(v))
    for m in data.measurements:
        fp = m.device.get("fingerprint") or {}
        for k, v in (fp.get("tools") or fp.get("versions") or {}).items():
            if v:
                seen.setdefault(k, set()).add(str(v))
    return {k: ", ".join(sorted(v)) for k, v in sorted(seen.items())}


# ------------------------------------------------------------------------------------------------------ plots


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _label(m: Measurement) -> str:
    return f"{m.model} · {m.target}-{m.precision} · {m.threads or '?'}t"


def plot_latency_distributions(data: ReportData) -> list[tuple[str, str]]:
    """One box plot per device: every measured model / target / precision, sorted by median."""
    plt = _plt()
    out = []
    for _dev, group in itertools.groupby(data.measurements, key=lambda m: m.device_id):
        ms = sorted(group, key=lambda m: m.median_ms)
        if not ms:
            continue
        fig, ax = plt.subplots(figsize=(9, 0.42 * len(ms) + 1.6))
        ax.boxplot([m.samples_ms for m in ms], vert=False, widths=0.6, showfliers=True,
                   flierprops={"markersize": 2, "alpha": 0.5})
        ax.set_yticks(range(1, len(ms) + 1), [_label(m) for m in ms], fontsize=8)
        for i, m in enumerate(ms, start=1):
            lo, hi = m.ci95_ms
            ax.plot([lo, hi], [i + 0.38, i + 0.38], color="tab:red", lw=2)
        ax.set_xlabel("latency per inference (ms); red: 95% CI of the median")
        ax.set_title(f"Latency on {ms[0].device_label}")
        ax.grid(axis="x", alpha=0.3)
        out.append((f"Latency distributions on {ms[0].device_label}", _png(fig)))
    return out


def plot_latency_vs_complexity(data: ReportData) -> list[tuple[str, str]]:
    """Latency against MACs and against params, per device; the FLOPs-gap pairs are joined by a line."""
    plt = _plt()
    out = []
    for _dev, group in itertools.groupby(data.measurements, key=lambda m: m.device_id):
        ms = [m for m in group if zoo_name(m.model) in data.complexity]
        if not ms:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
        series: dict[str, list[Measurement]] = {}
        for m in ms:
            series.setdefault(f"{m.target}-{m.precision} {m.threads or '?'}t", []).append(m)
        for ax, key, xlabel in ((axes[0], "macs_paper_convention", "MACs (M, paper convention)"),
                                (axes[1], "params", "params (M)")):
            for (name, sm), marker in zip(sorted(series.items()), itertools.cycle("osD^vP*X")):
                xs = [data.complexity[zoo_name(m.model)][key] / 1e6 for m in sm]
                ax.scatter(xs, [m.median_ms for m in sm], marker=marker, label=name, alpha=0.85)
                for x, m in zip(xs, sm):
                    ax.annotate(str(m.model), (x, m.median_ms), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
            if key == "macs_paper_convention":
                for g in data.flops_gaps:
                    pts = [(data.complexity[zoo_name(mm.model)][key] / 1e6, mm.median_ms) for mm in ms
                           if mm.model in (g.slow, g.fast) and mm.setting == g.setting]
                    if len(pts) == 2:
                        ax.plot(*zip(*pts), color="tab:red", lw=1, ls="--", alpha=0.7)
            ax.set_xlabel(xlabel + " (log)")
            ax.set_xscale("log")
            ax.grid(alpha=0.3, which="both")
        axes[0].set_ylabel("median latency (ms)")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"Latency against MACs and params on {ms[0].device_label}"
                     + ("  (red dashes: similar MACs, ≥1.5x latency)" if data.flops_gaps else ""), fontsize=10)
        out.append((f"Latency against MACs and params on {ms[0].device_label}", _png(fig)))
    return out


def plot_claimed_vs_measured(data: ReportData) -> list[tuple[str, str]]:
    """Absolute claims (params, MACs, latency) claimed vs measured; relative ratios per device."""
    plt = _plt()
    out = []
    ab = [v for v in data.verdicts if v.kind == "absolute" and v.measured is not None
          and v.claim.metric in ("params", "macs", "macs_plain", "latency")]
    if ab:
        metrics = [m for m in ("params", "macs", "latency") if any(v.claim.metric.startswith(m) for v in ab)]
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 4.4), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            vs = [v for v in ab if v.claim.metric.startswith(metric)]
            for status, color in ((CONFIRMED, "tab:green"), (CONTRADICTED, "tab:red")):
                sel = [v for v in vs if v.status == status]
                ax.scatter([v.claimed for v in sel], [v.measured for v in sel], c=color, label=status, s=18)
            lo = min(min(v.claimed or 1, v.measured or 1) for v in vs) * 0.8
            hi = max(max(v.claimed or 1, v.measured or 1) for v in vs) * 1.25
            ax.plot([lo, hi], [lo, hi], color="gray", lw=1)
            ax.set_xscale("log")
            ax.set_yscale("log")
            unit = {"params": "M", "macs": "M", "latency": "ms"}[metric]
            ax.set_xlabel(f"claimed {metric} ({unit})")
            ax.set_ylabel(f"measured {metric} ({unit})")
            ax.set_title({"params": "params (zoo count)", "macs": "MACs (zoo count)",
                          "latency": "latency on the named device"}[metric], fontsize=10)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        out.append(("Claimed against measured: absolute claims", _png(fig)))
    rel = [v for v in data.verdicts if v.kind == "relative" and v.measured is not None]
    if rel:
        fig, ax = plt.subplots(figsize=(10, 0.5 * len(rel) + 1.4))
        labels = [f"{v.claim.id}\n{v.evidence.split(',')[0] if v.device else v.evidence}" for v in rel]
        y = list(range(len(rel)))
        ax.barh([i + 0.2 for i in y], [v.claimed or 0 for v in rel], height=0.38, color="lightgray", label="claimed")
        ax.barh([i - 0.2 for i in y], [v.measured or 0 for v in rel], height=0.38,
                color=[_STATUS_COLOR[v.status] for v in rel])
        for i, v in zip(y, rel):
            if v.measured_ci:
                ax.plot(v.measured_ci, [i - 0.2, i - 0.2], color="black", lw=1)
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_xlabel("ratio (subject / reference) or difference; black: 95% interval")
        ax.set_title("Relative claims: claimed against measured, per device", fontsize=10)
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color="lightgray", label="claimed")]
                  + [Patch(color=c, label=f"measured: {st}") for st, c in _STATUS_COLOR.items()], fontsize=7)
        ax.grid(axis="x", alpha=0.3)
        out.append(("Claimed against measured: relative claims (each bar labelled with its device)", _png(fig)))
    return out


_STATUS_COLOR = {CONFIRMED: "tab:green", CONTRADICTED: "tab:red", NOT_MEASURABLE: "tab:orange"}


def plot_fidelity_and_sizes(data: ReportData) -> list[tuple[str, str]]:
    plt = _plt()
    out = []
    q = data.quantized_manifests
    if q:
        fig, axes = plt.subplots(1, 2, figsize=(12, 0.4 * len(q) + 1.8), sharey=True)
        labels = [f"{m.get('model')} · {m.get('target')}-{m.get('precision')}" for m in q]
        sq = [_fidelity(m, "sqnr_db") or 0.0 for m in q]
        agree = [100 * (_fidelity(m, "top1_agree") or 0.0) for m in q]
        axes[0].barh(labels, sq, color="tab:blue")
        axes[0].set_xlabel("SQNR against PyTorch (dB)")
        axes[1].barh(labels, agree, color="tab:orange")
        axes[1].set_xlabel("top-1 agreement with PyTorch (%)")
        axes[1].set_xlim(0, 100)
        for ax in axes:
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(axis="x", alpha=0.3)
        fig.suptitle("Quantized artifacts: fidelity", fontsize=10)
        out.append(("Quantized artifacts: SQNR and top-1 agreement", _png(fig)))
    mans = [m for m in data.results.manifests if (m.get("artifact") or {}).get("size_bytes")]
    if mans:
        mans = sorted(mans, key=lambda m: (m.get("model", ""), m.get("target", ""), m.get("precision", "")))
        fig, ax = plt.subplots(figsize=(9, 0.32 * len(mans) + 1.4))
        colors = {"fp32": "tab:blue", "fp16": "tab:cyan"}
        ax.barh([f"{m.get('model')} · {m.get('target')}-{m.get('precision')}" for m in mans],
                [m["artifact"]["size_bytes"] / 1e6 for m in mans],
                color=[colors.get(m.get("precision"), "tab:orange") for m in mans])
        ax.set_xlabel("artifact size (MB)")
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title("Artifact sizes (blue fp32, cyan fp16, orange quantized)", fontsize=10)
        out.append(("Artifact sizes", _png(fig)))
    return out


def _fidelity(man: dict[str, Any], key: str) -> float | None:
    return fidelity_of(man)[key]


# ------------------------------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.86em}th,td{border:1px solid #ddd;padding:.25em .5em;
vertical-align:top;text-align:left}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.confirmed{background:#e6f4ea}.contradicted{background:#fce8e6}.not-measurable-here{color:#777}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.muted{color:#777;font-size:.85em}code{background:#f4f4f4;padding:0 .2em}.cards{display:flex;gap:1em;flex-wrap:wrap}
.flops-callout{background:#fff8e1;border-left:4px solid #f5a623;padding:.4em .8em}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:12em}.card b{font-size:1.4em}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str = "",
           row_classes: Sequence[str] | None = None) -> str:
    rid = f' id="{table_id}"' if table_id else ""
    out = [f"<table{rid}><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes else ""
        cells = "".join(f'<td class="num">{_e(c)}</td>' if isinstance(c, int | float) else f"<td>{_e(c)}</td>"
                        for c in r)
        out.append(f"<tr{cls}>{cells}</tr>")
    return "\n".join(out) + "</tbody></table>"


def _figures(figs: list[tuple[str, str]], empty: str) -> str:
    if not figs:
        return f'<p class="muted">{_e(empty)}</p>'
    return "\n".join(f'<figure><img class="plot" alt="{_e(cap)}" src="data:image/png;base64,{b64}">'
                     f"<figcaption>{_e(cap)}</figcaption></figure>" for cap, b64 in figs)


def _gap_sentence(g: FlopsGap) -> str:
    return (f"{g.slow} needs {g.macs_ratio:.2f}x the MACs of {g.fast} but runs {g.latency_ratio:.2f}x slower "
            f"({g.slow_ms:.2f} vs {g.fast_ms:.2f} ms) on {g.device}, {g.setting}")


_VERDICT_HEADERS = ["verdict", "claim", "statement", "claimed", "measured", "evidence", "why"]


def _checked_table(verdicts: Sequence[Verdict]) -> str:
    """Every confirmed or contradicted claim, absolute and relative apart, each with what it is evidence about."""
    judged = [v for v in verdicts if v.status != NOT_MEASURABLE]
    judged.sort(key=lambda v: (v.kind != "absolute", v.status != CONTRADICTED, v.claim.id))
    if not judged:
        return ('<table id="claims-table"><tbody><tr><td>No claim was measurable with these results; '
                "see All claims for what each one needs.</td></tr></tbody></table>")
    rows = [[v.status, v.kind, v.claim.id, format_value(v.claimed, v.unit, v.claim.relation if v.kind == "relative"
                                                        else None),
             format_value(v.measured, v.unit, None, v.measured_ci), v.evidence] for v in judged]
    return _table(["verdict", "kind", "claim", "claimed", "measured", "evidence (what it is about)"], rows,
                  "claims-table", [v.status.replace(" ", "-") for v in judged])


def _verdict_rows(vs: Sequence[Verdict]) -> tuple[list[list[Any]], list[str]]:
    rows, classes = [], []
    for v in vs:
        rows.append([v.status, v.claim.id, v.claim.statement,
                     format_value(v.claimed, v.unit, v.claim.relation if v.kind == "relative" else None),
                     format_value(v.measured, v.unit, None, v.measured_ci), v.evidence, v.detail])
        classes.append(v.status.replace(" ", "-"))
    return rows, classes


def render_html(data: ReportData) -> str:
    counts = summarize(data.verdicts)
    cards = []
    for kind in ("absolute", "relative", "qualitative"):
        d = counts.get(kind)
        if d:
            cards.append(f'<div class="card">{kind} claims<br><b>{d[CONFIRMED]}</b> confirmed · '
                         f"<b>{d[CONTRADICTED]}</b> contradicted · {d[NOT_MEASURABLE]} not measurable here</div>")
    fastest = fastest_per_model(data.measurements)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(data.title)}</h1>",
        f'<p class="muted">Generated {_e(data.created)} by edge from {len(data.results.sources)} result file(s): '
        f"{len(data.measurements)} benchmark run(s), {len(data.results.manifests)} export manifest(s).</p>",
        '<h2 id="summary">Summary</h2>', f'<div class="cards">{"".join(cards)}</div>',
        "<p>Params and MACs are counted from the zoo's networks. Latency confirms an absolute claim only on the "
        "device the paper names (or one whose device profile declares it of the same kind, same_kind_as): a host "
        "CPU result is evidence about "
        "the host, never about a phone. Relative claims are checked as ratios on each device that has results, "
        "and labelled with it.</p>",
        *[f'<p class="flops-callout"><b>MACs say nothing about latency here:</b> {_e(_gap_sentence(g))} '
          '(<a href="#flops-vs-latency">details</a>)</p>' for g in data.flops_gaps[:3]],
        "<h3>Claims checked with these results</h3>",
        _checked_table(data.verdicts),
        "<h3>Fastest artifact per model</h3>",
        _table(["device", "model", "fastest artifact", "median ms", "95% CI", "artifact"],
               [[m.device_label, m.model, m.setting, round(m.median_ms, 3),
                 f"[{m.ci95_ms[0]:.3f}, {m.ci95_ms[1]:.3f}]", m.artifact] for m in fastest], "fastest-table")
        if fastest else '<p class="muted">No benchmark results were given.</p>',
    ]
    parts += ['<h2 id="latency">Latency distributions</h2>',
              _figures(plot_latency_distributions(data), "No benchmark results were given."),
              _table(["device", "model", "setting", "trials", "median ms", "95% CI", "p10", "p90", "peak MB"],
                     [[m.device_label, m.model, m.setting, len(m.trials) or 1, round(m.median_ms, 3),
                       f"[{m.ci95_ms[0]:.3f}, {m.ci95_ms[1]:.3f}]", *_p10_p90(m),
                       "-" if m.peak_memory_mb is None else round(m.peak_memory_mb, 1)] for m in data.measurements],
                     "latency-table") if data.measurements else ""]
    parts += ['<h2 id="complexity">Latency against MACs and params</h2>',
              _figures(plot_latency_vs_complexity(data), "No zoo model was measured."),
              '<h3 id="flops-vs-latency">Where MACs say nothing about latency</h3>',
              f"<p>Pairs measured with the same setting whose MACs are within {FLOPS_SIMILAR}x of each other but "
              f"whose latency differs by at least {FLOPS_GAP_LATENCY}x. Layout-heavy graphs (reshapes, "
              "transposes), attention and per-sample dynamic activations cost time that a MAC count does not "
              "show.</p>",
              _table(["device", "setting", "slower", "faster", "MACs ratio", "latency ratio", "slower ms",
                      "faster ms"],
                     [[g.device, g.setting, g.slow, g.fast, round(g.macs_ratio, 2), round(g.latency_ratio, 2),
                       round(g.slow_ms, 3), round(g.fast_ms, 3)] for g in data.flops_gaps], "flops-table")
              if data.flops_gaps else '<p class="muted">No such pair among these results.</p>']
    parts += ['<h2 id="claimed-vs-measured">Claimed against measured</h2>',
              _figures(plot_claimed_vs_measured(data), "No claim was measurable with these results.")]
    q = data.quantized_manifests
    parts += ['<h2 id="fidelity">Quantization fidelity and sizes</h2>',
              _figures(plot_fidelity_and_sizes(data), "No export manifests were given."),
              _table(["model", "target", "precision", "size MB", "SQNR dB", "top-1 agree", "numerics"],
                     [[m.get("model"), m.get("target"), m.get("precision"),
                       round(m["artifact"]["size_bytes"] / 1e6, 3),
                       _fmt(_fidelity(m, "sqnr_db")), _fmt(_fidelity(m, "top1_agree")), m.get("status")]
                      for m in data.results.manifests if (m.get("artifact") or {}).get("size_bytes")],
                     "sizes-table") if data.results.manifests else "",
              "" if q else '<p class="muted">No quantized (int8) exports among these results.</p>']
    parts += ['<h2 id="claims">All claims</h2>']
    for kind, title in (("absolute", "Absolute claims"),
                        ("relative", "Relative claims (ratios; each row is evidence about its device only)"),
                        ("qualitative", "Qualitative findings")):
        vs = [v for v in data.verdicts if v.kind == kind]
        if not vs:
            continue
        parts.append(f"<h3>{_e(title)}</h3>")
        judged = [v for v in vs if v.status != NOT_MEASURABLE]
        if judged:
            rows, classes = _verdict_rows(judged)
            parts.append(_table(_VERDICT_HEADERS, rows, f"claims-{kind}", classes))
        rest = [v for v in vs if v.status == NOT_MEASURABLE]
        if rest:
            rows, classes = _verdict_rows(rest)
            parts.append(f"<details><summary>{len(rest)} {kind} claim(s) not measurable here, and why</summary>"
                         + _table(_VERDICT_HEADERS, rows, f"claims-{kind}-not-measurable", classes) + "</details>")
    parts += ['<h2 id="devices">Devices and tools</h2>']
    for dev_id, dev in data.results.devices().items():
        fp = dev.get("fingerprint") or {}
        parts += [f"<h3>{_e(dev.get('name') or dev_id)} <span class='muted'>({_e(dev_id)}, "
                  f"{_e(dev.get('kind'))})</span></h3>",
                  _table(["field", "value"], [[k, _flat(v)] for k, v in sorted(fp.items())], "fingerprint-" +
                         "".join(ch if ch.isalnum() else "-" for ch in dev_id))]
    tools = tool_versions(data)
    parts += ["<h3>Tool versions</h3>",
              _table(["tool", "version"], tools.items(), "tools-table") if tools
              else '<p class="muted">No tool versions were recorded in these results.</p>']
    parts += ["</body></html>"]
    return "\n".join(p for p in parts if p)


def _p10_p90(m: Measurement) -> list[Any]:
    import numpy as np

    s = m.samples_ms
    return [round(float(np.percentile(s, 10)), 3), round(float(np.percentile(s, 90)), 3)] if s else ["-", "-"]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _flat(v: Any) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}={_flat(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_flat(x) for x in v)
    return str(v)


# --------------------------------------------------------------------------------------------------- Markdown


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str("" if x is None else x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(data: ReportData) -> str:
    counts = summarize(data.verdicts)
    out = [f"# {data.title}", "", f"Generated {data.created}. Plots are in the HTML report (`edge report -o`).", ""]
    out += ["## Summary", ""]
    for kind, d in counts.items():
        out.append(f"- {kind} claims: {d[CONFIRMED]} confirmed, {d[CONTRADICTED]} contradicted, "
                   f"{d[NOT_MEASURABLE]} not measurable here")
    for g in data.flops_gaps[:3]:
        out.append(f"- **MACs say nothing about latency here:** {_gap_sentence(g)}")
    judged = [v for v in data.verdicts if v.status != NOT_MEASURABLE]
    if judged:
        out += ["", "### Claims checked with these results", "",
                _md_table(["verdict", "kind", "claim", "claimed", "measured", "evidence (what it is about)"],
                          [[v.status, v.kind, v.claim.id,
                            format_value(v.claimed, v.unit, v.claim.relation if v.kind == "relative" else None),
                            format_value(v.measured, v.unit, None, v.measured_ci), v.evidence] for v in judged])]
    fastest = fastest_per_model(data.measurements)
    if fastest:
        out += ["", "### Fastest artifact per model", "",
                _md_table(["device", "model", "fastest artifact", "median ms", "95% CI"],
                          [[m.device_label, m.model, m.setting, f"{m.median_ms:.3f}",
                            f"[{m.ci95_ms[0]:.3f}, {m.ci95_ms[1]:.3f}]"] for m in fastest])]
    for kind, title in (("absolute", "Absolute claims"),
                        ("relative", "Relative claims (each row is evidence about its device only)"),
                        ("qualitative", "Qualitative findings")):
        vs = [v for v in data.verdicts if v.kind == kind]
        if vs:
            rows, _ = _verdict_rows(vs)
            out += ["", f"## {title}", "",
                    _md_table(["verdict", "claim", "statement", "claimed", "measured", "evidence", "why"], rows)]
    if data.measurements:
        out += ["", "## Latency", "",
                _md_table(["device", "model", "setting", "median ms", "95% CI"],
                          [[m.device_label, m.model, m.setting, f"{m.median_ms:.3f}",
                            f"[{m.ci95_ms[0]:.3f}, {m.ci95_ms[1]:.3f}]"] for m in data.measurements])]
    out += ["", "## Where MACs say nothing about latency", ""]
    out.append(_md_table(["device", "setting", "slower", "faster", "MACs ratio", "latency ratio"],
                         [[g.device, g.setting, g.slow, g.fast, f"{g.macs_ratio:.2f}", f"{g.latency_ratio:.2f}"]
                          for g in data.flops_gaps]) if data.flops_gaps else "No such pair among these results.")
    if data.results.manifests:
        out += ["", "## Sizes and fidelity", "",
                _md_table(["model", "target", "precision", "size MB", "SQNR dB", "top-1 agree"],
                          [[m.get("model"), m.get("target"), m.get("precision"),
                            f"{m['artifact']['size_bytes'] / 1e6:.3f}", _fmt(_fidelity(m, "sqnr_db")),
                            _fmt(_fidelity(m, "top1_agree"))]
                           for m in data.results.manifests if (m.get("artifact") or {}).get("size_bytes")])]
    out += ["", "## Devices and tools", ""]
    for dev_id, dev in data.results.devices().items():
        fp = dev.get("fingerprint") or {}
        out += [f"**{dev.get('name') or dev_id}** ({dev_id}, {dev.get('kind')})", "",
                _md_table(["field", "value"], [[k, _flat(v)] for k, v in sorted(fp.items())]), ""]
    tools = tool_versions(data)
    if tools:
        out += [_md_table(["tool", "version"], tools.items())]
    return "\n".join(out) + "\n"


def write_report(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str] | None = "report.html",
                 markdown: str | os.PathLike[str] | None = None, *, device: str | None = None,
                 complexity: ComplexityFn | ComplexityCache | None = None, title: str = "edge report") -> ReportData:
    """Write the HTML page (and/or Markdown) atomically; returns the data they were made from."""
    from edge._io import write_text

    data = collect(paths, device=device, complexity=complexity)
    data.title = title
    if out:
        write_text(Path(out), render_html(data))
    if markdown:
        write_text(Path(markdown), render_markdown(data))
    return data
