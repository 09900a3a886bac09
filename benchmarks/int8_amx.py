"""How much of the TFLite int8 speed-up XNNPACK's AMX kernels give or take on this CPU.

    .venv/bin/python benchmarks/int8_amx.py [--models ghostnet-1.0x ...] [--sessions 5] [--runs 40]

Why it exists: issue 6 asks for TFLite int8 at least 1.8x faster than fp32, and on the AMX Xeon the small CNNs stay
near 1.2-1.5x while EfficientFormer-L1 reaches 3.4x (docs/fast-artifacts.md). Kernel profiles put most int8 GEMM time
in ``qs8_qc8w_*gemm_*__avx512amx``, whose 16x64 tiles suit wide layers. XNNPACK uses AMX only when the kernel lets
the process use tile data (it asks with ``arch_prctl(ARCH_REQ_XCOMP_PERM)`` and falls back to its AVX-512 VNNI
kernels when refused), so the same file can be timed both ways: each measurement runs in a child process, and in
the "VNNI" children a seccomp filter makes that request fail before LiteRT loads. Nothing else changes: same
files, same interpreter, same input.

Per session, one AMX child and one VNNI child (in alternating order) each time the network's fp32 and int8 files
round-robin at 1 and 2 threads (``bench_fast_artifacts.time_artifacts``); a child's int8 / fp32 ratio is immune to
the VM's speed level, and the table gives the median over sessions of those ratios. The ms columns are medians
over sessions and move with the level. Uses the files ``bench_fast_artifacts.py`` cached in ``--work`` (exported
there first when missing). Linux x86-64 only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_fast_artifacts import THREADS, export_edge, machine, time_artifacts  # noqa: E402

MODELS = ("ghostnet-1.0x", "mobilenetv3-large-1.0", "efficientformer-l1", "efficientformerv2-s0",
          "mobileformer-294m")
SYS_ARCH_PRCTL = 158  # x86-64
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18


def refuse_amx() -> None:
    """Install a seccomp filter that fails ``arch_prctl(ARCH_REQ_XCOMP_PERM, ...)`` with EPERM, for this process.

    Classic BPF over ``struct seccomp_data`` (nr at offset 0, args[0] at 16): that one request gets an error,
    every other syscall is allowed. A filter cannot be removed, hence the child processes.
    """
    ld_w_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    errno_eperm, allow = 0x00050000 | 1, 0x7FFF0000
    prog = [(ld_w_abs, 0, 0, 0), (jeq_k, 0, 3, SYS_ARCH_PRCTL), (ld_w_abs, 0, 0, 16),
            (jeq_k, 0, 1, ARCH_REQ_XCOMP_PERM), (ret_k, 0, 0, errno_eperm), (ret_k, 0, 0, allow)]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    fprog = SockFprog(len(prog), ctypes.cast(code, ctypes.c_void_p))
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) or libc.prctl(pr_set_seccomp, seccomp_mode_filter,
                                                                  ctypes.byref(fprog), 0, 0):
        raise OSError(ctypes.get_errno(), "could not install the seccomp filter")
    if libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != -1:
        raise RuntimeError("the AMX permission request still succeeds")


def child(mode: str, fp32: str, int8: str, runs: int) -> None:
    """Time the two files in this process (AMX allowed or refused); print JSON: threads -> label -> median ms."""
    if mode == "vnni":
        refuse_amx()
    x = np.asarray(np.random.default_rng(0).standard_normal((1, 3, 224, 224)), np.float32)
    timed = time_artifacts({"tflite": {"fp32": Path(fp32), "int8": Path(int8)}}, x, runs, warmup=5)
    print(json.dumps({t: {k: v["median"] for k, v in timed[f"tflite/{t}"].items()} for t in THREADS}))


def run_child(mode: str, files: dict[str, str], runs: int) -> dict[str, dict[str, float]]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, files["fp32"], files["int8"], str(runs)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--sessions", type=int, default=5, help="AMX / VNNI child pairs per network")
    ap.add_argument("--runs", type=int, default=40, help="timed runs per file, thread count and child")
    ap.add_argument("--work", default=str(ROOT / "out" / "fast-artifacts"), help="bench_fast_artifacts' cache")
    ap.add_argument("--child", nargs=4, metavar=("MODE", "FP32", "INT8", "RUNS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return 0
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        print("int8_amx.py needs Linux on x86-64 (seccomp and AMX)", file=sys.stderr)
        return 2
    m = machine()
    print(f"Machine: {m['cpu']}, {m['cores']} logical cores, ISA {', '.join(m['isa'])}, {m['os']}.\n")
    print(f"LiteRT with XNNPACK, edge's NHWC TFLite files. {args.sessions} sessions per network, each one child "
          f"process with AMX and one with AMX refused (VNNI), timing fp32 and int8 round-robin, {args.runs} runs "
          "each; speed-up = median over sessions of each child's fp32 / int8 (range in brackets).\n")
    print("| network | threads | fp32 ms AMX / VNNI | int8 ms AMX / VNNI | int8 speed-up, AMX | int8 speed-up, VNNI |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        arts = export_edge(name, Path(args.work) / "edge", False,
                           [("tflite", "fp32", True), ("tflite", "int8", True)])
        files = {p: arts[f"tflite-{p}"]["path"] for p in ("fp32", "int8")}
        got: dict[str, list[dict[str, dict[str, float]]]] = {"amx": [], "vnni": []}
        for s in range(args.sessions):
            for mode in ("amx", "vnni") if s % 2 == 0 else ("vnni", "amx"):
                got[mode].append(run_child(mode, files, args.runs))
        for t in THREADS:
            cells = []
            for key in ("fp32", "int8"):
                cells.append(" / ".join(f"{statistics.median(r[str(t)][key] for r in got[mode]):.2f}"
                                        for mode in ("amx", "vnni")))
            for mode in ("amx", "vnni"):
                ratios = [r[str(t)]["fp32"] / r[str(t)]["int8"] for r in got[mode]]
                cells.append(f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
            print(f"| {name} | {t} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
