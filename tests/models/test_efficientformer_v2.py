"""EfficientFormerV2 S0/S1/S2/L: paper numbers, timm and official checkpoint layouts, deploy form, tracing.

Same approach as ``test_efficientformer.py`` (whose helpers this uses): timm is the reference, randomised beyond
its initialisation; the official-layout files come from a test-side inverse of the key mapping written from
snap-research/EfficientFormer ``models/efficientformer_v2.py``, with the ``attention_bias_idxs`` buffers that code
saves computed its way.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from edge.errors import EdgeError
from edge.models import complexity, create, get_info, reparameterize_model
from tests.models.test_efficientformer import (
    build_reference,
    check_deploy_form,
    check_traceable,
    natural_images,
    official_bias_idxs,
    randomize,
    rel_err,
    save_own,
)
from tests.reference import import_timm

VARIANTS = {"efficientformerv2-s0": "efficientformerv2_s0", "efficientformerv2-s1": "efficientformerv2_s1",
            "efficientformerv2-s2": "efficientformerv2_s2", "efficientformerv2-l": "efficientformerv2_l"}
SMALLEST = "efficientformerv2-s0"

# timm piece -> official piece, below a block (``network.{2s}.{j}.``) or downsampler (``network.{2s-1}.``);
# from the official source: Mlp(fc1, norm1, mid, mid_norm, fc2, norm2); q/k/v/v_local/stride_conv are
# Sequential(conv, bn); the attention's proj is Sequential(act, conv, bn); LGQuery.local is Sequential(conv).
_BLOCK = {
    "mlp.fc1.conv": "mlp.fc1", "mlp.fc1.bn": "mlp.norm1", "mlp.mid.conv": "mlp.mid", "mlp.mid.bn": "mlp.mid_norm",
    "mlp.fc2.conv": "mlp.fc2", "mlp.fc2.bn": "mlp.norm2", "ls1.gamma": "layer_scale_1", "ls2.gamma": "layer_scale_2",
}
for _m in ("q", "k", "v", "v_local", "stride_conv"):
    _BLOCK[f"token_mixer.{_m}.conv"] = f"token_mixer.{_m}.0"
    _BLOCK[f"token_mixer.{_m}.bn"] = f"token_mixer.{_m}.1"
_BLOCK.update({"token_mixer.proj.conv": "token_mixer.proj.1", "token_mixer.proj.bn": "token_mixer.proj.2"})
_DOWN = {"attn.q.local": "attn.q.local.0", "attn.q.proj.conv": "attn.q.proj.0", "attn.q.proj.bn": "attn.q.proj.1",
         "attn.proj.conv": "attn.proj.1", "attn.proj.bn": "attn.proj.2"}
for _m in ("k", "v", "v_local"):
    _DOWN[f"attn.{_m}.conv"] = f"attn.{_m}.0"
    _DOWN[f"attn.{_m}.bn"] = f"attn.{_m}.1"


def _rename(rest: str, table: dict[str, str]) -> str:
    for src in sorted(table, key=len, reverse=True):
        if rest == src or rest.startswith(src + "."):
            return table[src] + rest[len(src):]
    return rest


def timm_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of the official->timm mapping, plus the buffers the official code saves."""
    out = {}
    for key, value in sd.items():
        p = key.split(".")
        if p[0] == "stem":
            stem = {"conv1.conv": "0", "conv1.bn": "1", "conv2.conv": "3", "conv2.bn": "4"}[".".join(p[1:3])]
            key = ".".join(["patch_embed", stem, *p[3:]])
        elif p[0] == "stages" and p[2] == "blocks":
            key = f"network.{2 * int(p[1])}.{p[3]}." + _rename(".".join(p[4:]), _BLOCK)
            if key.endswith(("layer_scale_1", "layer_scale_2")):
                value = value.reshape(-1, 1, 1)  # official layer scales are (dim, 1, 1)
        elif p[0] == "stages":  # downsample: plain Embedding has proj/norm, the attention one conv/bn
            s = int(p[1])
            rest = ".".join(p[3:])
            conv, norm = ("conv", "bn") if s == 3 else ("proj", "norm")
            rest = _rename(rest, {"conv.conv": conv, "conv.bn": norm, **_DOWN})
            key = f"network.{2 * s - 1}.{rest}"
        elif p[0] == "head_dist":
            key = ".".join(["dist_head", *p[1:]])
        out[key] = value
        if key.endswith("attention_biases"):  # the official code also saves the gather index
            res = math.isqrt(value.shape[1])
            idxs = official_bias_idxs(res, math.ceil(res / 2) if ".attn." in key else None)
            out[key.replace("attention_biases", "attention_bias_idxs")] = idxs
    return out


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
    assert c["params"] == ref.params  # the same network as timm's
    assert c["params"] - c["params_paper_convention"] == ref.bn_params  # BN folded, distillation head kept
    assert "distillation head included" in get_info(ref.name).params_convention
    # The official profiler's count (see build_reference) gives the paper's printed digits exactly (S0: 3.535M ->
    # "3.5M"), which is how the paper's S0 figure sits 1.5% below the BN-folded count.
    assert round(ref.toolbox_params / 1e6, 1) == c["paper_params_m"], ref.toolbox_params


