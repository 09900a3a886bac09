"""EfficientFormer L1/L3/L7: paper numbers, timm and official checkpoint layouts, deploy form, tracing.

timm (``tests/reference.py``) is the reference implementation. Its weights are randomised beyond the
initialisation (BN statistics, layer scales, attention biases) so that every folded or remapped tensor matters.
The official-layout files are built from timm's state dict with a test-side inverse of the key mapping, written
from snap-research/EfficientFormer ``models/efficientformer.py``; its ``attention_bias_idxs`` buffers are computed
the way that source computes them (an offsets dict filled in first-appearance order), not copied from timm.

The helpers here are shared with ``test_efficientformer_v2.py``.
"""

from __future__ import annotations

import itertools
import math
import re
import types

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from edge.data import image_batch
from edge.errors import EdgeError
from edge.models import complexity, create, get_info, reparameterize_model
from tests.reference import import_timm

VARIANTS = {"efficientformer-l1": "efficientformer_l1", "efficientformer-l3": "efficientformer_l3",
            "efficientformer-l7": "efficientformer_l7"}
SMALLEST = "efficientformer-l1"


# ----------------------------------------------------------------------------------------------- shared helpers


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm, layer scale and attention-bias table non-trivial values (init leaves them at 1 / 0 / 1e-5)."""
    g = torch.Generator().manual_seed(seed)

    def u(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(t.shape, generator=g) * (hi - lo) + lo

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.copy_(u(m.weight, 0.5, 1.5))
            m.bias.copy_(u(m.bias, -0.2, 0.2))
            m.running_mean.copy_(u(m.running_mean, -0.2, 0.2))
            m.running_var.copy_(u(m.running_var, 0.5, 1.5))
        elif isinstance(m, nn.LayerNorm):
            m.weight.copy_(u(m.weight, 0.5, 1.5))
            m.bias.copy_(u(m.bias, -0.2, 0.2))
    for name, p in model.named_parameters():
        if name.endswith("gamma"):  # layer scales
            p.copy_(u(p, 0.1, 0.5))
        elif name.endswith("attention_biases"):
            p.copy_(torch.randn(p.shape, generator=g))
        elif name.endswith("talking_head1.bias") or name.endswith("talking_head2.bias"):
            p.copy_(u(p, -0.2, 0.2))
    return model.eval()


def natural_images(name: str, n: int, size: int | None = None) -> torch.Tensor:
    info = get_info(name)
    pp = info.preprocess
    x, _ = image_batch(n, size or info.input_size[-1], pp.mean, pp.std, pp.crop_pct, pp.interpolation)
    return x


def official_bias_idxs(res: int, res_q: int | None = None) -> torch.Tensor:
    """``attention_bias_idxs`` as the official code builds it (Attention / Attention4D, or Attention4DDownsample
    when ``res_q`` is given): offsets numbered in order of first appearance."""
    points = list(itertools.product(range(res), range(res)))
    q_points = points if res_q is None else list(itertools.product(range(res_q), range(res_q)))
    step = 1 if res_q is None else math.ceil(res / res_q)
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in q_points:
        for p2 in points:
            off = (abs(p1[0] * step - p2[0]), abs(p1[1] * step - p2[1]))
            offsets.setdefault(off, len(offsets))
            idxs.append(offsets[off])
    assert len(offsets) == res * res  # the table sizes agree with timm's (heads, res*res)
    return torch.tensor(idxs, dtype=torch.long).view(len(q_points), len(points))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def build_reference(name: str, timm_name: str, to_official, tmp_path_factory) -> types.SimpleNamespace:
    """timm model (seeded, randomised) -> its outputs on a natural image and the checkpoint files to load."""
    timm = import_timm()
    torch.manual_seed(0)
    ref = randomize(timm.create_model(timm_name))
    x = natural_images(name, 1)
    with torch.no_grad():
        y = ref(x)
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    d = tmp_path_factory.mktemp(name)
    paths = types.SimpleNamespace(safetensors=d / "timm.safetensors", pth=d / "timm.pth", official=d / "official.pth")
    save_file(sd, str(paths.safetensors))
    torch.save(sd, paths.pth)
    torch.save({"model": to_official(sd)}, paths.official)  # the official training script saves {"model": sd}
    bn = sum(p.numel() for m in ref.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for p in m.parameters(recurse=False))
    # The official profiler (snap-research toolbox.py) counts each conv as weight + weight.size(1) and each linear
    # as weight + bias, and nothing else.
    toolbox = sum(m.weight.numel() + (m.weight.size(1) if isinstance(m, nn.Conv2d) else m.bias.numel())
                  for m in ref.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    return types.SimpleNamespace(name=name, x=x, y=y, paths=paths, keys=set(sd), bn_params=bn, toolbox_params=toolbox,
                                 params=sum(p.numel() for p in ref.parameters()))


def check_deploy_form(model: nn.Module, kept_scales: str | None = None) -> None:
    """No BatchNorm, no layer scale (except those named by the regex ``kept_scales``), no learnable bias table or
    gather index left in the deploy form."""
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    scales = [n for n, m in model.named_modules() if type(m).__name__ in ("LayerScale", "LayerScale2d")]
    assert [n for n in scales if not (kept_scales and re.fullmatch(kept_scales, n))] == []
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    assert not [n for n in names if "attention_biases" in n or "attention_bias_idxs" in n]
    assert getattr(model, "head_dist", None) is None  # the two heads are merged


def check_traceable(model: nn.Module, x: torch.Tensor, deploy: bool) -> None:
    """torch.export and torch.jit.trace both capture the network and reproduce its output."""
    with torch.no_grad():
        y = model(x)
    ep = torch.export.export(model, (x,))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    softmaxes = [n for n in ep.graph.nodes if n.op == "call_function" and "softmax" in str(n.target)]
    assert softmaxes and all(n.args[1] in (-1, n.args[0].meta["val"].dim() - 1) for n in softmaxes)
    if deploy:  # the bias is a dense buffer: no gather; BN is gone
        assert not [t for t in targets if "index" in str(t) or "gather" in str(t)]
        assert not [t for t in targets if "batch_norm" in str(t)]
    traced = torch.jit.trace(model, (x,), check_trace=False)  # checked below against eager instead of re-running
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), y, rtol=0, atol=1e-5)
        torch.testing.assert_close(traced(x), y, rtol=0, atol=1e-5)


def save_own(name: str, path) -> None:
    """A checkpoint of another variant, in this repo's (= timm's) layout."""
    save_file({k: v.contiguous() for k, v in create(name, calibrate=False).state_dict().items()}, str(path))


# ----------------------------------------------------------------------------------------------- official layout


def timm_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of the official->timm mapping, from snap-research ``models/efficientformer.py``: ``patch_embed`` is
    a Sequential (conv, bn, relu, conv, bn, relu); ``network`` alternates stage blocks and ``Embedding``
    (proj, norm); blocks hold ``layer_scale_1/2`` of shape (dim,); the heads are ``head`` and ``dist_head``."""
    out = {}
    for key, value in sd.items():
        p = key.split(".")
        if p[0] == "stem":
            p[:2] = ["patch_embed", {"conv1": "0", "norm1": "1", "conv2": "3", "norm2": "4"}[p[1]]]
        elif p[0] == "stages":
            s = int(p[1])
            if p[2] == "blocks":
                p[:4] = ["network", str(2 * s), p[3]]
            else:
                p[:4] = ["network", str(2 * s - 1), {"conv": "proj", "norm": "norm"}[p[3]]]
        elif p[0] == "head_dist":
            p[0] = "dist_head"
        key = ".".join(p).replace("ls1.gamma", "layer_scale_1").replace("ls2.gamma", "layer_scale_2")
        if key.endswith("attention_bias_idxs"):
            value = official_bias_idxs(math.isqrt(value.shape[0]))
        out[key] = value
    return out


