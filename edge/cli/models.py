"""`edge models`: the zoo table with counted params and MACs beside the paper's."""

from __future__ import annotations

import argparse
import json

HELP = "list the zoo: params and MACs counted from each network, beside the paper's numbers"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", help="variants to show (default: all)")
    p.add_argument("--family", help="only this family")
    p.add_argument("--json", action="store_true", help="print the same data as JSON")


def run(args: argparse.Namespace) -> int:
    from edge.models import complexity, get_info, list_models

    names = [get_info(n).name for n in args.names] or list_models(args.family)
    rows = []
    for n in names:
        row = complexity(n)
        row["info"] = get_info(n).as_dict()
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "params", "MACs", "input", "paper params", "Δ", "paper MACs", "Δ")
    table = [header]
    for r in rows:
        table.append((
            r["name"],
            f"{r['params'] / 1e6:.2f}M",
            f"{r['macs'] / 1e6:.0f}M",
            "x".join(str(s) for s in r["input_size"][1:]),
            _m(r["paper_params_m"]),
            _pct(r["params_diff_pct"]),
            _m(r["paper_macs_m"]),
            _pct(r["macs_diff_pct"]),
        ))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nΔ compares the paper's numbers under each paper's counting convention (`edge models --json` states it).")
    return 0


def _m(v: float | None) -> str:
    return "-" if v is None else f"{v:g}M"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}%"
