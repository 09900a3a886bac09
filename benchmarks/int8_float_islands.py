"""Which int8 layers run slower than their float form in LiteRT's XNNPACK on this CPU, and what keeping them float buys.

    .venv/bin/python benchmarks/int8_float_islands.py [--models ghostnet-1.0x ...] [--sessions 5] [--runs 40]

Why it exists: issue 6 asks for TFLite int8 at least 1.8x faster than fp32 for every family, and GhostNet,
MobileNetV3 and Mobile-Former stay near 1.3-1.5x on the AMX Xeon (docs/fast-artifacts.md). Kernel profiles
(``benchmarks/xnnpack_kernels.py``) point at two kinds of layer whose int8 kernels are slower than the float ones:

* **the stem convolution** (3x3, stride 2, 3 input channels): XNNPACK runs it as an indirect GEMM on AMX tiles
  (``qs8_qc8w_igemm_*_16x64c4__avx512amx``), whose 64-wide tiles and per-tap K of 3 are mostly padding;
* **Mobile-Former's dynamic ReLUs** (``max(a1 * x, a2 * x)`` on full-resolution maps): int8 MUL and ADD/SUB
  kernels that requantize every element.

This script measures both: first the stem convolution alone (a 3 -> 16 channel, 3x3 stride-2 conv with ReLU at
224x224, fp32 against int8), then each network's fp32 file, its default int8 file, and the int8 file with those
layers kept float (``--keep-float`` with the ops' tensor names; the quantizer puts DEQUANTIZE / QUANTIZE around
them). All files of one network are timed round-robin in each of ``--sessions`` fresh interpreters (this VM's
speed level moves every few seconds, so only files timed in the same session compare); speed-ups are the median
of the per-session ratios. Output SNR is the export gate's, against PyTorch on the built-in images.

Keeping the stem float is not edge's default: the int8 graph would no longer be full-integer, which integer-only
accelerators (Edge TPU, Hexagon, Ethos-U) need, and on ARM CPUs XNNPACK's int8 kernels have no such padding. The
table tells an x86 user what ``--keep-float`` is worth there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_fast_artifacts import THREADS, _paired, machine, time_artifacts  # noqa: E402

MODELS = ("ghostnet-1.0x", "mobilenetv3-large-1.0", "efficientformerv2-s0", "mobileformer-294m")


def stem_ops(layers: list[dict[str, Any]]) -> list[str]:
    """The first CONV_2D and the PAD feeding it: the stem convolution on the 3-channel image."""
    first = next(i for i, ly in enumerate(layers) if ly["op"] == "CONV_2D")
    conv = layers[first]
    pads = [ly["name"] for ly in layers[:first] if ly["op"] == "PAD" and ly["output"] in conv["inputs"]]
    return pads + [conv["name"]]


def dynamic_relu_ops(layers: list[dict[str, Any]]) -> list[str]:
    """The MULs and MAXIMUMs of every module that holds a MAXIMUM (Mobile-Former's dynamic ReLUs)."""
    modules = {ly["module"] for ly in layers if ly["op"] == "MAXIMUM"}
    return [ly["name"] for ly in layers if ly["module"] in modules and ly["op"] in ("MUL", "MAXIMUM")]


ISLANDS = {"stem conv float": stem_ops, "dynamic ReLUs float": dynamic_relu_ops}


def islands_for(layers: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {label: ops for label, pick in ISLANDS.items() if (ops := pick(layers))}


class StemConv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def export_tflite(model: Any, precision: str, out: Path, keep: tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    from edge._progress import Progress
    from edge.export import export
    from edge.export.context import QuantOptions

    # random weights: an int8 file may miss the fidelity gate; it is kept and timed anyway (strict=False)
    res = export(model, target="tflite", precision=precision, out=out, channels_last=True,
                 quant=QuantOptions(keep_float=keep), progress=Progress(quiet=True), strict=False, **kw)[0]
    first = next(iter((res.manifest.get("numerics") or {}).get("outputs", {}).values()), {})
    return {"path": res.artifact, "sqnr_db": first.get("sqnr_db"), "passed": res.passed}


def time_files(files: dict[str, Path], sessions: int, runs: int) -> dict[int, dict[str, dict[str, float]]]:
    """threads -> file -> median ms over sessions and the median / range of the per-session fp32 / file ratios
    (bench_fast_artifacts' timing: every file afresh in each session, round-robin)."""
    x = np.asarray(np.random.default_rng(0).standard_normal((1, 3, 224, 224)), np.float32)
    timed = time_artifacts({"tflite": files}, x, runs, warmup=5, sessions=sessions)
    out: dict[int, dict[str, dict[str, float]]] = {}
    for threads in THREADS:
        stats = timed[f"tflite/{threads}"]
        out[threads] = {}
        for k, st in stats.items():
            ratios = _paired(stats["fp32"], st) or [stats["fp32"]["median"] / st["median"]]
            out[threads][k] = {"ms": st["median"], "speedup": statistics.median(ratios), "lo": min(ratios),
                               "hi": max(ratios)}
    return out


def main(argv: list[str] | None = None) -> int:
    from edge.export.quantize.tflite import TfliteGraph

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--sessions", type=int, default=5, help="fresh interpreters per file")
    ap.add_argument("--runs", type=int, default=40, help="timed runs per file and session")
    args = ap.parse_args(argv)
    m = machine()
    print(f"Machine: {m['cpu']}, {m['cores']} logical cores, ISA {', '.join(m['isa'])}, {m['os']}.\n")
    print(f"Median over {args.sessions} fresh sessions of each file's median of {args.runs} runs, LiteRT with "
          "XNNPACK, NHWC files; speed-up = median of the per-session fp32 / file ratios (range in brackets).\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        stem = StemConv().eval()
        files = {p: export_tflite(stem, p, Path(tmp) / "stem", name="stem", img_size=224)["path"]
                 for p in ("fp32", "int8")}
        for threads, t in time_files(files, args.sessions, args.runs * 5).items():
            rows.append(("stem conv alone (3 -> 16, 3x3 s2, 224x224)", threads, "int8", t["fp32"]["ms"],
                         t["int8"], None))
        for name in args.models:
            out = Path(tmp) / name
            fp32 = export_tflite(name, "fp32", out)
            layers = TfliteGraph(fp32["path"]).layers
            variants = {"fp32": fp32, "int8": export_tflite(name, "int8", out)}
            for label, ops in islands_for(layers).items():
                variants[f"int8, {label} ({len(ops)} ops)"] = export_tflite(
                    name, "int8", Path(tmp) / f"{name}-{len(variants)}", keep=tuple(ops))
            for threads, t in time_files({k: v["path"] for k, v in variants.items()}, args.sessions,
                                         args.runs).items():
                for k in variants:
                    if k != "fp32":
                        rows.append((name, threads, k, t["fp32"]["ms"], t[k], variants[k]["sqnr_db"]))
    print("| network | threads | int8 file | fp32 ms | int8 ms | int8 speed-up over fp32 | output SNR dB |")
    print("|---|---|---|---|---|---|---|")
    for name, threads, k, fp32_ms, t, snr in rows:
        snr_txt = "-" if snr is None else f"{snr:.1f}"
        print(f"| {name} | {threads} | {k} | {fp32_ms:.2f} | {t['ms']:.2f} | {t['speedup']:.2f}x "
              f"({t['lo']:.2f}-{t['hi']:.2f}) | {snr_txt} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