# ----------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module", params=list(VARIANTS))
def ref(request, tmp_path_factory):
    r = build_reference(request.param, VARIANTS[request.param], timm_to_official, tmp_path_factory)
    yield r
    for path in vars(r.paths).values():  # up to 3 x 330 MB for the largest variant: don't leave them behind
        path.unlink(missing_ok=True)


def test_params_and_macs_match_paper(ref):
    c = complexity(ref.name)
    assert abs(c["params_diff_pct"]) <= 2.0, c
    assert abs(c["macs_diff_pct"]) <= 2.0, c
    # The same network as timm's, and the convention removes exactly the BatchNorm affine parameters.
    assert c["params"] == ref.params
    assert c["params"] - c["params_paper_convention"] == ref.bn_params
    assert "distillation head included" in get_info(ref.name).params_convention
    assert round(c["params_paper_convention"] / 1e6, 1) == c["paper_params_m"]  # the paper's printed digits


def test_metadata():
    info = get_info("efficientformer")
    assert info.name == "efficientformer-l1"
    for name in VARIANTS:
        info = get_info(name)
        pp = info.preprocess
        assert (pp.crop_pct, pp.interpolation, info.input_size) == (0.95, "bicubic", (3, 224, 224))
        assert info.tags == ("attention",) and info.classifier == "head"
        (claim,) = info.paper.latency
        assert (claim.device, claim.runtime) == ("iPhone 12", "Core ML")
    assert [get_info(n).paper.latency[0].ms for n in VARIANTS] == [1.6, 3.0, 7.0]
    assert [get_info(n).paper.top1 for n in VARIANTS] == [79.2, 82.4, 83.3]


