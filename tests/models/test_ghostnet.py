"""GhostNet 0.5x / 1.0x / 1.3x and GhostNetV2 1.0x: paper numbers, checkpoint layouts, deploy form, tracing.

timm (imported through tests.reference) is the reference implementation the checkpoints must match;
the huawei-noah release layout is checked against key names and shapes read from its source.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from edge.data import image_batch
from edge.errors import EdgeError
from edge.models import calibrate_bn, complexity, count_params, create, get_info, list_models, reparameterize_model
from edge.models.ghostnet import GhostBottleneck, GhostModuleV2
from tests.reference import import_timm

TIMM = {
    "ghostnet-0.5x": "ghostnet_050",
    "ghostnet-1.0x": "ghostnet_100",
    "ghostnet-1.3x": "ghostnet_130",
    "ghostnetv2-1.0x": "ghostnetv2_100",
}
NAMES = list(TIMM)


@pytest.fixture(scope="module")
def timm():
    return import_timm()


@functools.lru_cache(maxsize=4)
def _photos(n: int, size: int) -> torch.Tensor:
    """``n`` different built-in photos, preprocessed as the GhostNet variants expect (all share timm's default_cfg)."""
    pp = get_info("ghostnet").preprocess
    return image_batch(n, size, pp.mean, pp.std, pp.crop_pct, pp.interpolation)[0]


@torch.no_grad()
def _timm_model(timm, name: str) -> nn.Module:
    """timm's network, seeded, with random BN affine terms and BN statistics estimated on photos: a random-init
    GhostNet's logits are otherwise nearly the same for every image, and an output check would prove little."""
    torch.manual_seed(0)
    model = timm.create_model(TIMM[name], pretrained=False)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    calibrate_bn(model, get_info(name), n_images=8)
    return model.eval()


def _assert_input_dependent(logits: torch.Tensor, frac: float = 0.1) -> None:
    assert logits.std(0).mean() >= frac * logits.std(), "logits barely depend on the image"


@dataclass
class Reference:
    """timm's network for one variant, its state dict saved as .safetensors and .pth, and its logits on photos."""

    model: nn.Module
    state_dict: dict[str, torch.Tensor]
    safetensors: Path
    pth: Path
    x: torch.Tensor
    logits: torch.Tensor


@pytest.fixture(scope="module")
def reference(timm, tmp_path_factory):
    """Built once per variant and shared by the checkpoint, deploy and tracing tests (to keep CPU time down)."""
    cache: dict[str, Reference] = {}

    def get(name: str) -> Reference:
        if name not in cache:
            model = _timm_model(timm, name)
            sd = model.state_dict()
            d = tmp_path_factory.mktemp(name)
            save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "w.safetensors"))
            torch.save(sd, d / "w.pth")
            x = _photos(2, 96)
            with torch.no_grad():
                logits = model(x)
            cache[name] = Reference(model, sd, d / "w.safetensors", d / "w.pth", x, logits)
        return cache[name]

    return get


# ------------------------------------------------------------------------------------------------ registry


def test_variants_aliases_and_metadata(timm):
    assert set(NAMES) <= set(list_models("ghostnet"))
    assert get_info("ghostnet").name == "ghostnet-1.0x"
    assert get_info("ghostnetv2").name == "ghostnetv2-1.0x"
    for name in NAMES:
        info = get_info(name)
        cfg = timm.models.get_pretrained_cfg(TIMM[name])
        assert info.input_size == tuple(cfg.input_size) == (3, 224, 224)
        pp = info.preprocess
        assert (pp.mean, pp.std, pp.crop_pct, pp.interpolation) == (
            tuple(cfg.mean), tuple(cfg.std), cfg.crop_pct, cfg.interpolation)
        assert info.tags == ("cnn",) and set(info.options) == {"num_classes", "drop_rate"}
        assert f"timm:{TIMM[name]}" in info.default_checkpoint_layouts
        assert any(layout.startswith("huawei-noah:") for layout in info.default_checkpoint_layouts)
    # latency claims (TFLite, 1 thread, an ARM phone) as papers.md gives them
    claims = {n: [(c.ms, c.runtime, c.threads) for c in get_info(n).paper.latency] for n in NAMES}
    assert claims == {"ghostnet-0.5x": [], "ghostnet-1.0x": [(31.0, "TFLite", 1)],
                      "ghostnet-1.3x": [(47.0, "TFLite", 1)], "ghostnetv2-1.0x": [(37.5, "TFLite", 1)]}
    assert [get_info(n).paper.top1 for n in NAMES] == [66.2, 73.9, 75.7, 75.3]


