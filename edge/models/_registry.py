"""The variant table: every per-variant fact lives here as data, and code reads it.

A family file registers each variant with :func:`register`, giving its builder, preprocessing,
paper numbers and checkpoint adapter. Nothing downstream hard-codes a variant's facts.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edge.errors import EdgeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How images are prepared for the network (timm's default_cfg convention)."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bilinear"

    def resize_for(self, img_size: int) -> int:
        """Shorter-side resize before the centre crop."""
        return int(round(img_size / self.crop_pct))


@dataclass(frozen=True)
class LatencyClaim:
    """One latency number a paper reports, with the conditions it was measured under."""

    ms: float
    device: str
    runtime: str
    threads: int | None = None
    precision: str = "fp32"
    source: str = ""
    note: str = ""


@dataclass(frozen=True)
class PaperNumbers:
    """What the paper says about a variant. ``None`` means the paper does not give it."""

    arxiv: str
    params_m: float | None = None
    macs_m: float | None = None
    top1: float | None = None
    latency: tuple[LatencyClaim, ...] = ()
    source: str = ""  # table / figure
    unconfirmed: tuple[str, ...] = ()  # fields that could not be read in the primary source


@dataclass(frozen=True)
class ModelInfo:
    """Everything edge knows about one variant."""

    name: str
    family: str
    builder: Callable[..., nn.Module]
    paper: PaperNumbers
    input_size: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    preprocess: Preprocess = field(default_factory=Preprocess)
    aliases: tuple[str, ...] = ()
    # Maps a foreign state dict (timm / official release) onto this network's keys.
    checkpoint_filter: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]] | None = None
    # Counting conventions, stated so tests and tables can say what they compare.
    params_convention: str = "all parameters of the training-form network"
    count_paper_params: Callable[[nn.Module], int] | None = None
    macs_convention: str = "conv + linear + matmul MACs from torch.utils.flop_counter (FLOPs / 2)"
    count_paper_macs: Callable[[nn.Module, tuple[int, ...]], int] | None = None
    # Sizes the network accepts: (min, multiple). Anything else is rejected before tracing.
    img_size_rule: tuple[int, int] = (32, 32)
    options: tuple[str, ...] = ()  # family options accepted by create(**kwargs)
    classifier: str = "classifier"
    default_checkpoint_layouts: tuple[str, ...] = ()  # e.g. ("timm:ghostnet_100", "huawei-noah")
    builder_kwargs: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()  # e.g. "cnn", "attention"

    def as_dict(self) -> dict[str, Any]:
        p = self.paper
        return {
            "name": self.name,
            "family": self.family,
            "aliases": list(self.aliases),
            "input_size": list(self.input_size),
            "num_classes": self.num_classes,
            "preprocess": {
                "mean": list(self.preprocess.mean),
                "std": list(self.preprocess.std),
                "resize": self.preprocess.resize_for(self.input_size[-1]),
                "crop_pct": self.preprocess.crop_pct,
                "interpolation": self.preprocess.interpolation,
            },
            "paper": {
                "arxiv": p.arxiv,
                "source": p.source,
                "params_m": p.params_m,
                "macs_m": p.macs_m,
                "top1": p.top1,
                "unconfirmed": list(p.unconfirmed),
                "latency": [vars(c) for c in p.latency],
            },
            "params_convention": self.params_convention,
            "macs_convention": self.macs_convention,
            "tags": list(self.tags),
        }


_REGISTRY: dict[str, ModelInfo] = {}
_ALIASES: dict[str, str] = {}


def register(info: ModelInfo) -> ModelInfo:
    for key in (info.name, *info.aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"duplicate model name {key!r}")
    _REGISTRY[info.name] = info
    for a in info.aliases:
        _ALIASES[a] = info.name
    return info


def _ensure_loaded() -> None:
    # Importing the family modules registers their variants.
    from edge.models import (  # noqa: F401
        efficientformer,
        efficientformer_v2,
        ghostnet,
        mobileformer,
        mobilenet,
    )


def list_models(family: str | None = None) -> list[str]:
    _ensure_loaded()
    return [n for n, i in _REGISTRY.items() if family is None or i.family == family]


def get_info(name: str) -> ModelInfo:
    """Resolve a name or alias; an unknown name suggests the close ones."""
    _ensure_loaded()
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    choices = list(_REGISTRY) + list(_ALIASES)
    close = difflib.get_close_matches(key, choices, n=4, cutoff=0.5)
    if not close:
        close = [c for c in choices if key and (key in c or c.split("-")[0] in key)][:4]
    hint = f"did you mean {', '.join(close)}?" if close else "run `edge models` to list them"
    raise EdgeError(f"unknown model {name!r}", hint)
