"""Export: PyTorch → Core ML, TFLite and ONNX through one pipeline, each artifact checked against PyTorch.

``export(model_or_name, target=..., precision=..., out=...)`` writes ``OUT/<model>/<target>-<precision>/`` with
the artifact and its ``manifest.json``; ``verify(export_dir)`` re-checks one later. See ``pipeline.py`` for the
stages, ``numerics.py`` for the gate and ``targets/`` for the adapters.
"""

from __future__ import annotations

from edge.export.context import PRECISIONS, TARGET_NAMES, ExportContext, ExportOptions, QuantOptions
from edge.export.pipeline import ExportResult, export
from edge.export.verify import VerifyResult, verify

__all__ = [
    "PRECISIONS",
    "TARGET_NAMES",
    "ExportContext",
    "ExportOptions",
    "ExportResult",
    "QuantOptions",
    "VerifyResult",
    "export",
    "verify",
]
