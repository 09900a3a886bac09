"""`edge claims`: each paper claim's verdict, with the claimed and measured numbers side by side."""

from __future__ import annotations

import argparse
import json

HELP = "check the papers' claims: confirmed, contradicted, or not measurable here"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", action="append", default=[], metavar="PATH",
                   help="bench results (trial JSON lines, summaries), export dirs with manifests, or edge.eval/1 "
                        "records; a directory is searched recursively; repeatable")
    p.add_argument("--device", help="judge latency only from this device (id, name, kind or profile)")
    p.add_argument("--kind", choices=("absolute", "relative", "qualitative"), help="only claims of this kind")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")


def run(args: argparse.Namespace) -> int:
    from edge.claims.verdict import claims, summarize

    verdicts = claims(args.results, device=args.device, kind=args.kind)
    if args.json:
        print(json.dumps({"schema": "edge.claims.verdicts/1", "summary": summarize(verdicts),
                          "absolute": [v.as_dict() for v in verdicts if v.kind == "absolute"],
                          "relative": [v.as_dict() for v in verdicts if v.kind == "relative"],
                          "qualitative": [v.as_dict() for v in verdicts if v.kind == "qualitative"]}, indent=2))
        return 0
    print(format_text(verdicts))
    return 0


_MARK = {"confirmed": "ok ", "contradicted": "NO ", "not measurable here": " - "}


def format_text(verdicts: list) -> str:
    from edge.claims.verdict import format_value, summarize

    lines: list[str] = []
    titles = {"absolute": "Absolute claims (params and MACs from the zoo; latency on the named device only)",
              "relative": "Relative claims (ratios, each labelled with the device it was measured on)",
              "qualitative": "Qualitative findings (no number to check)"}
    for kind, title in titles.items():
        vs = [v for v in verdicts if v.kind == kind]
        if not vs:
            continue
        lines += ["", title, "-" * len(title)]
        rows = [("", "claim", "claimed", "measured", "evidence / why")]
        for v in vs:
            rows.append((_MARK[v.status], v.claim.id,
                         format_value(v.claimed, v.unit, v.claim.relation if kind == "relative" else None),
                         format_value(v.measured, v.unit, None, v.measured_ci),
                         v.evidence + (": " if v.evidence and v.detail else "") + v.detail if kind != "qualitative"
                         else v.claim.statement))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    counts = summarize(verdicts)
    lines.append("")
    for kind, d in counts.items():
        lines.append(f"{kind}: " + ", ".join(f"{n} {s}" for s, n in d.items()))
    lines.append("ok = confirmed, NO = contradicted, - = not measurable here")
    return "\n".join(lines).lstrip("\n")

