"""MODEL resolution: a zoo name, ``path/to/file.py:factory``, or a user's own ``nn.Module``.

Every way in ends as a :class:`LoadedModel`: the deploy-form network in eval mode plus what the manifest must
record to rebuild it later (``edge verify``).
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.models import ModelInfo

DEFAULT_IMG_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class LoadedModel:
    name: str
    reference: nn.Module  # the network as built / given, eval mode: what every artifact is compared with
    info: ModelInfo | None
    source: dict[str, Any]  # {"kind": "zoo"|"file"|"module", ...}: how to rebuild it
    checkpoint: dict[str, Any] | None  # {"path", "sha256"}
    activations: str
    options: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    default_img_size: int = DEFAULT_IMG_SIZE
    img_size_rule: tuple[int, int] | None = None  # (min, multiple); None: probe by running the network
    _by_form: dict[tuple[str, str], nn.Module] = field(default_factory=dict, repr=False)

    def deploy(self, layout: str, arithmetic: str = "float") -> nn.Module:
        """The deploy form (BatchNorm folded, re-parameterized) arranged for a runtime's memory layout and the
        artifact's arithmetic (``edge.models.reparameterize_model``): what is converted. Made on first use, so a
        TFLite-only export never builds the NCHW form; networks without such forms share one."""
        from edge.models._layers import deploy_forms

        forms = deploy_forms(self.reference)
        key = (layout if "layout" in forms else "nchw", arithmetic if "arithmetic" in forms else "float")
        if key not in self._by_form:
            self._by_form[key] = _deploy(self.reference, *key)
        return self._by_form[key]

    @property
    def model(self) -> nn.Module:
        """The deploy form for NCHW runtimes."""
        return self.deploy("nchw")

    @property
    def family(self) -> str:
        return self.info.family if self.info else "user"

    def preprocess(self, img_size: int) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "resize": int(round(img_size / self.crop_pct)),
                "crop_pct": self.crop_pct, "interpolation": self.interpolation}


FILE_SPEC = re.compile(r"^(?P<path>.+\.py):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)$")


def is_file_spec(spec: str) -> bool:
    return bool(FILE_SPEC.match(spec))


def load(model_or_name: str | nn.Module, checkpoint: str | Path | None = None, name: str | None = None,
         options: dict[str, Any] | None = None, seed: int = 0) -> LoadedModel:
    """Resolve MODEL into a deploy-form, eval-mode network (see the module docstring)."""
    options = dict(options or {})
    if isinstance(model_or_name, nn.Module):
        if options:
            raise EdgeError("options only apply to zoo models", "configure your module before passing it")
        return _from_module(model_or_name, checkpoint, name, {"kind": "module", "class": _qualname(model_or_name)})
    if not isinstance(model_or_name, str):
        raise EdgeError("MODEL must be a zoo name, 'file.py:factory' or an nn.Module, "
                        f"got {type(model_or_name).__name__}")
    spec = model_or_name.strip()
    if is_file_spec(spec):
        if options:
            raise EdgeError("options only apply to zoo models", "configure the network inside your factory")
        module = _from_file(spec)
        m = FILE_SPEC.match(spec)
        assert m is not None
        src = {"kind": "file", "spec": f"{Path(m['path']).resolve()}:{m['attr']}"}
        return _from_module(module, checkpoint, name or m["attr"], src)
    if spec.endswith(".py") or (":" in spec and ".py" in spec):
        raise EdgeError(f"{spec!r} is not a valid 'path/to/file.py:factory' spec",
                        "name the function that builds the network after a colon, e.g. my_net.py:build")
    return _from_zoo(spec, checkpoint, options, seed)


def _from_zoo(name: str, checkpoint: str | Path | None, options: dict[str, Any], seed: int) -> LoadedModel:
    from edge._io import sha256_path
    from edge.models import create, get_info

    info = get_info(name)  # unknown names raise with close-name suggestions
    reference = create(info.name, checkpoint=checkpoint, deploy=False, seed=seed, **options)
    meta = getattr(reference, "edge_meta", {})
    ck = None
    if checkpoint is not None:
        ck = {"path": str(Path(checkpoint).resolve()), "sha256": sha256_path(checkpoint)}
    pp = info.preprocess
    return LoadedModel(
        name=info.name, reference=reference, info=info,
        source={"kind": "zoo", "name": info.name, "seed": seed, "deploy": True},
        checkpoint=ck, activations=meta.get("activations", ""), options=dict(options),
        mean=tuple(pp.mean), std=tuple(pp.std), crop_pct=pp.crop_pct, interpolation=pp.interpolation,
        default_img_size=info.input_size[-1], img_size_rule=tuple(info.img_size_rule),
    )


def _from_file(spec: str) -> nn.Module:
    m = FILE_SPEC.match(spec)
    assert m is not None
    path = Path(m["path"])
    if not path.is_file():
        raise EdgeError(f"model file {str(path)!r} does not exist", "give MODEL as path/to/file.py:factory")
    mod_name = f"edge_user_model_{abs(hash(str(path.resolve())))}"
    mod_spec = importlib.util.spec_from_file_location(mod_name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise EdgeError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[mod_name] = module
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - user code: report it as their error
        sys.modules.pop(mod_name, None)
        raise EdgeError(f"importing {str(path)!r} failed: {type(e).__name__}: {e}",
                        "run the file with python to see the full error") from e
    obj: Any = module
    for part in m["attr"].split("."):
        if not hasattr(obj, part):
            public = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))[:8]
            raise EdgeError(f"{str(path)!r} has no {m['attr']!r}",
                            f"callables defined there: {', '.join(public) or 'none'}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        net = obj
    elif callable(obj):
        try:
            net = obj()
        except Exception as e:  # noqa: BLE001 - user code
            raise EdgeError(f"{spec} raised {type(e).__name__}: {e}",
                            "the factory is called with no arguments and must return an nn.Module") from e
    else:
        raise EdgeError(f"{spec} is a {type(obj).__name__}, not a function or nn.Module",
                        "point MODEL at a function that returns the network")
    if not isinstance(net, nn.Module):
        raise EdgeError(f"{spec} returned {type(net).__name__}, not a torch.nn.Module",
                        "make the factory return the network (an nn.Module instance)")
    return net


def _from_module(model: nn.Module, checkpoint: str | Path | None, name: str | None,
                 source: dict[str, Any]) -> LoadedModel:
    from edge._io import sha256_path
    from edge.models._checkpoint import load_strict, read_state_dict

    name = _safe_name(name or type(model).__name__)
    model = copy.deepcopy(model)  # the caller's module is never modified
    ck = None
    activations = getattr(model, "edge_meta", {}).get("activations") or "as given (user network)"
    if checkpoint is not None:
        sd = read_state_dict(checkpoint)
        load_strict(model, sd, name, repr(str(checkpoint)))
        ck = {"path": str(Path(checkpoint).resolve()), "sha256": sha256_path(checkpoint)}
        activations = f"checkpoint {Path(checkpoint).name}"
    model.eval()
    meta = getattr(model, "edge_meta", {})
    mean = tuple(meta.get("mean", IMAGENET_MEAN))
    std = tuple(meta.get("std", IMAGENET_STD))
    return LoadedModel(name=name, reference=model, info=None, source=source, checkpoint=ck,
                       activations=activations,
                       mean=mean, std=std, default_img_size=int(meta.get("img_size", DEFAULT_IMG_SIZE)))


def _deploy(model: nn.Module, layout: str = "nchw", arithmetic: str = "float") -> nn.Module:
    """A re-parameterized copy (BatchNorm folded, branches merged) for conversion; ``model`` stays as it is."""
    from edge.models._layers import reparameterize_model

    deploy = copy.deepcopy(model).eval()
    with torch.no_grad():
        reparameterize_model(deploy, layout, arithmetic)
    return deploy


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.").lower()
    return s or "model"


def _qualname(m: nn.Module) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


def precheck(model_or_name: Any, img_size: int | None) -> None:
    """Cheap checks before any network is built: a zoo name exists, and takes ``img_size``."""
    if img_size is not None and img_size <= 0:
        raise EdgeError(f"--img-size {img_size} must be a positive number of pixels")
    if isinstance(model_or_name, str) and not is_file_spec(model_or_name.strip()) \
            and not model_or_name.strip().endswith(".py"):
        from edge.models import get_info

        info = get_info(model_or_name)  # unknown names raise with close-name suggestions
        if img_size is not None:
            _check_rule(info.name, img_size, tuple(info.img_size_rule), info.input_size[-1])


def check_img_size(loaded: LoadedModel, img_size: int) -> None:
    """Reject an input size the network cannot take, before anything is traced or written."""
    if img_size <= 0:
        raise EdgeError(f"--img-size {img_size} must be a positive number of pixels")
    if loaded.img_size_rule is not None:
        _check_rule(loaded.name, img_size, loaded.img_size_rule, loaded.default_img_size)


def _check_rule(name: str, img_size: int, rule: tuple[int, int], default: int) -> None:
    lo, mult = rule
    if img_size < lo or img_size % mult:
        near = max(lo, int(round(img_size / mult)) * mult)
        raise EdgeError(
            f"{name} cannot take --img-size {img_size}: it needs a multiple of {mult} that is >= {lo}",
            f"try --img-size {near} (default {default})",
        )


def probe(loaded: LoadedModel, example: torch.Tensor) -> list[torch.Tensor]:
    """Run the network once on the example; a failure is the user's --img-size (or network) problem."""
    try:
        with torch.no_grad():
            out = loaded.reference(example)  # the deploy forms are built only for the targets that need them
    except Exception as e:  # noqa: BLE001 - the network's own error, reported as bad input
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise EdgeError(
            f"{loaded.name} failed on a {list(example.shape)} input: {type(e).__name__}: {first[:300]}",
            "check --img-size (the network may need a particular size) and that it takes one NCHW RGB image",
        ) from e
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if not outs or not all(isinstance(o, torch.Tensor) for o in outs):
        raise EdgeError(f"{loaded.name} must return a tensor or a tuple of tensors, got {type(out).__name__}")
    return outs
