"""The model zoo: mobile vision networks written in this repo, checked against their papers.

``create(name)`` builds a variant; with ``checkpoint=`` it loads timm or official-release weights
(safetensors or ``.pth``, never an unchecked pickle). Without a checkpoint, BatchNorm statistics are
re-estimated on built-in natural photos so that activations depend on the input (see ``calibrate_bn``).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge._threads import torch_threads
from edge.errors import EdgeError
from edge.models._checkpoint import load_strict, read_state_dict
from edge.models._complexity import count_macs, count_params
from edge.models._layers import reparameterize_model
from edge.models._registry import (
    LatencyClaim,
    ModelInfo,
    PaperNumbers,
    Preprocess,
    get_info,
    list_models,
    register,
)

__all__ = [
    "LatencyClaim",
    "ModelInfo",
    "PaperNumbers",
    "Preprocess",
    "calibrate_bn",
    "complexity",
    "count_macs",
    "count_params",
    "create",
    "get_info",
    "list_models",
    "register",
    "reparameterize_model",
]

BN_CALIBRATION_IMAGES = 32


@torch.no_grad()
def calibrate_bn(model: nn.Module, info: ModelInfo, n_images: int = BN_CALIBRATION_IMAGES, seed: int = 0) -> str:
    """Re-estimate BatchNorm running statistics on built-in natural photos.

    A randomly initialised network has BN statistics (mean 0, var 1) unrelated to its real activations,
    so its logits barely depend on the input and every later fidelity check would be meaningless.
    Cumulative statistics over ``n_images`` photos fix that without any hub download. They are computed on one
    thread: reductions split over threads sum in another order, and the weights would then depend on the core
    count (a second export process, another machine). Returns a description for the model's metadata.
    """
    from edge.data import image_batch

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return "no BatchNorm layers; random init"
    pp = info.preprocess
    size = info.input_size[-1]
    batch, images = image_batch(n_images, size, pp.mean, pp.std, pp.crop_pct, pp.interpolation, seed=seed)
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all calibration batches
    model.train()
    with torch_threads(1):
        for chunk in batch.split(8):
            model(chunk)
    model.eval()
    for bn in bns:
        bn.momentum = 0.1
    return (
        f"random init (seed {seed}), BatchNorm statistics re-estimated on {n_images} views of "
        f"{len(images.paths)} built-in natural photos ({images.source})"
    )


@functools.lru_cache(maxsize=8)
def _calibrated_state(
    name: str, seed: int, options: tuple[tuple[str, Any], ...]
) -> tuple[dict[str, torch.Tensor], str]:
    info = get_info(name)
    torch.manual_seed(seed)
    model = info.builder(**{**info.builder_kwargs, **dict(options)})
    note = calibrate_bn(model, info, seed=seed)
    return model.state_dict(), note


def create(
    name: str,
    checkpoint: str | Path | None = None,
    deploy: bool = False,
    calibrate: bool = True,
    seed: int = 0,
    **options: Any,
) -> nn.Module:
    """Build a zoo variant in eval mode.

    checkpoint: weights in this repo's, timm's or the official release's layout.
    deploy: fold BatchNorm and apply the other inference-only simplifications.
    calibrate: without a checkpoint, re-estimate BN statistics on natural photos (default; see calibrate_bn).
    options: family options (each variant lists them in ``get_info(name).options``).
    """
    info = get_info(name)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        allowed = ", ".join(info.options) or "none"
        raise EdgeError(f"unknown option(s) {', '.join(unknown)} for {info.name}", f"{info.family} accepts: {allowed}")
    kwargs = {**info.builder_kwargs, **options}
    torch.manual_seed(seed)
    model = info.builder(**kwargs)
    if checkpoint is not None:
        from edge._io import sha256_path

        sd = read_state_dict(checkpoint)
        if info.checkpoint_filter is not None:
            sd = info.checkpoint_filter(sd, model)
        load_strict(model, sd, info.name, repr(str(checkpoint)))
        activations = f"checkpoint {Path(checkpoint).name} (sha256 {sha256_path(checkpoint)[:16]})"
    elif calibrate:
        sd, activations = _calibrated_state(info.name, seed, tuple(sorted(options.items())))
        model.load_state_dict(copy.deepcopy(sd))
    else:
        activations = f"random init (seed {seed}); logits barely depend on the input"
    model.eval()
    if deploy:
        reparameterize_model(model)
    model.edge_meta = {"model": info.name, "family": info.family, "deploy": deploy, "activations": activations,
                       "options": dict(options)}
    return model


def _count(info: ModelInfo) -> tuple[int, int, int, int]:
    model = info.builder(**info.builder_kwargs).eval()
    params = count_params(model)
    macs = count_macs(model, info.input_size)
    paper_params = info.count_paper_params(model) if info.count_paper_params else params
    paper_macs = info.count_paper_macs(model, info.input_size) if info.count_paper_macs else macs
    return params, macs, paper_params, paper_macs


def complexity(name: str) -> dict[str, Any]:
    """Counted params and MACs beside the paper's, under the paper's stated conventions."""
    info = get_info(name)
    try:
        # Shapes are all that counting needs: on the meta device nothing is initialised or computed.
        with torch.device("meta"):
            counted = _count(info)
    except (RuntimeError, NotImplementedError):
        torch.manual_seed(0)
        counted = _count(info)
    params, macs, paper_params, paper_macs = counted
    p = info.paper

    def diff(ours: float, theirs: float | None) -> float | None:
        return None if not theirs else round(100.0 * (ours / 1e6 - theirs) / theirs, 2)

    return {
        "name": info.name,
        "family": info.family,
        "params": params,
        "macs": macs,
        "input_size": list(info.input_size),
        "params_paper_convention": paper_params,
        "macs_paper_convention": paper_macs,
        "paper_params_m": p.params_m,
        "paper_macs_m": p.macs_m,
        "params_diff_pct": diff(paper_params, p.params_m),
        "macs_diff_pct": diff(paper_macs, p.macs_m),
        "params_convention": info.params_convention,
        "macs_convention": info.macs_convention,
    }
