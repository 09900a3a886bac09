"""Blocks shared by several families, and the inference-only simplification (BN folding)."""

from __future__ import annotations

import inspect

import torch
from torch import nn


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10% (MobileNet rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


@torch.no_grad()
def fold_bn_into(layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> None:
    """Fold an eval-mode BatchNorm that follows ``layer`` into the layer's weight and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
    w = layer.weight
    layer.weight.copy_(w * scale.reshape(-1, *([1] * (w.dim() - 1))))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = bias * scale + shift
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias)
    else:
        layer.bias.copy_(new_bias)


def _fold_sequential(seq: nn.Sequential) -> None:
    mods = list(seq._modules.items())
    for (_, a), (name_b, b) in zip(mods, mods[1:]):
        if isinstance(b, (nn.BatchNorm2d, nn.BatchNorm1d)) and isinstance(a, (nn.Conv2d, nn.Linear)):
            if isinstance(a, nn.Linear) and isinstance(b, nn.BatchNorm1d) or isinstance(a, nn.Conv2d):
                fold_bn_into(a, b)
                seq._modules[name_b] = nn.Identity()


DEPLOY_LAYOUTS = ("nchw", "nhwc")
# what the artifact computes in: "integer" for files whose activations are quantized (int8 W8A8, W8A16), where an
# extra elementwise op costs more than a copy; "float" for everything else
DEPLOY_ARITHMETIC = ("float", "integer")


def reparameterize_model(model: nn.Module, layout: str = "nchw", arithmetic: str = "float") -> nn.Module:
    """Inference-only form: every module's own ``reparameterize()`` (bottom-up), then
    Conv/Linear → BatchNorm pairs inside Sequentials folded. Returns the same module, in eval mode.

    ``layout`` is the memory layout of the runtime that will run it ("nchw": ONNX Runtime, Core ML; "nhwc":
    LiteRT), ``arithmetic`` what the artifact computes in (``DEPLOY_ARITHMETIC``). The math is the same; a module
    whose ``reparameterize`` takes a ``layout`` or ``arithmetic`` argument may arrange its ops for them, so the
    converted graph runs faster there."""
    if layout not in DEPLOY_LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {', '.join(DEPLOY_LAYOUTS)}")
    if arithmetic not in DEPLOY_ARITHMETIC:
        raise ValueError(f"arithmetic {arithmetic!r}: expected one of {', '.join(DEPLOY_ARITHMETIC)}")
    form = {"layout": layout, "arithmetic": arithmetic}
    model.eval()
    for m in reversed(list(model.modules())):
        if m is not model:
            _reparameterize(m, form)
    for m in list(model.modules()):
        if isinstance(m, nn.Sequential):
            _fold_sequential(m)
    _reparameterize(model, form)
    return model


def _form_arguments(m: nn.Module) -> set[str]:
    fn = getattr(m, "reparameterize", None)
    return set(inspect.signature(fn).parameters) & {"layout", "arithmetic"} if fn is not None else set()


def _reparameterize(m: nn.Module, form: dict[str, str]) -> None:
    if hasattr(m, "reparameterize"):
        m.reparameterize(**{k: form[k] for k in _form_arguments(m)})


def deploy_forms(model: nn.Module) -> set[str]:
    """Which of ``reparameterize_model``'s arguments ("layout", "arithmetic") give this network different forms."""
    return {a for m in model.modules() for a in _form_arguments(m)}