def test_unknown_option_is_refused():
    with pytest.raises(EdgeError, match="unknown option.*width.*ghostnet accepts: num_classes, drop_rate"):
        create("ghostnet", width=2.0)
    model = create("ghostnet-0.5x", calibrate=False, num_classes=10, drop_rate=0.0)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


# ------------------------------------------------------------------------------------------------ paper numbers


@pytest.mark.parametrize("name", NAMES)
def test_params_and_macs_match_paper(name):
    """Convention: every parameter (BN affine included), and conv + linear MACs at 224 (the papers' "FLOPs").

    GhostNet 0.5x counts 2.587M against the paper's 2.6M (-0.5%): the 1280-wide head is not scaled with width,
    in the paper as in the code, so no special convention is needed.
    """
    c = complexity(name)
    info = get_info(name)
    assert c["params"] == c["params_paper_convention"] and c["macs"] == c["macs_paper_convention"]
    assert abs(c["params"] / 1e6 - info.paper.params_m) / info.paper.params_m <= 0.02, c
    assert abs(c["macs"] / 1e6 - info.paper.macs_m) / info.paper.macs_m <= 0.02, c
    assert abs(c["params_diff_pct"]) <= 2.0 and abs(c["macs_diff_pct"]) <= 2.0


# ------------------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("name", NAMES)
def test_timm_checkpoint_loads_strictly_with_identical_outputs(reference, name):
    ref = reference(name)
    _assert_input_dependent(ref.logits)  # so a misplaced weight or statistic would show
    for path in (ref.safetensors, ref.pth):
        model = create(name, checkpoint=path)
        assert model.edge_meta["activations"].startswith(f"checkpoint {path.name}")
        with torch.no_grad():
            torch.testing.assert_close(model(ref.x), ref.logits, atol=1e-5, rtol=1e-5)


# Key names and shapes produced by huawei-noah's reference sources in Efficient-AI-Backbones (GhostNet V1's
# PyTorch code, pytorch/ghostnet.py at 453f5aa; ghostnetv2_pytorch/model/ghostnetv2_torch.py at 860e89a), read
# off their module definitions. They are the same as timm's; this checks that independently of timm.
OFFICIAL_KEYS = {
    "ghostnet-1.0x": {
        "conv_stem.weight": (16, 3, 3, 3),
        "bn1.running_var": (16,),
        "blocks.0.0.ghost1.primary_conv.0.weight": (8, 16, 1, 1),
        "blocks.0.0.ghost1.cheap_operation.0.weight": (8, 1, 3, 3),
        "blocks.0.0.ghost2.cheap_operation.1.bias": (8,),
        "blocks.1.0.conv_dw.weight": (48, 1, 3, 3),
        "blocks.1.0.bn_dw.running_mean": (48,),
        "blocks.1.0.shortcut.2.weight": (24, 16, 1, 1),
        "blocks.3.0.se.conv_reduce.weight": (20, 72, 1, 1),  # _make_divisible(72 * 0.25, 4)
        "blocks.3.0.se.conv_expand.bias": (72,),
        "blocks.6.4.ghost1.primary_conv.0.weight": (336, 112, 1, 1),
        "blocks.9.0.conv.weight": (960, 160, 1, 1),
        "blocks.9.0.bn1.weight": (960,),
        "conv_head.weight": (1280, 960, 1, 1),
        "conv_head.bias": (1280,),
        "classifier.weight": (1000, 1280),
    },
    "ghostnetv2-1.0x": {
        "blocks.0.0.ghost1.primary_conv.0.weight": (8, 16, 1, 1),
        "blocks.2.0.ghost1.short_conv.0.weight": (72, 24, 1, 1),  # layer_id 2: first block with DFC attention
        "blocks.2.0.ghost1.short_conv.2.weight": (72, 1, 1, 5),
        "blocks.2.0.ghost1.short_conv.4.weight": (72, 1, 5, 1),
        "blocks.2.0.ghost1.short_conv.5.running_var": (72,),
        "blocks.8.3.ghost1.short_conv.0.weight": (960, 160, 1, 1),
        "blocks.8.3.se.conv_reduce.weight": (240, 960, 1, 1),
        "blocks.9.0.bn1.bias": (960,),
        "classifier.bias": (1000,),
    },
}
ABSENT_OFFICIAL_KEYS = ("blocks.1.0.ghost1.short_conv.0.weight",)  # layer_id <= 1 uses the original module


