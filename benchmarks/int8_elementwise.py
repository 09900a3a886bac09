"""Is int8 element-wise arithmetic on a feature map faster than float in LiteRT's XNNPACK on this CPU?

    .venv/bin/python benchmarks/int8_elementwise.py [--runs 40] [--sessions 8]

Why it exists: Mobile-Former's int8 TFLite file runs whole in XNNPACK and is still slower than fp32
(docs/fast-artifacts.md); its int8 graph spends most of its element count in the dynamic ReLUs' per-channel
multiplies, subtractions and adds on full-resolution maps. This measures that part alone: a 4x4 stride-4 stem to a
56x56x96 map, then six blocks of either ``x * a`` (per-sample, per-channel ``a``, as Mobile-Former's dynamic-ReLU
slopes), the dynamic ReLU ``max(x * a1, x * a2)`` (which edge's int8 TFLite graph runs as MUL, MUL, SUB with
ReLU, ADD), or the same dynamic ReLU in its difference form ``x * a1 + relu(x * (a2 - a1))`` (the difference taken
on the small slope tensor: MUL, MUL with ReLU, ADD on the map), then a pooled linear head. Each is exported by edge
(TFLite, channels-last) in fp32 and int8 (W8A8, default settings); all six files are timed interleaved in each of
``--sessions`` fresh interpreters (a fresh LiteRT session lands at a different speed on this VM, so one session per
file cannot compare files), LiteRT with its default XNNPACK delegate, 1 thread.

Measured 2026-11-26 (2-core EPYC VM, 8 sessions): the difference form is 9% faster in int8 and 7-8%
slower in fp32 than ``max``, so Mobile-Former's deploy form keeps ``max``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_fast_artifacts import interleaved, tflite_call  # noqa: E402

KINDS = {"x * a": "mul", "dynamic ReLU": "dyrelu", "dynamic ReLU, difference form": "dyrelu_diff"}


class ElementwiseBlocks(torch.nn.Module):
    def __init__(self, kind: str, blocks: int = 6) -> None:
        super().__init__()
        self.kind, self.blocks = kind, blocks
        self.stem = torch.nn.Conv2d(3, 96, 4, 4)
        self.slopes = torch.nn.Linear(96, 192)
        self.head = torch.nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        a1, a2 = torch.tanh(self.slopes(x.mean((2, 3)))).reshape(-1, 192, 1, 1).chunk(2, dim=1)
        a1 = a1 + 1
        d = a2 - a1
        for _ in range(self.blocks):
            if self.kind == "dynamic ReLU":
                x = torch.maximum(x * a1, x * a2)
            elif self.kind == "dynamic ReLU, difference form":
                x = x * a1 + torch.relu(x * d)
            else:
                x = x * a1
        return self.head(x.mean((2, 3)))


def main(argv: list[str] | None = None) -> int:
    from edge._progress import Progress
    from edge.export import export

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40, help="timed runs per file and session")
    ap.add_argument("--sessions", type=int, default=8, help="fresh interpreters per file")
    args = ap.parse_args(argv)
    x = np.zeros((1, 3, 224, 224), np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for kind, name in KINDS.items():
            torch.manual_seed(0)
            net = ElementwiseBlocks(kind).eval()
            for precision in ("fp32", "int8"):
                # random weights: the int8 file may miss the fidelity gate; it is kept and timed anyway
                export(net, target="tflite", precision=precision, out=Path(tmp), name=name, channels_last=True,
                       progress=Progress(quiet=True), strict=False)
                files[kind, precision] = Path(tmp) / name / f"tflite-{precision}" / "model.tflite"
        medians: dict[tuple[str, str], list[float]] = {k: [] for k in files}
        for _ in range(args.sessions):
            stats = interleaved({k: tflite_call(f, x, 1) for k, f in files.items()}, args.runs, warmup=5)
            for k in files:
                medians[k].append(stats[k]["median"])
    ms = {k: float(np.median(v)) for k, v in medians.items()}
    print(f"Median over {args.sessions} fresh sessions of each file's median of {args.runs} runs (ms).\n")
    print("| blocks of | fp32 ms | int8 ms | int8 speed-up |")
    print("|---|---|---|---|")
    for kind in KINDS:
        fp32, int8 = ms[kind, "fp32"], ms[kind, "int8"]
        print(f"| {kind} | {fp32:.2f} | {int8:.2f} | {fp32 / int8:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