def test_timm_layout_loads_strictly_and_matches(ref):
    # .pth is read the same way for every variant (core's reader); checking it on the smallest keeps this cheap.
    for path in (ref.paths.safetensors, ref.paths.pth) if ref.name == SMALLEST else (ref.paths.safetensors,):
        model = create(ref.name, checkpoint=path)
        assert set(model.state_dict()) == ref.keys  # identity mapping: the same keys as timm
        with torch.no_grad():
            torch.testing.assert_close(model(ref.x), ref.y, rtol=0, atol=1e-5)
        assert "checkpoint" in model.edge_meta["activations"]


def test_official_layout_loads_strictly_and_matches(ref):
    sd = torch.load(ref.paths.official, weights_only=True)["model"]
    assert any(k.startswith("network.6.") and k.endswith("attention_bias_idxs") for k in sd)
    model = create(ref.name, checkpoint=ref.paths.official)
    with torch.no_grad():
        torch.testing.assert_close(model(ref.x), ref.y, rtol=0, atol=1e-5)


def test_deploy_form_matches_training_form(ref):
    model = create(ref.name, checkpoint=ref.paths.safetensors, deploy=True)
    # A Meta4D block's first layer scale multiplies (pool(x) - x): there is no conv before it to fold it into.
    check_deploy_form(model, kept_scales=r"stages\.\d\.blocks\.\d+\.ls1")
    assert [type(b.ls1).__name__ for s in model.stages for b in s.blocks if hasattr(b, "ls1")].count("Identity") == \
        sum(type(b).__name__ == "MetaBlock1d" for s in model.stages for b in s.blocks)
    # LayerNorm affines are folded into the linears that follow: no LayerNorm keeps parameters
    assert not [m for m in model.modules() if isinstance(m, nn.LayerNorm) and m.elementwise_affine]
    with torch.no_grad():
        assert rel_err(model(ref.x), ref.y) <= 1e-4


@pytest.mark.parametrize("name", list(VARIANTS))
def test_traceable_train_and_deploy_form(name):
    # Tracing cost is mostly graph size; the larger variants are built for 64x64 input (the same graph, with the
    # attention-bias tables sized for it) to keep the test cheap. The smallest runs at the paper's 224.
    size = 224 if name == SMALLEST else 64
    model = randomize(create(name, calibrate=False, img_size=size))
    x = natural_images(name, 1, size)
    check_traceable(model, x, deploy=False)
    check_traceable(reparameterize_model(model), x, deploy=True)


def test_checkpoint_for_another_variant_names_the_keys(tmp_path):
    path = tmp_path / "l3.safetensors"
    save_own("efficientformer-l3", path)
    with pytest.raises(EdgeError) as e:
        create("efficientformer-l1", checkpoint=path)
    msg = str(e.value)
    assert "does not fit efficientformer-l1" in msg and "shape-mismatched" in msg and "stem.conv1.weight" in msg
    assert "unexpected" in msg  # L3 has more blocks


def test_default_create_gives_input_dependent_logits():
    x = natural_images("efficientformer-l1", 8)
    model = create("efficientformer-l1")
    assert "re-estimated" in model.edge_meta["activations"]
    deploy = create("efficientformer-l1", deploy=True)
    with torch.no_grad():
        y = model(x)
        yd = deploy(x)
    assert len(set(y.argmax(1).tolist())) > 1  # top-1 is not constant across photos
    spread = (y - y.mean(0)).abs().mean() / y.abs().mean()
    assert spread > 0.05, float(spread)
    assert rel_err(yd, y) <= 1e-4  # deploy form on a batch of 8 natural photos


def test_img_size_option():
    model = create("efficientformer-l1", calibrate=False, img_size=64)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    assert model.state_dict()["stages.3.blocks.4.token_mixer.attention_biases"].shape == (8, 4)
    with pytest.raises(EdgeError, match="img_size 100"):
        create("efficientformer-l1", calibrate=False, img_size=100)
