"""`edge check`: the CI gate (export, numerics, size and fidelity budgets, host latency against a baseline)."""

from __future__ import annotations

import argparse

HELP = "CI gate: export each configured case, check numerics, size, fidelity and host latency against a baseline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="edge-check.toml", help="the matrix to check (default edge-check.toml)")
    p.add_argument("--baseline", metavar="FILE",
                   help="latency baseline JSON (default: [defaults] baseline in the config, edge-check-baseline.json)")
    p.add_argument("--update-baseline", action="store_true",
                   help="record this run's latencies as the new baseline (written atomically); latency is not judged")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML (one test per case and step)")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown summary fit for a pull-request comment")
    p.add_argument("--only", action="append", default=[], metavar="CASE",
                   help="run only cases whose id (model/target-precision) contains this text; repeatable")


def run(args: argparse.Namespace) -> int:
    from edge.check import check

    report = check(args.config, baseline=args.baseline, update_baseline=args.update_baseline, junit=args.junit,
                   markdown=args.markdown, only=args.only)
    failed = [r for r in report.results if r.failed]
    print(f"edge check: {len(report.results) - len(failed)} of {len(report.results)} case(s) passed"
          + (f"; failed: {', '.join(r.case.id for r in failed)}" if failed else "")
          + f" ({report.seconds:.0f}s)")
    return report.exit_code
