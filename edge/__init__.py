"""edge: mobile vision networks from PyTorch to CoreML, TFLite and ONNX, checked and measured."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def export(model_or_name: Any, target: str = "all", **kwargs: Any) -> Any:
    """Export a zoo name or an ``nn.Module``; see :func:`edge.export.export`."""
    from edge.export import export as _export

    return _export(model_or_name, target=target, **kwargs)


def create(name: str, **kwargs: Any) -> Any:
    """Build a zoo network; see :func:`edge.models.create`."""
    from edge.models import create as _create

    return _create(name, **kwargs)
