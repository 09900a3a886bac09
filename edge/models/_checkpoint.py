"""Checkpoint loading that never runs a pickle's code, and strict key matching with clear errors."""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from edge.errors import EdgeError

_WRAPPER_KEYS = ("state_dict", "model", "model_ema", "state_dict_ema", "net", "module")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read ``.safetensors``, ``.pth``/``.pt``/``.bin`` safely and unwrap common containers."""
    path = Path(path)
    if not path.is_file():
        raise EdgeError(f"checkpoint {str(path)!r} does not exist", "pass the path of a .safetensors, .pth or .pt file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise EdgeError(f"checkpoint {str(path)!r} is not a readable safetensors file: {e}") from None
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            text = str(e)
            globals_ = re.findall(r"GLOBAL ([\w.]+)", text)
            if not globals_:
                raise EdgeError(f"checkpoint {str(path)!r} is not a valid PyTorch file (unpickling failed)") from None
            raise EdgeError(
                f"checkpoint {str(path)!r} needs arbitrary unpickling ({', '.join(sorted(set(globals_)))}), "
                "which edge refuses; its code was not run",
                "re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or as .safetensors",
            ) from None
        except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as e:
            raise EdgeError(f"checkpoint {str(path)!r} could not be read: {str(e).splitlines()[0]}") from None
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: object, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Accept ``{"model": sd}``, ``{"state_dict": sd}`` and ``module.``-prefixed keys."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise EdgeError(
            f"{where} holds no state dict of tensors", "save model.state_dict(), optionally as {'model': ...}"
        )
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in ("module.", "model.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _is_tensor_dict(obj: Mapping) -> bool:
    vals = list(obj.values())
    return bool(vals) and sum(isinstance(v, torch.Tensor) for v in vals) >= max(1, len(vals) // 2)


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], model_name: str, source: str) -> None:
    """Load every key or fail with the first few missing / unexpected / mismatched keys and their counts."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
            if items:
                more = f", +{len(items) - 3} more" if len(items) > 3 else ""
                parts.append(f"{len(items)} {label} ({', '.join(items[:3])}{more})")
        raise EdgeError(
            f"checkpoint {source} does not fit {model_name}: " + "; ".join(parts),
            "check that it was trained for this variant; `edge models` lists the variants",
        )
    model.load_state_dict(dict(state_dict), strict=True)
