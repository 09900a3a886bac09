"""MobileNetV2 and MobileNetV3-Large, the baselines the GhostNet and EfficientFormer papers compare with.

Papers:
    * `MobileNetV2: Inverted Residuals and Linear Bottlenecks` - https://arxiv.org/abs/1801.04381
    * `Searching for MobileNetV3` - https://arxiv.org/abs/1905.02244

Written to share the state-dict keys of timm's ``mobilenetv2_100`` / ``mobilenetv3_large_100``
(``timm/models/efficientnet.py``, ``mobilenetv3.py``, ``_efficientnet_blocks.py``), so their checkpoints
load with an identity mapping and give the same outputs. As in timm, BatchNorm and the activation after it
share one module (``BatchNormAct2d``, a ``BatchNorm2d`` subclass), so the keys stay ``bn1.weight`` and friends.

The blocks here (``BatchNormAct2d``, ``SqueezeExcite``, ``ConvBnAct``) are shared with ``ghostnet.py``,
the way timm shares ``_efficientnet_blocks``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edge.models._layers import fold_bn_into, make_divisible
from edge.models._registry import LatencyClaim, ModelInfo, PaperNumbers, Preprocess, register

ActLayer = Callable[[], nn.Module]


# ----------------------------------------------------------------------------------------------- blocks


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm then an activation in one module, so keys match timm (``bn1.weight``, not ``bn1.bn.weight``)."""

    def __init__(self, num_features: int, act_layer: ActLayer | None = None) -> None:
        super().__init__(num_features)
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


