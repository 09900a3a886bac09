"""Is int8 element-wise arithmetic on a feature map faster than float in LiteRT's XNNPACK on this CPU?

    .venv/bin/python benchmarks/int8_elementwise.py [--runs 60]

Why it exists: Mobile-Former's int8 TFLite file runs whole in XNNPACK and is still slower than fp32
(docs/fast-artifacts.md); its int8 graph spends most of its element count in the dynamic ReLUs' per-channel
multiplies, subtractions and adds on full-resolution maps. This measures that part alone: a 4x4 stride-4 stem to a
56x56x96 map, then six blocks of either ``x * a`` (per-sample, per-channel ``a``, as Mobile-Former's dynamic-ReLU
slopes) or the dynamic ReLU ``max(x * a1, x * a2)`` (which edge's int8 TFLite graph runs as MUL, MUL, SUB with
ReLU, ADD), then a pooled linear head. Each is exported by edge (TFLite, channels-last) in fp32 and int8 (W8A8,
default settings); the two files are timed interleaved, LiteRT with its default XNNPACK delegate, 1 thread.
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
        for _ in range(self.blocks):
            x = torch.maximum(x * (a1 + 1), x * a2) if self.kind == "dynamic ReLU" else x * (a1 + 1)
        return self.head(x.mean((2, 3)))


def main(argv: list[str] | None = None) -> int:
    from edge._progress import Progress
    from edge.export import export

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=60)
    args = ap.parse_args(argv)
    print("| blocks of | fp32 ms | int8 ms | int8 speed-up |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("x * a", "dynamic ReLU"):
            torch.manual_seed(0)
            net = ElementwiseBlocks(kind).eval()
            name = "mul" if kind == "x * a" else "dyrelu"
            for precision in ("fp32", "int8"):
                # random weights: the int8 file may miss the fidelity gate; it is kept and timed anyway
                export(net, target="tflite", precision=precision, out=Path(tmp), name=name, channels_last=True,
                       progress=Progress(quiet=True), strict=False)
            x = np.zeros((1, 3, 224, 224), np.float32)
            calls = {p: tflite_call(Path(tmp) / name / f"tflite-{p}" / "model.tflite", x, 1) for p in ("fp32", "int8")}
            stats = interleaved(calls, args.runs, warmup=5)
            fp32, int8 = stats["fp32"]["median"], stats["int8"]["median"]
            print(f"| {kind} | {fp32:.2f} | {int8:.2f} | {fp32 / int8:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
