"""TFLite int8 on LiteRT's own kernels (XNNPACK off) against its default XNNPACK delegate, on this machine.

    .venv/bin/python benchmarks/litert_builtin_kernels.py [--models ghostnet-1.0x ...] [--sessions 3] [--runs 20]

Why it exists: issue 6 asks for TFLite int8 at least 1.8x faster than fp32, and on this x86 host XNNPACK's int8
kernels give GhostNet, MobileNetV3 and Mobile-Former less (docs/fast-artifacts.md). LiteRT has one other CPU path,
its built-in kernels (ruy GEMMs, its own depthwise kernels), selected with ``OpResolverType.
BUILTIN_WITHOUT_DEFAULT_DELEGATES``. This times edge's NHWC fp32 and int8 files both ways, round-robin in each of
``--sessions`` fresh sessions (``bench_fast_artifacts.time_artifacts``); cells are medians over sessions (ms), and
the ratio columns medians of the per-session ratios. Uses the files ``bench_fast_artifacts.py`` cached in
``--work`` (exported there first when missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_fast_artifacts import THREADS, _image, _speedup, export_edge, machine, time_artifacts  # noqa: E402

MODELS = ("ghostnet-1.0x", "mobilenetv3-large-1.0", "efficientformerv2-s0", "mobileformer-294m")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--sessions", type=int, default=3, help="fresh interpreters per file")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per file and session")
    ap.add_argument("--work", default=str(ROOT / "out" / "fast-artifacts"), help="bench_fast_artifacts' cache")
    args = ap.parse_args(argv)
    m = machine()
    print(f"Machine: {m['cpu']}, {m['cores']} logical cores, ISA {', '.join(m['isa'])}, {m['os']}.\n")
    print("| network | threads | XNNPACK fp32 ms | XNNPACK int8 ms | built-in fp32 ms | built-in int8 ms | "
          "int8 speed-up over fp32, XNNPACK | int8 speed-up over fp32, built-in | built-in int8 / XNNPACK int8 time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        arts = export_edge(name, Path(args.work) / "edge", False, [("tflite", "fp32", True), ("tflite", "int8", True)])
        files = {p: Path(arts[f"tflite-{p}"]["path"]) for p in ("fp32", "int8")}
        timed = time_artifacts({"tflite": files, "tflite-builtin": files}, _image(name, 224), args.runs, warmup=3,
                               sessions=args.sessions)
        for t in THREADS:
            xnn, builtin = timed[f"tflite/{t}"], timed[f"tflite-builtin/{t}"]
            print(f"| {name} | {t} | {xnn['fp32']['median']:.2f} | {xnn['int8']['median']:.2f} | "
                  f"{builtin['fp32']['median']:.2f} | {builtin['int8']['median']:.2f} | "
                  f"{_speedup(xnn['fp32'], xnn['int8']):.2f}x | {_speedup(builtin['fp32'], builtin['int8']):.2f}x | "
                  f"{builtin['int8']['median'] / xnn['int8']['median']:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
