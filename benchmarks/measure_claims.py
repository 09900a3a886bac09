"""Measure what the papers' claims need on this machine's host CPU and write docs/claims.md.

    python benchmarks/measure_claims.py [--out out/claims] [--targets tflite,onnx] [--coreml] [--reuse]
                                        [--runs 50 --warmup 10 --trials 5] [--doc docs/claims.md]

1. exports (fp32) every zoo model that a latency or op-count claim names, through the real pipeline;
2. benchmarks each on the host with the harness (LiteRT/XNNPACK and ONNX Runtime, 1 thread);
3. judges every claim (edge.claims.verdict) and writes the verdicts with the host's fingerprint and the tool
   versions to docs/claims.md, plus the full HTML report to OUT/report.html.

A host result is evidence about the host only: the papers' iPhone 12 and ARM-phone numbers stay "not measurable
here"; relative claims are checked as ratios on this host and labelled with it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.devices.base import DEFAULT_MIN_SECONDS  # noqa: E402


def needed_models() -> list[str]:
    """Zoo models whose latency or op count a host run can judge: relative latency claims (checked as ratios on
    any device), host latency claims and op-count claims. Absolute phone latencies are not measurable here, so
    their models are not exported for them."""
    from edge.claims import load_claims, zoo_name

    out: list[str] = []
    for c in load_claims():
        if c.metric == "ops" or (c.metric == "latency" and (c.kind == "relative" or c.conditions.device == "host")):
            for m in (c.subject, c.reference):
                name = zoo_name(m)
                if name and name not in out:
                    out.append(name)
    return out


def coreml_models() -> set[str]:
    """Models whose Core ML op counts a claim names (Core ML does not run here; only its graph is checked)."""
    from edge.claims import load_claims, zoo_name

    return {zoo_name(c.subject) for c in load_claims() if c.metric == "ops" and c.target == "coreml"} - {None}


def _load_sentence(run: dict) -> str:
    """What the machine's load says about these timings, from the load measured around them."""
    before, after = run.get("load_before"), run.get("load_after")
    cores = os.cpu_count() or 1
    if before is None or after is None:
        load = "load average not recorded, so whether other jobs ran is unknown"
    elif max(before, after) < cores:
        load = f"1-minute load average {before} before / {after} after on {cores} cores: nothing else ran"
    else:
        load = (f"1-minute load average {before} before / {after} after on {cores} cores: the host was shared "
                "with other jobs, so latencies are inflated")
    return (load + ". Fresh sessions of the same file still land up to tens of percent apart on this VM, idle "
            "or not (docs/harness-bench.md, 'session spread'), so a verdict is given only where the 95% interval "
            "lies on one side of the claim; otherwise it reads *too noisy to tell here*.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "out" / "claims"))
    ap.add_argument("--doc", default=str(ROOT / "docs" / "claims.md"))
    ap.add_argument("--targets", default="tflite,onnx", help="targets to export and time (host runs both)")
    ap.add_argument("--coreml", action="store_true",
                    help="also export Core ML for the models with Core ML op-count claims (their graph only)")
    ap.add_argument("--models", help="comma-separated subset (default: every model a claim needs)")
    ap.add_argument("--reuse", action="store_true", help="keep exports and results already in --out")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--min-seconds", type=float, default=DEFAULT_MIN_SECONDS, help="minimum seconds per trial")
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args(argv)

    from edge._progress import Progress
    from edge.devices import bench
    from edge.errors import EdgeError
    from edge.export import export

    out = Path(args.out)
    exports, results = out / "exports", out / "bench"
    progress = Progress()
    models = args.models.split(",") if args.models else needed_models()
    targets = [t for t in args.targets.split(",") if t]
    progress.info(f"models: {', '.join(models)}; targets: {', '.join(targets)}")
    if not args.reuse and results.exists():
        # The harness resumes a run whose artifact and settings match, so an unchanged file would keep the timings
        # of an earlier run (another machine load) beside fresh ones. A new measurement starts from no trials.
        shutil.rmtree(results)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    t0 = time.time()
    failures: list[str] = []
    timed: list[tuple[str, str, Path]] = []
    with_coreml = coreml_models() if args.coreml else set()
    for name in models:
        for target in targets + (["coreml"] if name in with_coreml else []):
            d = exports / name / f"{target}-fp32"
            if args.reuse and (d / "manifest.json").is_file():
                progress.info(f"reuse {d}")
            else:
                try:
                    export(name, target=target, precision="fp32", out=exports, strict=False, progress=progress)
                except EdgeError as e:
                    failures.append(f"export {name} {target}: {e}")
                    progress.info(f"FAILED export {name} {target}: {e}")
                    continue
            if target != "coreml":  # Core ML does not execute off macOS: its export serves the op-count claims
                timed.append((name, target, d))
    # Trials are interleaved across models (round r adds trial r to every artifact, through the harness's
    # resume), so a change in the machine's load hits every model alike instead of skewing one ratio.
    for r in range(1, args.trials + 1):
        progress.info(f"round {r}/{args.trials}")
        for name, target, d in list(timed):
            try:
                bench(str(d), devices="host", threads=1, runs=args.runs, warmup=args.warmup,
                      min_seconds=args.min_seconds, trials=r, resume=True, out=results, progress=progress)
            except EdgeError as e:
                failures.append(f"bench {name} {target}: {e}")
                progress.info(f"FAILED bench {name} {target}: {e}")
                timed.remove((name, target, d))
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    import json

    from edge._io import read_jsonl, write_json

    run_file = out / "run.json"
    n_trials = len(read_jsonl(results / "trials.jsonl"))
    previous = json.loads(run_file.read_text()) if run_file.is_file() else None
    if previous is None or n_trials != previous.get("trials") or not args.reuse:
        run = {"command": "python benchmarks/measure_claims.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "seconds": round(time.time() - t0),
               "load_before": load_before and round(load_before[0], 1),
               "load_after": load_after and round(load_after[0], 1), "trials": n_trials}
        write_json(run_file, run)
    else:
        run = previous  # nothing new was measured: describe the run that took these measurements

    from edge._io import write_text
    from edge.report import collect, render_html, render_markdown

    data = collect([exports, results])
    data.title = "Paper claims measured on this machine's host CPU"
    write_text(out / "report.html", render_html(data))
    md = render_markdown(data)
    body = md[md.index("## Summary"):]  # the doc has its own header
    header = [
        "# Paper claims: verdicts on this machine's host CPU",
        "",
        f"Measured by `{run['command'].strip()}` (finished {run['finished']}, {run['seconds']} s); "
        f"this page rendered {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "- **What was measured:** the fp32 export of every zoo model a latency or op-count claim names "
        f"({', '.join(models)}), as {', '.join(targets)}, timed on the host by the harness "
        f"(1 thread, {args.trials} trials of at least {args.runs} runs and {args.min_seconds:g} s after {args.warmup} "
        "warm-up runs). Params and MACs "
        "are counted from the zoo's networks. Top-1 needs an ImageNet evaluation, which nothing here has run.",
        "- **How to read it:** a host CPU result is evidence about this host only. The papers' absolute latencies "
        "on an iPhone 12 or an ARM phone stay *not measurable here*; relative claims are checked as ratios on this "
        "host and labelled with it, which says whether the ranking carries over to an x86 CPU, not whether the "
        "paper measured its phone correctly.",
        f"- **Machine:** {platform.platform()}, Python {platform.python_version()}; {_load_sentence(run)}",
        f"- **Plots:** `{os.path.relpath(out / 'report.html', ROOT)}` (written by the same run, not committed; "
        "`edge report out/claims` rebuilds it).",
    ]
    if failures:
        header += ["", "**Not measured** (the export or the benchmark failed):", ""]
        header += [f"- {f}" for f in failures]
    write_text(args.doc, "\n".join(header) + "\n\n" + body.lstrip("\n"))
    progress.info(f"wrote {args.doc} and {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
