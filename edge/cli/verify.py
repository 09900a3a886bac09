"""`edge verify EXPORT_DIR`: re-check an export against its manifest and network (sha256 first, then numerics).

Only parses and prints; the work is :func:`edge.export.verify`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "re-run an export's numerics check and detect an artifact changed after export"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("export_dirs", nargs="+", metavar="EXPORT_DIR",
                   help="OUT/<model>/<target>-<precision>/ (or OUT/<model>/ for all its exports)")
    p.add_argument("--json", action="store_true", help="print the numerics reports as JSON")


def _expand(d: str) -> list[Path]:
    p = Path(d)
    if (p / "manifest.json").is_file() or not p.is_dir():
        return [p]
    subs = sorted(x for x in p.iterdir() if (x / "manifest.json").is_file())
    return subs or [p]


def run(args: argparse.Namespace) -> int:
    from edge._progress import Progress
    from edge.errors import NumericsError
    from edge.export import verify

    dirs = [x for d in args.export_dirs for x in _expand(d)]
    results = []
    failed: list[NumericsError] = []
    for d in dirs:
        try:
            results.append(verify(d, progress=Progress()))
        except NumericsError as e:
            failed.append(e)
            results.append(e.result)  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps([{"path": str(r.path), "passed": r.passed, "numerics": r.report} for r in results], indent=2))
    else:
        for r in results:
            m = r.manifest
            outs = ", ".join(f"{k}: SQNR {v['sqnr_db']:.1f} dB" for k, v in r.report.get("outputs", {}).items()
                             if v.get("sqnr_db") is not None)
            print(f"{r.path}: {'ok' if r.passed else 'FAILED'} ({m['target']}-{m['precision']}, "
                  f"{r.report['runtime']}; {outs}; sha256 matches)")
    if failed:
        if len(failed) == 1:
            raise failed[0]
        raise NumericsError(f"{len(failed)} of {len(results)} exports fail the numerics gate: "
                            + "; ".join(e.message for e in failed))
    return 0
