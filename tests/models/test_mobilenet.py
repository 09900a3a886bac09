"""MobileNetV2 1.0 and MobileNetV3-Large 1.0 (the papers' baselines): numbers, timm checkpoints, deploy, tracing.

timm (imported through tests.reference) is the reference implementation whose checkpoints must load.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from edge.data import image_batch
from edge.errors import EdgeError
from edge.models import calibrate_bn, complexity, count_params, create, get_info, list_models
from tests.reference import import_timm

TIMM = {"mobilenetv2-1.0": "mobilenetv2_100", "mobilenetv3-large-1.0": "mobilenetv3_large_100"}
NAMES = list(TIMM)


@pytest.fixture(scope="module")
def timm():
    return import_timm()


@functools.lru_cache(maxsize=4)
def _photos(n: int, size: int) -> torch.Tensor:
    """``n`` different built-in photos, preprocessed as both variants expect (they share timm's default_cfg)."""
    pp = get_info("mobilenetv2").preprocess
    return image_batch(n, size, pp.mean, pp.std, pp.crop_pct, pp.interpolation)[0]


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
    """Built once per variant and shared by the checkpoint, deploy and tracing tests (to keep CPU time down).

    BN affine terms are random and BN statistics come from photos, so that every stored number affects the
    logits and the logits follow the image."""
    cache: dict[str, Reference] = {}

    @torch.no_grad()
    def get(name: str) -> Reference:
        if name not in cache:
            torch.manual_seed(0)
            model = timm.create_model(TIMM[name], pretrained=False)
            g = torch.Generator().manual_seed(1)
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            calibrate_bn(model, get_info(name), n_images=8)
            sd = model.eval().state_dict()
            d = tmp_path_factory.mktemp(name)
            save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "w.safetensors"))
            torch.save(sd, d / "w.pth")
            x = _photos(2, 96)
            cache[name] = Reference(model, sd, d / "w.safetensors", d / "w.pth", x, model(x))
        return cache[name]

    return get


# ------------------------------------------------------------------------------------------------ registry


def test_variants_aliases_and_metadata(timm):
    assert set(NAMES) <= set(list_models("mobilenet"))
    assert get_info("mobilenetv2").name == "mobilenetv2-1.0"
    assert get_info("mobilenetv3").name == "mobilenetv3-large-1.0"
    for name in NAMES:
        info = get_info(name)
        cfg = timm.models.get_pretrained_cfg(TIMM[name])
        assert info.input_size == tuple(cfg.input_size) == (3, 224, 224)
        pp = info.preprocess
        assert (pp.mean, pp.std, pp.crop_pct, pp.interpolation) == (
            tuple(cfg.mean), tuple(cfg.std), cfg.crop_pct, cfg.interpolation)
        assert info.tags == ("cnn",) and set(info.options) == {"num_classes", "drop_rate"}
        assert info.default_checkpoint_layouts == (f"timm:{TIMM[name]}",)
    v2, v3 = get_info("mobilenetv2-1.0").paper, get_info("mobilenetv3-large-1.0").paper
    assert [(c.ms, c.device, c.runtime) for c in v2.latency] == [(1.7, "iPhone 12", "Core ML")]
    assert [(c.ms, c.runtime, c.threads) for c in v3.latency] == [(46.0, "TFLite", 1)]
    assert (v2.top1, v3.top1) == (71.8, 75.2)
    # papers.md marks the GhostNet paper's baseline params / MACs as not confirmed in the primary source
    assert {"params_m", "macs_m"} <= set(v2.unconfirmed) and {"params_m", "macs_m"} <= set(v3.unconfirmed)


def test_unknown_option_is_refused_and_known_ones_apply():
    with pytest.raises(EdgeError, match="unknown option.*width_mult.*mobilenet accepts: num_classes, drop_rate"):
        create("mobilenetv3", width_mult=0.75)
    model = create("mobilenetv2", calibrate=False, num_classes=10, drop_rate=0.1)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("name", NAMES)
def test_params_and_macs_match_paper(name):
    """Convention: every parameter (BN affine included); conv + linear MACs at 224. MobileNetV3-Large counts
    5.483M (+1.5% on the quoted 5.4M) and 216.6M MACs (-1.1% on 219M)."""
    c = complexity(name)
    info = get_info(name)
    assert c["params"] == c["params_paper_convention"] and c["macs"] == c["macs_paper_convention"]
    assert abs(c["params"] / 1e6 - info.paper.params_m) / info.paper.params_m <= 0.02, c
    assert abs(c["macs"] / 1e6 - info.paper.macs_m) / info.paper.macs_m <= 0.02, c


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