def test_metadata():
    assert get_info("efficientformerv2").name == "efficientformerv2-s0"
    for name in VARIANTS:
        info = get_info(name)
        pp = info.preprocess
        assert (pp.crop_pct, pp.interpolation, info.input_size) == (0.95, "bicubic", (3, 224, 224))
        assert info.tags == ("attention",) and info.img_size_rule == (64, 32)
        (claim,) = info.paper.latency
        assert (claim.device, claim.runtime) == ("iPhone 12", "Core ML")
    assert [get_info(n).paper.params_m for n in VARIANTS] == [3.5, 6.1, 12.6, 26.1]
    assert [get_info(n).paper.latency[0].ms for n in VARIANTS] == [0.9, 1.1, 1.6, 2.7]


def test_timm_layout_loads_strictly_and_matches(ref):
    # .pth is read the same way for every variant (core's reader); checking it on the smallest keeps this cheap.
    for path in (ref.paths.safetensors, ref.paths.pth) if ref.name == SMALLEST else (ref.paths.safetensors,):
        model = create(ref.name, checkpoint=path)
        assert set(model.state_dict()) == ref.keys
        with torch.no_grad():
            torch.testing.assert_close(model(ref.x), ref.y, rtol=0, atol=1e-5)


def test_official_layout_loads_strictly_and_matches(ref):
    sd = torch.load(ref.paths.official, weights_only=True)["model"]
    assert "network.5.attn.attention_bias_idxs" in sd and "network.5.conv.weight" in sd
    model = create(ref.name, checkpoint=ref.paths.official)
    with torch.no_grad():
        torch.testing.assert_close(model(ref.x), ref.y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_deploy_form_matches_training_form(ref, layout):
    model = reparameterize_model(create(ref.name, checkpoint=ref.paths.safetensors), layout)
    check_deploy_form(model)  # every layer scale folds here: each follows a conv
    assert not [n for n, _ in model.named_modules() if n.endswith("talking_head1")]  # pushed into the bias buffer
    kinds = {type(m).__name__ for m in model.modules() if "Attention" in type(m).__name__}
    assert kinds == {f"Attention2d{layout.upper()}", f"Attention2dDownsample{layout.upper()}"}
    with torch.no_grad():
        assert rel_err(model(ref.x), ref.y) <= 1e-4


def test_deploy_layout_is_checked():
    with pytest.raises(ValueError, match="nchw, nhwc"):
        reparameterize_model(create(SMALLEST, calibrate=False), "chwn")


@pytest.mark.parametrize("name", list(VARIANTS))
def test_traceable_train_and_deploy_form(name):
    # Tracing cost is mostly graph size; the larger variants are built for 64x64 input (the same graph, with the
    # attention-bias tables sized for it) to keep the test cheap. The smallest runs at the paper's 224.
    size = 224 if name == SMALLEST else 64
    model = randomize(create(name, calibrate=False, img_size=size))
    x = natural_images(name, 1, size)
    check_traceable(model, x, deploy=False)
    for layout in ("nhwc", "nchw"):
        check_traceable(reparameterize_model(copy.deepcopy(model), layout), x, deploy=True)


def test_checkpoint_for_another_variant_names_the_keys(tmp_path):
    path = tmp_path / "s1.safetensors"
    save_own("efficientformerv2-s1", path)
    with pytest.raises(EdgeError) as e:
        create("efficientformerv2-s0", checkpoint=path)
    msg = str(e.value)
    assert "does not fit efficientformerv2-s0" in msg and "shape-mismatched" in msg and "unexpected" in msg
    # the same through the official layout
    official = tmp_path / "s1-official.pth"
    torch.save(timm_to_official(create("efficientformerv2-s1", calibrate=False).state_dict()), official)
    with pytest.raises(EdgeError, match="does not fit efficientformerv2-s0.*shape-mismatched"):
        create("efficientformerv2-s0", checkpoint=official)


def test_official_index_for_another_resolution_is_refused(tmp_path):
    sd = timm_to_official(create("efficientformerv2-s0", calibrate=False).state_dict())
    key = "network.6.2.token_mixer.attention_bias_idxs"
    sd[key] = sd[key].flip(0)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(EdgeError, match="relative-position index"):
        create("efficientformerv2-s0", checkpoint=tmp_path / "bad.pth")


def test_default_create_gives_input_dependent_logits():
    x = natural_images("efficientformerv2-s0", 8)
    model = create("efficientformerv2-s0")
    assert "re-estimated" in model.edge_meta["activations"]
    deploy = create("efficientformerv2-s0", deploy=True)
    with torch.no_grad():
        y = model(x)
        yd = deploy(x)
    assert len(set(y.argmax(1).tolist())) > 1
    spread = (y - y.mean(0)).abs().mean() / y.abs().mean()
    assert spread > 0.05, float(spread)
    assert rel_err(yd, y) <= 1e-4  # deploy form on a batch of 8 natural photos


def test_img_size_option_matches_timm_at_that_size():
    timm = import_timm()
    torch.manual_seed(0)
    ref = randomize(timm.create_model("efficientformerv2_s0", img_size=64))
    model = create("efficientformerv2-s0", calibrate=False, img_size=64)
    model.load_state_dict(ref.state_dict())
    x = natural_images("efficientformerv2-s0", 2, size=64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-5)
        assert rel_err(create("efficientformerv2-s0", calibrate=False, img_size=64, deploy=True)(x),
                       create("efficientformerv2-s0", calibrate=False, img_size=64)(x)) <= 1e-4
    with pytest.raises(EdgeError, match="img_size 240"):
        create("efficientformerv2-s0", calibrate=False, img_size=240)


def test_bn_fold_keeps_no_norm_layers():
    model = create("efficientformerv2-s0", calibrate=False, deploy=True)
    assert not [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm))]
