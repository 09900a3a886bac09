"""Target adapters: adding a target is one file implementing :class:`~edge.export.targets.base.Target` plus one
line here. Adapters import their converter lazily, inside their methods."""

from __future__ import annotations

from edge.export.targets.base import ConversionError, Target
from edge.export.targets.coreml import CoreMLTarget
from edge.export.targets.onnx import OnnxTarget
from edge.export.targets.tflite import TFLiteTarget

TARGETS: dict[str, Target] = {
    "coreml": CoreMLTarget(),
    "tflite": TFLiteTarget(),
    "onnx": OnnxTarget(),
}

__all__ = ["TARGETS", "ConversionError", "Target"]