def test_checkpoint_without_bn_counters_loads(tmp_path, reference):
    """Older saves lack ``num_batches_tracked``; the filter fills them (they do nothing in eval)."""
    ref = reference("mobilenetv2-1.0")
    sd = {k: v for k, v in ref.state_dict.items() if not k.endswith("num_batches_tracked")}
    torch.save({"model": sd}, tmp_path / "old.pth")
    with torch.no_grad():
        got = create("mobilenetv2-1.0", checkpoint=tmp_path / "old.pth")(ref.x)
    torch.testing.assert_close(got, ref.logits, atol=1e-5, rtol=1e-5)


def test_checkpoint_for_another_variant_names_the_bad_keys(tmp_path):
    torch.save(get_info("mobilenetv2").builder().state_dict(), tmp_path / "v2.pth")
    with pytest.raises(EdgeError) as e:
        create("mobilenetv3", checkpoint=tmp_path / "v2.pth")
    msg = str(e.value)
    assert "does not fit mobilenetv3-large-1.0" in msg
    assert "missing (blocks.2.0.se.conv_reduce.weight" in msg  # V3's squeeze-excite has no V2 counterpart
    assert "unexpected (blocks.4.2.conv_pw.weight" in msg  # V2 has three 96-channel blocks, V3 two at 112
    assert "conv_stem.weight (32, 3, 3, 3) vs (16, 3, 3, 3)" in msg


# ------------------------------------------------------------------------------------------------ deploy, tracing


@pytest.mark.parametrize("name", NAMES)
def test_deploy_form_folds_every_batchnorm(reference, name):
    ref = reference(name)
    train_form = create(name, checkpoint=ref.safetensors)
    deployed = create(name, checkpoint=ref.safetensors, deploy=True)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in deployed.modules())
    assert count_params(deployed) < count_params(train_form)
    # the activations that shared a module with BN survive the fold
    acts = (nn.ReLU6,) if name.startswith("mobilenetv2") else (nn.Hardswish, nn.ReLU)
    n_acts = [sum(isinstance(m, acts) for m in net.modules()) for net in (train_form, deployed)]
    assert n_acts[0] == n_acts[1] > 0
    x = _photos(4, 96)  # two photos the reference logits were not taken on
    with torch.no_grad():
        a, b = train_form(x), deployed(x)
    _assert_input_dependent(a)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


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
        assert not torch.allclose(model(example), want, atol=1e-3)
    exported = torch.export.export(model, (example,))
    traced = torch.jit.trace(model, (example,), check_trace=False)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(other), want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(traced(other), want, atol=1e-5, rtol=1e-4)


def test_mobilenetv3_uses_hard_swish_and_hard_sigmoid_gates():
    model = get_info("mobilenetv3").builder()
    gates = [m.gate for m in model.modules() if hasattr(m, "conv_reduce")]
    assert len(gates) == 8 and all(isinstance(g, nn.Hardsigmoid) for g in gates)
    assert sum(isinstance(m, nn.Hardswish) for m in model.modules()) > 20
    assert not any(hasattr(m, "conv_reduce") for m in get_info("mobilenetv2").builder().modules())


def test_default_build_gives_input_dependent_logits():
    """With BN statistics re-estimated on natural photos (core's default), the logits follow the image."""
    x = _photos(8, 224)
    with torch.no_grad():
        logits = create("mobilenetv3-large-1.0")(x)
    assert len(set(logits.argmax(1).tolist())) >= 2
    _assert_input_dependent(logits, 0.2)


def test_seeded_weights_do_not_depend_on_the_thread_count():
    """BatchNorm re-estimation sums over the photos; split over threads, the sums would round differently."""
    from edge.models import calibrate_bn, get_info

    info = get_info("mobilenetv2-1.0")
    before = torch.get_num_threads()
    states = []
    for threads in (2, 1):
        torch.manual_seed(0)
        model = info.builder(**info.builder_kwargs)
        torch.set_num_threads(threads)
        try:
            calibrate_bn(model, info)
        finally:
            torch.set_num_threads(before)
        states.append(model.state_dict())
    assert [k for k in states[0] if not torch.equal(states[0][k], states[1][k])] == []
