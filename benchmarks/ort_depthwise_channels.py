"""ONNX Runtime's int8 depthwise convolution against its fp32 one, by channel count, on this machine.

    .venv/bin/python benchmarks/ort_depthwise_channels.py [--channels 8 12 16 ...] [--size 56] [--sessions 5]

Why it exists: issue 6 asks for ONNX int8 at least as fast as fp32, and GhostNet's int8 file stays slower on the x86
VM (docs/fast-artifacts.md). ORT's op profile of that file gives most of its QLinearConv time to 3x3 depthwise
convolutions with 8-120 channels. ORT's x86 QLinearConv runs a depthwise convolution on its symmetric int8
kernel (MLAS ``ConvSym`` depthwise) only when the channel count is a multiple of 16 (MLAS aligns groups to 16 on
x86) and the weights are symmetric, and on a generic per-pixel path otherwise. This script measures that cliff
on one layer: a 3x3 stride-1 depthwise convolution (+ bias) on a ``size`` x ``size`` map, exported fp32 and
quantized the way edge quantizes (QDQ, uint8 activations, int8 symmetric per-channel weights, 7-bit range).
Only the convolution kernel is timed, from ORT's own op profile (``Conv`` against ``QLinearConv``; the file's
QuantizeLinear / DequantizeLinear at its float I/O and fp32's NCHWc reorders are left out, as inside a network
they are shared or absent): each of ``--sessions`` fresh ORT sessions (1 thread) runs both files alternately,
and the table gives the medians of the per-run kernel times and the median over sessions of their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_fast_artifacts import machine  # noqa: E402

CHANNELS = (8, 12, 16, 20, 24, 32, 36, 40, 48, 60, 64, 72, 80, 92, 96)


def depthwise_files(channels: int, size: int, work: Path) -> tuple[Path, Path]:
    """fp32 and int8 ONNX files of one 3x3 depthwise conv with ``channels`` channels."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge.export.quantize.onnx import preprocess, quantize_file

    rng = np.random.default_rng(channels)
    weight = numpy_helper.from_array(rng.standard_normal((channels, 1, 3, 3)).astype(np.float32) * 0.3, "w")
    bias = numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32) * 0.1, "b")
    shape = [1, channels, size, size]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], group=channels, kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        "depthwise", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [weight, bias])
    fp32, int8 = work / f"dw{channels}-fp32.onnx", work / f"dw{channels}-int8.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
                    str(fp32))

    class Calibration:  # what quantize_file reads of edge's CalibrationSet
        def numpy(self, channels_last: bool = False) -> list[np.ndarray]:
            return [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]

    pre = work / f"dw{channels}-pre.onnx"
    preprocess(fp32, pre)  # edge's default int8: pre-pass, then QDQ, u8 activations, 7-bit symmetric weights
    quantize_file("int8", pre, int8, Calibration(), "minmax")
    return fp32, int8


def conv_kernel_times(paths: dict[str, Path], x: np.ndarray, runs: int, work: Path) -> dict[str, float]:
    """Median per-run time (us) of each file's convolution kernel, the files run alternately in profiled sessions."""
    import onnxruntime as ort

    sessions = {}
    for label, path in paths.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
        so.enable_profiling, so.profile_file_prefix = True, str(work / label)
        sessions[label] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        for sess in sessions.values():
            sess.run(None, {"x": x})
    out = {}
    for label, sess in sessions.items():
        trace = sess.end_profiling()
        events = json.loads(Path(trace).read_text())
        os.remove(trace)
        times = [e["dur"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                 and e["args"].get("op_name") in ("Conv", "FusedConv", "QLinearConv")]
        out[label] = statistics.median(times[len(times) // 10:])  # the first tenth is warm-up
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, nargs="+", default=list(CHANNELS))
    ap.add_argument("--size", type=int, default=56, help="height = width of the feature map (default 56)")
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args(argv)
    info = machine()
    print(f"Machine: {info['cpu']}, {info['cores']} logical cores, ISA {', '.join(info['isa'])}.\n")
    print(f"3x3 stride-1 depthwise conv on a {args.size}x{args.size} map, ONNX Runtime CPU, 1 thread, "
          f"{args.sessions} sessions x {args.runs} runs, kernel time from ORT's op profile; int8 = QDQ u8 "
          "activations, s8 symmetric per-channel weights (edge's default).\n")
    print("| channels | multiple of 16 | fp32 Conv us | int8 QLinearConv us | int8 / fp32 time |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for c in args.channels:
            fp32, int8 = depthwise_files(c, args.size, Path(tmp))
            x = np.random.default_rng(0).standard_normal((1, c, args.size, args.size)).astype(np.float32)
            per = [conv_kernel_times({"fp32": fp32, "int8": int8}, x, args.runs, Path(tmp))
                   for _ in range(args.sessions)]
            ratio = statistics.median(p["int8"] / p["fp32"] for p in per)
            print(f"| {c} | {'yes' if c % 16 == 0 else 'no'} | {statistics.median(p['fp32'] for p in per):.1f} | "
                  f"{statistics.median(p['int8'] for p in per):.1f} | {ratio:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