@pytest.mark.parametrize("name", list(OFFICIAL_KEYS))
def test_official_huawei_release_layout(tmp_path, reference, name):
    """The V1 release is a plain state dict (ghostnet_1x.pth); the V2 release wraps it in {"state_dict": ...} and
    carries thop's ``total_ops``/``total_params`` profiling buffers, which the filter drops."""
    ref = reference(name)
    ours = get_info(name).builder(**get_info(name).builder_kwargs).state_dict()
    for key, shape in OFFICIAL_KEYS[name].items():
        assert tuple(ref.state_dict[key].shape) == shape and tuple(ours[key].shape) == shape, key
    if name.startswith("ghostnetv2"):
        assert not any(k in ours for k in ABSENT_OFFICIAL_KEYS)
        prefixes = {k.rsplit(".", 1)[0] for k in ref.state_dict} | {""}
        thop = {f"{p}.{b}".lstrip("."): torch.zeros(1, dtype=torch.float64) for p in prefixes
                for b in ("total_ops", "total_params")}
        path = tmp_path / "ck_ghostnetv2_10.pth.tar"
        torch.save({"state_dict": {**ref.state_dict, **thop}, "epoch": 449}, path)
    else:
        path = tmp_path / "ghostnet_1x.pth"
        torch.save(ref.state_dict, path)
    with torch.no_grad():
        torch.testing.assert_close(create(name, checkpoint=path)(ref.x), ref.logits, atol=1e-5, rtol=1e-5)


def test_wrapped_and_prefixed_checkpoints_load(tmp_path, reference):
    ref = reference("ghostnet-0.5x")
    sd = ref.state_dict
    for label, obj in {"model": {"model": sd}, "state_dict": {"state_dict": sd, "optimizer": {}},
                       "module": {f"module.{k}": v for k, v in sd.items()}}.items():
        torch.save(obj, tmp_path / f"{label}.pth")
        with torch.no_grad():
            got = create("ghostnet-0.5x", checkpoint=tmp_path / f"{label}.pth")(ref.x)
        torch.testing.assert_close(got, ref.logits, atol=1e-5, rtol=1e-5)


def test_checkpoint_for_another_variant_names_the_bad_keys(tmp_path):
    torch.save(get_info("ghostnet-0.5x").builder(width=0.5).state_dict(), tmp_path / "half.pth")
    with pytest.raises(EdgeError) as e:
        create("ghostnet-1.0x", checkpoint=tmp_path / "half.pth")
    msg = str(e.value)
    assert "does not fit ghostnet-1.0x" in msg and "shape-mismatched" in msg
    assert "conv_stem.weight (8, 3, 3, 3) vs (16, 3, 3, 3)" in msg
    torch.save(get_info("ghostnet-1.0x").builder(width=1.0).state_dict(), tmp_path / "v1.pth")
    with pytest.raises(EdgeError, match=r"ghostnetv2-1.0x: \d+ missing \(blocks\.2\.0\.ghost1\.short_conv"):
        create("ghostnetv2-1.0x", checkpoint=tmp_path / "v1.pth")


