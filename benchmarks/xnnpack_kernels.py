"""Where a .tflite file's time goes inside LiteRT's XNNPACK delegate, per microkernel, on this machine.

    .venv/bin/python benchmarks/xnnpack_kernels.py MODEL.tflite [MODEL.tflite ...] [--runs 300] [--top 12]

LiteRT's Python interpreter has no per-op profiler, but ai-edge-litert's shared library keeps XNNPACK's symbol
table, so Linux ``perf`` (package ``linux-perf``) can sample one interpreter invoked back to back (1 thread, fixed
input) and attribute the samples to microkernels: ``xnn_f32_gemm_*`` (float convolutions and matmuls),
``xnn_qs8_qc8w_gemm_*`` (int8 ones; ``avx512amx`` = AMX tiles), ``xnn_qs8_qc8w_dwconv_*`` (int8 depthwise),
``xnn_x8_lut_*`` (int8 table lookups: GELU / HARD_SWISH islands XNNPACK fuses), ``*_vcvt_*`` (QUANTIZE /
DEQUANTIZE). A kernel names the kind of work, not the op of the graph it came from. Needs permission to run
``perf record`` (root, or ``kernel.perf_event_paranoid`` <= 1).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LOOP = """
import sys, time, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=1)
it.allocate_tensors()
for d in it.get_input_details():
    x = np.random.default_rng(0).standard_normal(d["shape"]).astype(np.float32)
    if d["dtype"] != np.float32:
        s, z = d["quantization"]
        info = np.iinfo(d["dtype"])
        x = np.clip(np.round(x / s + z), info.min, info.max).astype(d["dtype"])
    it.set_tensor(d["index"], x)
for _ in range(10):
    it.invoke()
t0 = time.perf_counter()
for _ in range(int(sys.argv[2])):
    it.invoke()
print(f"{(time.perf_counter() - t0) / int(sys.argv[2]) * 1e3:.3f}")
"""


def profile(model: str, runs: int) -> tuple[float, list[tuple[float, str]]]:
    """(ms per invoke while sampled, [(percent of samples, symbol)]) for one file."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        # one BLAS thread: numpy's idle OpenBLAS workers would otherwise show up among the samples
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        rec = subprocess.run(["perf", "record", "-q", "-F", "2000", "-o", str(data), sys.executable, "-c", LOOP,
                              model, str(runs)], capture_output=True, text=True, env=env)
        if rec.returncode != 0:
            raise SystemExit(f"perf record failed for {model}: {rec.stderr.strip()[-400:]}")
        ms = float(rec.stdout.strip().splitlines()[-1])
        rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "symbol", "--stdio",
                              "--percent-limit", "0.3"], capture_output=True, text=True, check=True)
    rows = []
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[\.\]\s+(\S.*?)\s*$", line)
        if m:
            rows.append((float(m.group(1)), re.sub(r"(\s+-)+\s*$", "", m.group(2))))
    return ms, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--runs", type=int, default=300, help="invokes sampled per file")
    ap.add_argument("--top", type=int, default=12, help="kernels listed per file")
    args = ap.parse_args(argv)
    if shutil.which("perf") is None:
        print("error: perf is not installed (Debian: apt-get install linux-perf)", file=sys.stderr)
        return 2
    for model in args.models:
        ms, rows = profile(model, args.runs)
        print(f"\n{model}: {ms:.2f} ms per invoke while sampled (1 thread)")
        print("| share | kernel |\n|---|---|")
        for pct, sym in rows[:args.top]:
            print(f"| {pct:.1f}% | `{sym}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
