"""Weight-only and dynamic-range integer files: edge's form against the form the quantizers write as is.

    .venv/bin/python benchmarks/weight_only_dynamic.py [--models ghostnet-1.0x ...] [--sessions 5] [--runs 40]

Why it exists: three integer files that should cost little or nothing at run time were far slower than fp32 on
the host.

* **ONNX int8w** (weights stored int8, float compute): behind a DequantizeLinear, which ORT keeps for its QDQ
  fusions, the weights were dequantized on every inference. edge now stores them behind Cast + Mul by the scales,
  which ORT folds into float weights when the session loads (``edge.export.quantize.onnx.weight_only``).
* **ONNX int8dyn** (dynamic range): ``quantize_dynamic`` turns every convolution into DynamicQuantizeLinear +
  ConvInteger, which ORT's x86 kernels run far slower than a float Conv. edge quantizes MatMul / Gemm only and
  gives convolutions int8-stored weights behind Cast + Mul, as int8w.
* **TFLite int8dyn** (dynamic range): ai-edge-quantizer's ``dynamic_wi8_afp32`` recipe also gives depthwise
  convolutions int8 weights with float activations, a kernel XNNPACK lacks, so LiteRT ran each of them outside the
  delegate. edge keeps their compute float (weights still stored int8, dequantized in front).

Per network: edge's fp32 file, the file the quantizer's recipe gives as is, and edge's file, timed round-robin in
each of ``--sessions`` fresh sessions (``bench_fast_artifacts.time_artifacts``: this VM's speed level moves every
few seconds, so only files timed in the same session compare); speed = median of the per-session fp32 / file
ratios (range in brackets). TFLite files are NHWC; XNNPACK partitions = DELEGATE nodes (1 = the whole graph).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_fast_artifacts import (  # noqa: E402
    THREADS,
    _image,
    _paired,
    _speedup,
    export_edge,
    machine,
    time_artifacts,
    xnnpack_partitions,
)

MODELS = ("ghostnet-1.0x", "mobilenetv3-large-1.0", "efficientformerv2-s0", "mobileformer-294m")
PLAN = [("onnx", "fp32", False), ("onnx", "int8w", False), ("onnx", "int8dyn", False), ("tflite", "fp32", True),
        ("tflite", "int8dyn", True)]


def onnx_dequantize_form(fp32: Path, out: Path) -> Path:
    """edge's int8w pipeline (ORT's pre-pass, then int8 per-channel weights) with DequantizeLinear in front."""
    import onnx

    from edge.export.quantize.onnx import preprocess, weight_only

    pre = out.with_name("pre.onnx")
    preprocess(fp32, pre)
    onnx.save_model(weight_only(onnx.load(str(pre)), dequantize=True), str(out))
    return out


def onnx_dynamic_as_is(fp32: Path, out: Path) -> Path:
    """``quantize_dynamic`` with edge's settings on every op type it takes (convolutions too); the batched-weight
    MatMuls still get edge's per-tensor weights, without which ORT rejects the file."""
    import onnx

    from edge.export.quantize.onnx import batched_weight_matmuls, preprocess, quantize_file

    pre = out.with_name("pre.onnx")
    preprocess(fp32, pre)
    return quantize_file("int8dyn", pre, out, None, "minmax", exclude=batched_weight_matmuls(onnx.load(str(pre))))


def tflite_recipe_as_is(fp32: Path, out: Path) -> Path:
    """ai-edge-quantizer's dynamic_wi8_afp32 on edge's fp32 file, nothing excluded."""
    from ai_edge_quantizer import quantizer, recipe

    with contextlib.redirect_stdout(sys.stderr):  # the quantizer prints a size report
        result = quantizer.Quantizer(str(fp32), recipe.dynamic_wi8_afp32()).quantize()
    out.write_bytes(bytes(result.quantized_model))
    return out


def load_error(path: Path) -> str | None:
    """Why LiteRT cannot prepare the file (None when it can)."""
    try:
        xnnpack_partitions(path)
    except RuntimeError as e:
        msg = str(e)
        return "LiteRT's BATCH_MATMUL rejects its operand types" if "batch_matmul" in msg else msg[:100]
    return None


def cell(stats: dict[str, Any], fp32: dict[str, Any]) -> str:
    speedup = _speedup(fp32, stats)
    ratios = _paired(fp32, stats) or [speedup]
    return f"{stats['median']:.2f} ({speedup:.2f}x, {min(ratios):.2f}-{max(ratios):.2f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--sessions", type=int, default=5, help="fresh sessions per file")
    ap.add_argument("--runs", type=int, default=40, help="timed runs per file and session")
    ap.add_argument("--work", default=str(ROOT / "out" / "weight-only-dynamic"), help="export cache")
    ap.add_argument("--redo", action="store_true", help="export again even when cached")
    args = ap.parse_args(argv)
    m = machine()
    print(f"Machine: {m['cpu']}, {m['cores']} logical cores, ISA {', '.join(m['isa'])}, {m['os']}.\n")
    print(f"Median over {args.sessions} fresh sessions of each file's median of {args.runs} runs (ms); in brackets "
          "the median and range of the per-session fp32 / file ratios. ONNX Runtime CPU EP; LiteRT with its "
          "default XNNPACK delegate.\n")
    print("| network | file | threads | fp32 ms | as written by the tool | edge | XNNPACK partitions tool / edge |")
    print("|---|---|---|---|---|---|---|")
    work = Path(args.work)
    for name in args.models:
        with contextlib.redirect_stdout(sys.stderr):  # export progress stays out of the table
            arts = export_edge(name, work / "edge", args.redo, PLAN)
        path = {k: Path(v["path"]) for k, v in arts.items() if "path" in v}
        folder = work / "as-is" / name
        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "onnx": {"fp32": path["onnx-fp32"], "tool": onnx_dequantize_form(path["onnx-fp32"], folder / "int8w.onnx"),
                     "edge": path["onnx-int8w"],
                     "tool-dyn": onnx_dynamic_as_is(path["onnx-fp32"], folder / "int8dyn.onnx"),
                     "edge-dyn": path["onnx-int8dyn"]},
            "tflite": {"fp32": path["tflite-fp32"],
                       "tool": tflite_recipe_as_is(path["tflite-fp32"], folder / "int8dyn.tflite"),
                       "edge": path["tflite-int8dyn"]},
        }
        broken = load_error(files["tflite"]["tool"])
        if broken:  # the attention networks: the recipe's constant-weight BATCH_MATMUL (docs/quantization.md)
            del files["tflite"]["tool"]
        parts = {k: xnnpack_partitions(p) for k, p in files["tflite"].items() if k != "fp32"}
        timed = time_artifacts(files, _image(name, 224), args.runs, warmup=5, sessions=args.sessions)
        rows = (("onnx", "", "ONNX int8w"), ("onnx", "-dyn", "ONNX int8dyn"), ("tflite", "", "TFLite int8dyn"))
        for runtime, suffix, label in rows:
            for t in THREADS:
                st = timed[f"{runtime}/{t}"]
                tool = st.get(f"tool{suffix}")
                tool_cell = cell(tool, st["fp32"]) if tool else f"fails to load: {broken}"
                split = f"{parts.get('tool', '-')} / {parts['edge']}" if runtime == "tflite" else "-"
                print(f"| {name} | {label} | {t} | {st['fp32']['median']:.2f} | {tool_cell} | "
                      f"{cell(st[f'edge{suffix}'], st['fp32'])} | {split} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
