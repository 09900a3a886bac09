"""`edge bench` (= `edge-bench`): latency and memory on the host, adb phones and ssh boards.

`edge bench MODEL --target tflite --int8` exports first; `edge bench parse FILE` parses a saved run of a
benchmark binary (same as `edge parse`). Everything here is a call to `edge.devices.bench`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.errors import EdgeError

HELP = "measure latency and memory of artifacts on the host, adb phones and ssh boards"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT",
                   help="model file (.tflite/.onnx/.mlpackage), export folder, or a zoo MODEL with --target "
                        "(exported first); `edge bench parse FILE` parses a saved benchmark-binary output")
    p.add_argument("--device", "-d", action="append", metavar="DEV",
                   help="host | adb[:SERIAL] | ssh://[user@]host[:port] | PROFILE (repeat for several at once; "
                        "default host)")
    g = p.add_argument_group("how to run")
    g.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    g.add_argument("--delegate", help="cpu|xnnpack|gpu|nnapi|hexagon|npu|qnn|coreml-all|coreml-ane|coreml-cpu|"
                                      "coreml-gpu (default: xnnpack for TFLite, cpu for ONNX)")
    g.add_argument("--runtime", help="litert|onnxruntime|coreml (in-process / runner) or benchmark_model|"
                                     "benchmark_litert_model|onnxruntime_perf_test (binaries)")
    g.add_argument("--binary", help="benchmark binary to push (local path) or device:/path already there")
    g.add_argument("--runs", type=int, default=50, help="timed inferences per trial (default 50)")
    g.add_argument("--warmup", type=int, default=10, help="warm-up inferences per trial (default 10)")
    g.add_argument("--min-seconds", type=float, metavar="S",
                   help="each trial times at least --runs inferences and at least S seconds, as benchmark_model's "
                        "--min_secs (default 1; 0: exactly --runs)")
    g.add_argument("--trials", default="auto", metavar="N|auto",
                   help="trials, each a fresh session; auto (default): at least 10, until the 95%% CI is within "
                        "--target-ci, at most --max-trials")
    g.add_argument("--target-ci", type=float, metavar="PCT",
                   help="--trials auto stops once the CI half-width is this %% of the median (default 2)")
    g.add_argument("--max-trials", type=int, metavar="N", help="--trials auto stops here (default 30)")
    g.add_argument("--cores", help="big | prime | all | hex mask (f0) | CPU list (4-7); default big "
                                   "(found from cpufreq max frequency)")
    g.add_argument("--cooldown", type=float, metavar="SECONDS", help="sleep this long before each trial")
    g.add_argument("--max-temp", type=float, metavar="C", help="before each trial wait until the device is this cool")
    g.add_argument("--poll", type=float, metavar="SECONDS", help="temperature poll interval (default 5)")
    g.add_argument("--cooldown-timeout", type=float, metavar="SECONDS",
                   help="give up waiting for --max-temp after this long (default 900)")
    g.add_argument("--op-profile", action="store_true", help="record per-op times where the runtime offers them")
    g.add_argument("--require-full-delegation", action="store_true",
                   help="fail when the delegate leaves part of the graph to the CPU")
    o = p.add_argument_group("results")
    o.add_argument("--out", default="bench-results", metavar="DIR",
                   help="trials.jsonl + summary.jsonl + raw outputs go here (default bench-results)")
    o.add_argument("--json", metavar="FILE", help="also write the summaries as a JSON list (- for stdout)")
    o.add_argument("--resume", action="store_true", help="continue the last unfinished run with the same settings")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    c = p.add_argument_group("connections")
    c.add_argument("--profiles", metavar="DIR", help="folder of device profiles (*.toml)")
    c.add_argument("--adb", metavar="PATH", help="adb client to use (default: adb on PATH)")
    c.add_argument("--adb-server", metavar="HOST:PORT", help="remote adb server (device farms); or ADB_SERVER_SOCKET")
    e = p.add_argument_group("export first (MODEL instead of an artifact)")
    e.add_argument("--target", help="tflite | onnx | coreml")
    e.add_argument("--precision", help="fp32 | fp16 | int8 | int8w | w8a16 | int8dyn (default fp32)")
    e.add_argument("--int8", action="store_true", help="same as --precision int8")
    e.add_argument("--export-out", default="out", metavar="DIR", help="where the export goes (default out)")
    p.add_argument("--format", help="for `edge bench parse`: benchmark_model | benchmark_litert_model | perf_test")


def run(args: argparse.Namespace) -> int:
    if args.artifacts[0] == "parse" and not Path("parse").exists():
        from edge.cli.parse import parse_files

        return parse_files(args.artifacts[1:], args.format)
    from edge._io import write_json
    from edge._progress import Progress
    from edge.devices import bench, format_table

    paths = [_resolve(a, args) for a in args.artifacts]
    given = {k: v for k, v in (("target_ci", args.target_ci), ("max_trials", args.max_trials),
                               ("min_seconds", args.min_seconds)) if v is not None}
    progress = Progress(quiet=args.quiet)
    report = bench(paths, args.device or ["host"], runtime=args.runtime, delegate=args.delegate, threads=args.threads,
                   runs=args.runs, warmup=args.warmup, cores=args.cores, op_profile=args.op_profile,
                   binary=args.binary, trials=args.trials, cooldown=args.cooldown, max_temp=args.max_temp,
                   poll=args.poll, cooldown_timeout=args.cooldown_timeout, out=args.out, resume=args.resume,
                   require_full_delegation=args.require_full_delegation, profiles_dir=args.profiles, adb=args.adb,
                   adb_server=args.adb_server, progress=progress, check=False, **given)
    table_to = sys.stderr if args.json == "-" else sys.stdout  # keep stdout pure JSON for pipes
    if report.summaries:
        print(format_table(report.summaries), file=table_to)
        print(f"\n{sum(s['trials'] for s in report.summaries)} trial(s) in {report.trials_file}; "
              "95% CI: bootstrap over trials and runs", file=table_to)
        drifting = [s for s in report.summaries if any(v is True for v in (s.get("drift") or {}).values())]
        for s in drifting:
            d = s["drift"]
            print(f"warning: drift on {s['device']['id']} ({Path(s['artifact']).name}): latency "
                  f"{d['latency_change_pct']}% across trials, temperature {d['temperature_change_c']} C, "
                  f"frequency {d['frequency_change_pct']}%; use --cooldown/--max-temp or more trials",
                  file=sys.stderr)
    if args.json:
        if args.json == "-":
            print(json.dumps(report.summaries, indent=2))
        else:
            write_json(args.json, report.summaries)
    if report.errors:
        for dev_id, e in report.errors[1:]:
            print(f"edge bench: error on {dev_id}: {e}", file=sys.stderr)
        raise report.errors[0][1]
    return 0


def _resolve(name: str, args: argparse.Namespace) -> str:
    """An existing path as is; a zoo model name with --target is exported first."""
    if Path(name).expanduser().exists():
        return name
    precision = "int8" if args.int8 else (args.precision or "fp32")
    if not args.target:
        raise EdgeError(f"no artifact or export folder at {name}",
                        f"to export the zoo model first: edge bench {name} --target tflite [--int8]")
    from edge.export import export  # the one place edge-bench needs the exporter

    results = export(name, target=args.target, precision=precision, out=args.export_out)
    return str(results[0].path)
