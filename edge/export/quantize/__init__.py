"""Quantization stage of the export pipeline: which integer modes each target has, and one dispatcher.

The pipeline calls :func:`quantize` for every integer precision after the float artifact exists
(``ctx.float_artifact``). Each target's quantizer is one module here (``onnx``, ``tflite``, ``coreml``) with the
same signature, ``quantize(ctx) -> Path``. :data:`MODES` is the single table of what exists and how; a
combination that is not in it is refused before anything is written (:func:`check_mode`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.export.context import ExportContext

# Integer precisions (directory names under OUT/<model>/<target>-<precision>/).
INT_PRECISIONS = ("int8", "int8w", "w8a16", "int8dyn")

# Precisions that need no activation statistics: --calib is ignored (with a warning) for these.
NO_CALIBRATION = ("int8w", "int8dyn")

# target -> precision -> how it is done. A precision absent here does not exist for that target; WHY_NOT says why.
MODES: dict[str, dict[str, str]] = {
    "onnx": {
        "int8": "ONNX Runtime quantize_static after quant_pre_process: QDQ, int8 per-channel symmetric weights, "
                "8-bit per-tensor activations calibrated on images (minmax|percentile|entropy)",
        "int8w": "weight-only: Conv/Gemm/MatMul weights stored int8 per-channel behind Cast + Mul (ORT folds them "
                 "to float at load), float compute (MatMulNBits would leave every Conv weight in float, i.e. most "
                 "of a CNN)",
        "w8a16": "ONNX Runtime QDQ with int16 activations (opset-21 QuantizeLinear/DequantizeLinear) and int8 "
                 "per-channel weights; meant for NPUs with A16W8 kernels (e.g. QNN HTP). ORT's CPU runs it as "
                 "float ops between int16 Q/DQ, so it checks fidelity but is not a speed mode on the host",
        "int8dyn": "ONNX Runtime quantize_dynamic on MatMul/Gemm: int8 per-channel weights, activations quantized "
                   "at run time (MatMulInteger/DynamicQuantizeLinear); convolutions float from int8-stored weights "
                   "(ConvInteger is slow on x86); no calibration",
    },
    "tflite": {
        "int8": "full-integer W8A8: ai-edge-quantizer static_wi8_ai8 on the float .tflite, or litert-torch PT2E "
                "(per-channel symmetric weights, HistogramObserver activations); int8 input/output unless "
                "--float-io. Engine per family: see tflite.ENGINE_BY_FAMILY",
        "int8w": "ai-edge-quantizer weight_only_wi8_afp32: int8 per-channel weights, explicit DEQUANTIZE, float "
                 "compute",
        "w8a16": "ai-edge-quantizer static_wi8_ai16: int8 per-channel weights, int16 activations (16x8 kernels); "
                 "int16 input/output unless --float-io",
        "int8dyn": "ai-edge-quantizer dynamic_wi8_afp32: int8 per-channel weights, activations quantized at run "
                   "time by the kernels (dynamic range); no calibration",
    },
    "coreml": {
        "int8": "W8A8: quantize/dequantize pairs as coremltools' linear_quantize_activations writes them, with "
                "activation ranges from the reference MIL interpreter (predict exists only on macOS), then "
                "linear_quantize_weights int8 per-channel",
        "int8w": "coremltools linear_quantize_weights: int8 per-channel constexpr_affine_dequantize weights",
    },
}

# (target, precision) -> why it is absent from MODES.
WHY_NOT: dict[tuple[str, str], str] = {
    ("coreml", "w8a16"): "Core ML's quantize/dequantize ops take only int8/uint8, so 16-bit activations cannot be "
                         "expressed (coremltools quantizes activations to 8 bits only)",
    ("coreml", "int8dyn"): "Core ML has no dynamic-range quantization: its quantize op needs a constant scale, "
                           "so activations cannot be quantized at run time",
}

FLAG_FOR = {"int8": "--int8", "int8w": "--int8-weights", "w8a16": "--int16-activations", "int8dyn": "--int8-dynamic"}


def supported(target: str, precision: str) -> bool:
    return precision in MODES.get(target, {})


def check_mode(target: str, precision: str) -> None:
    """Refuse a target/precision pair that does not exist, before anything is converted or written."""
    if precision not in INT_PRECISIONS or supported(target, precision):
        return
    if target not in MODES:
        raise EdgeError(f"unknown target {target!r} for quantization", f"choose one of {', '.join(MODES)}")
    flag = FLAG_FOR.get(precision, precision)
    why = WHY_NOT.get((target, precision), "this target has no such mode")
    others = [t for t in MODES if supported(t, precision)]
    alt = f"use --target {' or '.join(others)} for {flag}, or " if others else ""
    have = ", ".join(FLAG_FOR[p] for p in MODES[target])
    raise EdgeError(f"{target} does not support {flag} ({precision}): {why}", f"{alt}use one of {have} with {target}")


def quantize(ctx: ExportContext) -> Path:
    """Quantize ``ctx.float_artifact`` into ``ctx.workdir`` with the target's quantizer; return the artifact path."""
    check_mode(ctx.target, ctx.precision)
    if ctx.precision not in INT_PRECISIONS:
        raise EdgeError(f"precision {ctx.precision!r} is not an integer mode",
                        f"use one of {', '.join(INT_PRECISIONS)}")
    try:
        module = importlib.import_module(f"edge.export.quantize.{ctx.target}")
    except ModuleNotFoundError as e:
        if e.name != f"edge.export.quantize.{ctx.target}":
            raise
        raise EdgeError(f"{ctx.target} quantization is not available in this installation",
                        "export fp32/fp16, or use --target onnx or tflite") from None
    return module.quantize(ctx)


__all__ = ["FLAG_FOR", "INT_PRECISIONS", "MODES", "NO_CALIBRATION", "WHY_NOT", "check_mode", "quantize", "supported"]