# ------------------------------------------------------------------------------------------------ deploy, tracing


@pytest.mark.parametrize("name", NAMES)
def test_deploy_form_folds_every_batchnorm(reference, name):
    """Weights with BN statistics from natural photos (see ``reference``), compared on other photos."""
    ref = reference(name)
    train_form = create(name, checkpoint=ref.safetensors)
    deployed = create(name, checkpoint=ref.safetensors, deploy=True)
    assert any(isinstance(m, nn.BatchNorm2d) for m in train_form.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in deployed.modules())
    assert deployed.edge_meta["deploy"] is True
    assert count_params(deployed) < count_params(train_form)
    x = _photos(4, 96)  # two photos the reference logits were not taken on
    with torch.no_grad():
        a, b = train_form(x), deployed(x)
    _assert_input_dependent(a)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


@pytest.mark.parametrize("name", ["ghostnet-0.5x", "ghostnetv2-1.0x"])
def test_float_deploy_form_never_concatenates_the_expanded_halves(reference, name):
    """Float deploy form: ghost1 (with GhostNetV2's DFC gate) -> [dw] -> [SE] -> ghost2's 1x1 conv run per half and
    summed, so only ghost2's concatenation is left; the integer form keeps both. Same outputs either way."""
    model = create(name, checkpoint=reference(name).safetensors)
    forms = {a: reparameterize_model(copy.deepcopy(model), arithmetic=a) for a in ("float", "integer")}
    blocks = [m for m in model.modules() if isinstance(m, GhostBottleneck)]
    assert any(isinstance(b.ghost1, GhostModuleV2) for b in blocks) == name.startswith("ghostnetv2")
    x = _photos(2, 64)
    with torch.no_grad():
        want = model(x)
        for arithmetic, form in forms.items():
            got = form(x)
            assert (got - want).abs().max() <= 1e-4 * want.abs().max(), arithmetic

    def cats(m):
        return sum(n.target == torch.ops.aten.cat.default for n in torch.export.export(m, (x[:1],)).graph.nodes)

    assert cats(forms["integer"]) == cats(model) == 2 * len(blocks)
    assert cats(forms["float"]) == len(blocks)


@pytest.mark.parametrize("name", NAMES)
def test_export_and_jit_trace(reference, name):
    """No data-dependent control flow: graphs captured on one photo give eager's output on another."""
    model = create(name, checkpoint=reference(name).safetensors)
    lo = get_info(name).img_size_rule[0]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, lo, lo)).shape == (1, 1000)  # the stated minimum size runs
    x = _photos(2, 64)
    example, other = x[:1], x[1:]
    with torch.no_grad():
        want = model(other)
        assert not torch.allclose(model(example), want, atol=1e-3)  # a graph that baked in its example would fail
    exported = torch.export.export(model, (example,))
    traced = torch.jit.trace(model, (example,), check_trace=False)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(other), want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(traced(other), want, atol=1e-5, rtol=1e-4)


def test_se_gate_is_hard_sigmoid_and_dfc_gate_is_sigmoid():
    v1 = get_info("ghostnet").builder()
    gates = [m.se.gate for m in v1.modules() if getattr(m, "se", None) is not None]
    assert len(gates) == 7 and all(isinstance(g, nn.Hardsigmoid) for g in gates)
    v2 = get_info("ghostnetv2").builder(version="v2")
    assert sum(hasattr(m, "short_conv") for m in v2.modules()) == 14  # all 16 blocks but the first two


def test_default_build_gives_input_dependent_logits():
    """BN re-estimated on natural photos (core's default) makes the logits follow the image; the raw random
    init gives nearly constant logits, which is why that default exists."""
    x = _photos(8, 224)
    with torch.no_grad():
        logits = create("ghostnet-0.5x")(x)
        raw = create("ghostnet-0.5x", calibrate=False)(x)
    assert len(set(logits.argmax(1).tolist())) >= 2
    _assert_input_dependent(logits, 0.2)
    assert raw.std(0).mean() < 0.05 * raw.std()