def fold_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> nn.Module:
    """Fold ``bn`` into ``conv`` in place; return what should replace ``bn``.

    A ``BatchNormAct2d`` leaves its activation behind, a plain BatchNorm leaves an Identity, and anything
    else (already folded) is returned unchanged, so a second call is harmless.
    """
    if not isinstance(bn, nn.BatchNorm2d):
        return bn
    fold_bn_into(conv, bn)
    return bn.act if isinstance(bn, BatchNormAct2d) else nn.Identity()


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global mean -> 1x1 reduce -> ReLU -> 1x1 expand -> gate (hard-sigmoid in both papers)."""

    def __init__(self, chs: int, rd_chs: int, gate_layer: ActLayer = nn.Hardsigmoid) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(chs, rd_chs, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(rd_chs, chs, 1, bias=True)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        return x * self.gate(s)


class ConvBnAct(nn.Module):
    """Plain conv -> BN -> activation (the 1x1 conv that closes the MobileNetV3 / GhostNet body)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 act_layer: ActLayer = nn.ReLU) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn1 = BatchNormAct2d(out_chs, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv(x))

    def reparameterize(self) -> None:
        self.bn1 = fold_conv_bn(self.conv, self.bn1)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise conv -> BN-act -> (SE) -> pointwise conv -> BN, with a residual when shapes allow."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 act_layer: ActLayer = nn.ReLU, se: nn.Module | None = None, skip: bool = True) -> None:
        super().__init__()
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        self.conv_dw = nn.Conv2d(in_chs, in_chs, kernel_size, stride, kernel_size // 2, groups=in_chs, bias=False)
        self.bn1 = BatchNormAct2d(in_chs, act_layer)
        self.se = se if se is not None else nn.Identity()
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn2 = BatchNormAct2d(out_chs, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn1(self.conv_dw(x))
        y = self.bn2(self.conv_pw(self.se(y)))
        return y + x if self.has_skip else y

    def reparameterize(self) -> None:
        self.bn1 = fold_conv_bn(self.conv_dw, self.bn1)
        self.bn2 = fold_conv_bn(self.conv_pw, self.bn2)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> BN-act -> depthwise -> BN-act -> (SE) -> 1x1 linear projection -> BN."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 act_layer: ActLayer = nn.ReLU, se: nn.Module | None = None) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_pw = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.bn1 = BatchNormAct2d(mid_chs, act_layer)
        self.conv_dw = nn.Conv2d(mid_chs, mid_chs, kernel_size, stride, kernel_size // 2, groups=mid_chs, bias=False)
        self.bn2 = BatchNormAct2d(mid_chs, act_layer)
        self.se = se if se is not None else nn.Identity()
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False)
        self.bn3 = BatchNormAct2d(out_chs, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn1(self.conv_pw(x))
        y = self.bn2(self.conv_dw(y))
        y = self.bn3(self.conv_pwl(self.se(y)))
        return y + x if self.has_skip else y

    def reparameterize(self) -> None:
        self.bn1 = fold_conv_bn(self.conv_pw, self.bn1)
        self.bn2 = fold_conv_bn(self.conv_dw, self.bn2)
        self.bn3 = fold_conv_bn(self.conv_pwl, self.bn3)


# ----------------------------------------------------------------------------------------------- networks


@dataclass(frozen=True)
class BlockSpec:
    """One block of the body: ``kind`` is "ds" (depthwise-separable), "ir" (inverted residual) or "cn" (conv-bn-act)."""

    kind: str
    kernel: int
    stride: int
    out_chs: int
    mid_chs: int = 0  # expansion channels ("ir" only)
    se: bool = False
    act: str = "default"  # "relu" forces ReLU (MobileNetV3's early blocks); "default" = the network's act


def _act(name: str) -> ActLayer:
    return {
        "relu": lambda: nn.ReLU(inplace=True),
        "relu6": lambda: nn.ReLU6(inplace=True),
        "hardswish": nn.Hardswish,
    }[name]


def _build_body(stages: Sequence[Sequence[BlockSpec]], in_chs: int, act: str,
                se_divisor: int) -> tuple[nn.Sequential, int]:
    """Stages of blocks as nested Sequentials (timm's ``blocks.<stage>.<block>`` key layout)."""
    out: list[nn.Sequential] = []
    for stage in stages:
        blocks: list[nn.Module] = []
        for b in stage:
            act_layer = _act("relu" if b.act == "relu" else act)
            width = in_chs if b.kind == "ds" else b.mid_chs
            se = SqueezeExcite(width, make_divisible(width * 0.25, se_divisor)) if b.se else None
            if b.kind == "ds":
                blocks.append(DepthwiseSeparableConv(in_chs, b.out_chs, b.kernel, b.stride, act_layer, se))
            elif b.kind == "ir":
                blocks.append(InvertedResidual(in_chs, b.mid_chs, b.out_chs, b.kernel, b.stride, act_layer, se))
            elif b.kind == "cn":
                blocks.append(ConvBnAct(in_chs, b.out_chs, b.kernel, b.stride, act_layer))
            else:
                raise ValueError(f"unknown block kind {b.kind!r}")
            in_chs = b.out_chs
        out.append(nn.Sequential(*blocks))
    return nn.Sequential(*out), in_chs


def _init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convs, small normal init for the classifier, as the MobileNet papers train from."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class MobileNetV2(nn.Module):
    """MobileNetV2: stem -> inverted-residual body -> 1x1 conv-BN-ReLU6 head -> global pool -> linear."""

    def __init__(self, stages: Sequence[Sequence[BlockSpec]], stem_chs: int = 32, head_chs: int = 1280,
                 num_classes: int = 1000, drop_rate: float = 0.0, act: str = "relu6") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv_stem = nn.Conv2d(3, stem_chs, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(stem_chs, _act(act))
        self.blocks, chs = _build_body(stages, stem_chs, act, se_divisor=8)
        self.conv_head = nn.Conv2d(chs, head_chs, 1, bias=False)
        self.bn2 = BatchNormAct2d(head_chs, _act(act))
        self.flatten = nn.Flatten(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(head_chs, num_classes) if num_classes > 0 else nn.Identity()
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(x))
        x = self.blocks(x)
        return self.bn2(self.conv_head(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.forward_features(x).mean((2, 3), keepdim=True))
        return self.classifier(self.head_drop(x))

    def reparameterize(self) -> None:
        self.bn1 = fold_conv_bn(self.conv_stem, self.bn1)
        self.bn2 = fold_conv_bn(self.conv_head, self.bn2)


class MobileNetV3(nn.Module):
    """MobileNetV3: stem -> body -> global pool -> 1x1 conv (bias, no BN) -> hard-swish -> linear ("efficient head")."""

    def __init__(self, stages: Sequence[Sequence[BlockSpec]], stem_chs: int = 16, head_chs: int = 1280,
                 num_classes: int = 1000, drop_rate: float = 0.2, act: str = "hardswish") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv_stem = nn.Conv2d(3, stem_chs, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(stem_chs, _act(act))
        self.blocks, chs = _build_body(stages, stem_chs, act, se_divisor=8)
        self.conv_head = nn.Conv2d(chs, head_chs, 1, bias=True)
        self.act2 = _act(act)()
        self.flatten = nn.Flatten(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(head_chs, num_classes) if num_classes > 0 else nn.Identity()
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean((2, 3), keepdim=True)
        x = self.flatten(self.act2(self.conv_head(x)))
        return self.classifier(self.head_drop(x))

    def reparameterize(self) -> None:
        self.bn1 = fold_conv_bn(self.conv_stem, self.bn1)


def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's layout is this network's own; only BN ``num_batches_tracked`` counters (absent from some
    older saves, unused in eval) are filled in so such files still load strictly."""
    out = dict(state_dict)
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in out and k.rsplit(".", 1)[0] + ".running_mean" in out:
            out[k] = torch.zeros_like(v)
    return out


# ----------------------------------------------------------------------------------------------- variants

S = BlockSpec
MOBILENETV2_100 = (  # t, c, n, s of the paper's Table 2; expansion channels written out (in_chs * 6)
    (S("ds", 3, 1, 16),),
    (S("ir", 3, 2, 24, 96), S("ir", 3, 1, 24, 144)),
    (S("ir", 3, 2, 32, 144), S("ir", 3, 1, 32, 192), S("ir", 3, 1, 32, 192)),
    (S("ir", 3, 2, 64, 192), *[S("ir", 3, 1, 64, 384)] * 3),
    (S("ir", 3, 1, 96, 384), *[S("ir", 3, 1, 96, 576)] * 2),
    (S("ir", 3, 2, 160, 576), *[S("ir", 3, 1, 160, 960)] * 2),
    (S("ir", 3, 1, 320, 960),),
)
MOBILENETV3_LARGE_100 = (  # the paper's Table 1 (kernel, stride, out, expansion, SE, NL)
    (S("ds", 3, 1, 16, act="relu"),),
    (S("ir", 3, 2, 24, 64, act="relu"), S("ir", 3, 1, 24, 72, act="relu")),
    (S("ir", 5, 2, 40, 72, True, "relu"), *[S("ir", 5, 1, 40, 120, True, "relu")] * 2),
    (S("ir", 3, 2, 80, 240), S("ir", 3, 1, 80, 200), S("ir", 3, 1, 80, 184), S("ir", 3, 1, 80, 184)),
    (S("ir", 3, 1, 112, 480, True), S("ir", 3, 1, 112, 672, True)),
    (S("ir", 5, 2, 160, 672, True), *[S("ir", 5, 1, 160, 960, True)] * 2),
    (S("cn", 1, 1, 960),),
)
del S

_TIMM_PREPROCESS = Preprocess(crop_pct=0.875, interpolation="bicubic")  # timm default_cfg of both
_OPTIONS = ("num_classes", "drop_rate")
_PARAMS_CONVENTION = "all parameters of the training-form network (BatchNorm affine included, running stats not)"
_MACS_CONVENTION = ("conv + linear MACs from torch.utils.flop_counter (FLOPs / 2), batch 1, 224x224; "
                    "activations, BN, pooling and residual adds not counted")
_GHOSTNET_FIG = "GhostNet (arXiv 1911.11907) latency-vs-accuracy figure, read off +-1 ms"


def mobilenetv2(num_classes: int = 1000, drop_rate: float = 0.0) -> MobileNetV2:
    return MobileNetV2(MOBILENETV2_100, num_classes=num_classes, drop_rate=drop_rate)


def mobilenetv3_large(num_classes: int = 1000, drop_rate: float = 0.2) -> MobileNetV3:
    return MobileNetV3(MOBILENETV3_LARGE_100, num_classes=num_classes, drop_rate=drop_rate)


register(ModelInfo(
    name="mobilenetv2-1.0",
    family="mobilenet",
    aliases=("mobilenetv2",),
    builder=mobilenetv2,
    paper=PaperNumbers(
        arxiv="1801.04381",
        params_m=3.5,
        macs_m=300.0,
        top1=71.8,
        latency=(
            LatencyClaim(ms=1.7, device="iPhone 12", runtime="Core ML", source="EfficientFormer (arXiv 2206.01191) "
                         "baseline table", note="MobileNetV2 x1.0 baseline of the EfficientFormer paper"),
        ),
        source="baseline numbers quoted by the GhostNet and EfficientFormer papers",
        unconfirmed=("params_m", "macs_m"),
    ),
    preprocess=_TIMM_PREPROCESS,
    checkpoint_filter=checkpoint_filter,
    params_convention=_PARAMS_CONVENTION,
    macs_convention=_MACS_CONVENTION,
    img_size_rule=(32, 32),
    options=_OPTIONS,
    default_checkpoint_layouts=("timm:mobilenetv2_100",),
    tags=("cnn",),
))

register(ModelInfo(
    name="mobilenetv3-large-1.0",
    family="mobilenet",
    aliases=("mobilenetv3", "mobilenetv3-large"),
    builder=mobilenetv3_large,
    paper=PaperNumbers(
        arxiv="1905.02244",
        params_m=5.4,
        macs_m=219.0,
        top1=75.2,
        latency=(
            LatencyClaim(ms=46.0, device="ARM-based mobile phone", runtime="TFLite", threads=1,
                         source=_GHOSTNET_FIG, note="the MobileNetV3 point at 75.2% top-1 (Large 1.0x)"),
        ),
        source="baseline numbers quoted by the GhostNet paper's ImageNet comparison",
        unconfirmed=("params_m", "macs_m", "top1"),
    ),
    preprocess=_TIMM_PREPROCESS,
    checkpoint_filter=checkpoint_filter,
    params_convention=_PARAMS_CONVENTION,
    macs_convention=_MACS_CONVENTION,
    img_size_rule=(32, 32),
    options=_OPTIONS,
    default_checkpoint_layouts=("timm:mobilenetv3_large_100",),
    tags=("cnn",),
))
