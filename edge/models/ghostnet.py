"""GhostNet and GhostNetV2.

Papers:
    * `GhostNet: More Features from Cheap Operations` - https://arxiv.org/abs/1911.11907
    * `GhostNetV2: Enhance Cheap Operation with Long-Range Attention` - https://arxiv.org/abs/2211.12905

Original code: huawei-noah ``ghostnet_pytorch/ghostnet.py`` and ``ghostnetv2_pytorch/model/ghostnetv2_torch.py``
(Efficient-AI-Backbones, formerly CV-Backbones); timm ports both as ``ghostnet_*`` / ``ghostnetv2_*``.
The module tree here gives the same state-dict keys as both, so either's checkpoints load with an identity
mapping; the only foreign keys ever seen are thop's profiling buffers (``total_ops``/``total_params``),
which ``checkpoint_filter`` drops.

A Ghost module makes half its output channels with a 1x1 conv and the other half with a cheap depthwise
conv on those; GhostNetV2 gates them with "DFC attention", a decoupled (1x5, 5x1) depthwise attention map
computed at half resolution.

The float deploy form (``reparameterize_model(..., arithmetic="float")``) never concatenates a bottleneck's
expanded halves (``GhostHalvesProjection``; GhostNetV2's DFC gate is split with them): fp32 GhostNet 1.1x faster
in LiteRT and ONNX Runtime on x86. Integer forms keep the concatenation, which is cheaper there than the
requantizing ADD the split needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edge.models._layers import make_divisible
from edge.models._registry import LatencyClaim, ModelInfo, PaperNumbers, Preprocess, register
from edge.models.mobilenet import ConvBnAct, SqueezeExcite, fold_conv_bn
from edge.models.mobilenet import checkpoint_filter as _fill_bn_counters

# ----------------------------------------------------------------------------------------------- blocks


class GhostModule(nn.Module):
    """``out_chs`` channels from a 1x1 "primary" conv (half) plus a cheap depthwise conv of its output (other half)."""

    def __init__(self, in_chs: int, out_chs: int, relu: bool = True, ratio: int = 2, dw_size: int = 3) -> None:
        super().__init__()
        self.out_chs = out_chs
        self.init_chs = init_chs = math.ceil(out_chs / ratio)
        new_chs = init_chs * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_chs, init_chs, 1, 1, 0, bias=False),
            nn.BatchNorm2d(init_chs),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_chs, new_chs, dw_size, 1, dw_size // 2, groups=init_chs, bias=False),
            nn.BatchNorm2d(new_chs),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        out = torch.cat([x1, self.cheap_operation(x1)], dim=1)
        return out[:, : self.out_chs]


class GhostModuleV2(GhostModule):
    """Ghost module gated by DFC attention: avg-pool /2 -> 1x1 conv -> (1x5) and (5x1) depthwise convs -> sigmoid
    -> nearest upsample back; the horizontal and vertical convs give each position a long-range receptive field."""

    def __init__(self, in_chs: int, out_chs: int, relu: bool = True, ratio: int = 2, dw_size: int = 3) -> None:
        super().__init__(in_chs, out_chs, relu, ratio, dw_size)
        self.short_conv = nn.Sequential(
            nn.Conv2d(in_chs, out_chs, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_chs),
            nn.Conv2d(out_chs, out_chs, (1, 5), 1, (0, 2), groups=out_chs, bias=False),
            nn.BatchNorm2d(out_chs),
            nn.Conv2d(out_chs, out_chs, (5, 1), 1, (2, 0), groups=out_chs, bias=False),
            nn.BatchNorm2d(out_chs),
        )
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * dfc_attention(self.short_conv, self.gate, half_resolution(x), out)


def half_resolution(x: torch.Tensor) -> torch.Tensor:
    """DFC attention's input: the block input average-pooled to half resolution."""
    return F.avg_pool2d(x, kernel_size=2, stride=2)


def dfc_attention(short_conv: nn.Module, gate: nn.Module, pooled: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """DFC attention map from the half-resolution input, upsampled (nearest) to ``like``'s size."""
    return F.interpolate(gate(short_conv(pooled)), size=(like.shape[-2], like.shape[-1]), mode="nearest")


class GhostBottleneck(nn.Module):
    """Ghost module (expand) -> [stride-2 depthwise conv + BN] -> [SE] -> Ghost module (project, no ReLU) + shortcut."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, dw_kernel_size: int = 3, stride: int = 1,
                 se_ratio: float = 0.0, attn: bool = False) -> None:
        super().__init__()
        self.ghost1 = (GhostModuleV2 if attn else GhostModule)(in_chs, mid_chs, relu=True)
        if stride > 1:
            pad = (dw_kernel_size - 1) // 2
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, pad, groups=mid_chs, bias=False)
            self.bn_dw: nn.Module = nn.BatchNorm2d(mid_chs)
        else:
            self.conv_dw = None
            self.bn_dw = None
        self.se = SqueezeExcite(mid_chs, make_divisible(mid_chs * se_ratio, 4)) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_chs, out_chs, relu=False)
        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            pad = (dw_kernel_size - 1) // 2
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride, pad, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, 1, 0, bias=False),
                nn.BatchNorm2d(out_chs),
            )
        self.expand: GhostHalvesProjection | None = None  # the deploy form of ghost1 .. ghost2's 1x1 conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.expand is not None:
            return self.ghost2(self.expand(x)) + self.shortcut(x)
        y = self.ghost1(x)
        if self.conv_dw is not None:
            y = self.bn_dw(self.conv_dw(y))
        if self.se is not None:
            y = self.se(y)
        return self.ghost2(y) + self.shortcut(x)

    def reparameterize(self, arithmetic: str = "float") -> None:
        if self.conv_dw is not None:
            self.bn_dw = fold_conv_bn(self.conv_dw, self.bn_dw)
        g = self.ghost1
        # float only: in an integer graph the halves' sum is a requantizing ADD, dearer than the concatenation
        # (GhostNet int8 3-7% slower in both LiteRT and ONNX Runtime on x86)
        if arithmetic == "float" and self.expand is None and 2 * g.init_chs == g.out_chs:
            self.expand = GhostHalvesProjection(self.ghost1, self.conv_dw, self.se, self.ghost2.primary_conv)
            self.ghost2.primary_conv = nn.Identity()
            self.ghost1, self.conv_dw, self.bn_dw, self.se = None, None, None, None


class GhostHalvesProjection(nn.Module):
    """Deploy form of ghost1 -> [depthwise conv] -> [SE] -> ghost2's 1x1 conv that never concatenates the halves.

    The expanding Ghost module's output is ``cat(a, cheap(a))``, and everything up to ghost2's 1x1 conv treats
    the two halves apart (GhostNetV2's DFC gate, depthwise conv, SE's per-channel scale) or sums over them (SE's
    reduce conv, the 1x1 conv), so each of those is split by input or output channels into one op per half and the
    sums are added: the same math, without copying the block's widest tensor into a concatenation (XNNPACK: 5-22%
    of a block's fp32 time on GhostNet's shapes).
    """

    def __init__(self, ghost1: GhostModule, conv_dw: nn.Conv2d | None, se: SqueezeExcite | None,
                 project: nn.Sequential) -> None:
        super().__init__()
        half = ghost1.init_chs
        self.primary_conv, self.cheap_operation = ghost1.primary_conv, ghost1.cheap_operation
        self.dfc, self.dfc_gate = None, None
        if isinstance(ghost1, GhostModuleV2):
            self.dfc, self.dfc_gate = nn.ModuleList(_split_dfc(ghost1.short_conv, half)), ghost1.gate
        self.dw = None if conv_dw is None else nn.ModuleList(_split_outputs(conv_dw, half))
        self.se = None
        if se is not None:
            reduce_a, reduce_b = _split_inputs(se.conv_reduce, half)
            self.se = nn.ModuleDict({"reduce_a": reduce_a, "reduce_b": reduce_b, "act": se.act1, "gate": se.gate,
                                     "expand_a": _take_outputs(se.conv_expand, 0, half),
                                     "expand_b": _take_outputs(se.conv_expand, half, None)})
        conv, bn, act = project
        bn_left = fold_conv_bn(conv, bn)  # the BN folds into the conv before it is split
        self.project_a, self.project_b = _split_inputs(conv, half)
        self.project_act = nn.Sequential(bn_left, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.primary_conv(x)
        b = self.cheap_operation(a)
        if self.dfc is not None:
            pooled = half_resolution(x)
            a = a * dfc_attention(self.dfc[0], self.dfc_gate, pooled, a)
            b = b * dfc_attention(self.dfc[1], self.dfc_gate, pooled, b)
        if self.dw is not None:
            a, b = self.dw[0](a), self.dw[1](b)
        if self.se is not None:
            se = self.se
            s = se["act"](se["reduce_a"](a.mean((2, 3), keepdim=True)) + se["reduce_b"](b.mean((2, 3), keepdim=True)))
            a, b = a * se["gate"](se["expand_a"](s)), b * se["gate"](se["expand_b"](s))
        return self.project_act(self.project_a(a) + self.project_b(b))


def _copy_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, groups: int = 1) -> nn.Conv2d:
    out = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, groups, bias=bias is not None).to(weight)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


def _split_inputs(conv: nn.Conv2d, at: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    """``conv(cat(a, b)) == first(a) + second(b)`` for a dense conv; the bias goes with the first."""
    w = conv.weight
    return _copy_conv(conv, w[:, :at], conv.bias), _copy_conv(conv, w[:, at:], None)


def _take_outputs(conv: nn.Conv2d, start: int, stop: int | None) -> nn.Conv2d:
    """The conv's output channels ``start:stop`` (a depthwise conv keeps one group per channel)."""
    w = conv.weight[start:stop]
    b = None if conv.bias is None else conv.bias[start:stop]
    return _copy_conv(conv, w, b, groups=w.shape[0] if conv.groups > 1 else 1)


def _split_outputs(conv: nn.Conv2d, at: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    return _take_outputs(conv, 0, at), _take_outputs(conv, at, None)


def _split_dfc(short_conv: nn.Sequential, at: int) -> tuple[nn.Sequential, nn.Sequential]:
    """DFC attention's 1x1 conv -> BN -> (1x5) dw -> BN -> (5x1) dw -> BN, BN folded, cut into each half's
    channels."""
    convs = [short_conv[i] for i in (0, 2, 4)]
    for i, conv in zip((1, 3, 5), convs):
        short_conv[i] = fold_conv_bn(conv, short_conv[i])
    first, second = zip(*(_split_outputs(conv, at) for conv in convs))
    return nn.Sequential(*first), nn.Sequential(*second)


# ----------------------------------------------------------------------------------------------- network

# Per block: depthwise kernel, expansion channels, output channels, SE ratio, stride (the paper's Table 1).
GhostCfg = Sequence[Sequence[tuple[int, int, int, float, int]]]
GHOSTNET_CFG: GhostCfg = (
    ((3, 16, 16, 0, 1),),
    ((3, 48, 24, 0, 2),),
    ((3, 72, 24, 0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0, 2),),
    ((3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)),
)


class GhostNet(nn.Module):
    """Stem -> Ghost bottleneck stages -> 1x1 conv-BN-ReLU -> global pool -> 1x1 conv (1280) -> ReLU -> linear.

    ``version="v2"`` swaps the expanding Ghost module of every block after the first two for the DFC-attention one.
    """

    def __init__(self, cfgs: GhostCfg = GHOSTNET_CFG, width: float = 1.0, version: str = "v1",
                 num_classes: int = 1000, drop_rate: float = 0.2, head_chs: int = 1280) -> None:
        super().__init__()
        if version not in ("v1", "v2"):
            raise ValueError(f"unknown GhostNet version {version!r}")
        self.num_classes = num_classes
        stem_chs = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(3, stem_chs, 3, 2, 1, bias=False)
        self.bn1: nn.Module = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU(inplace=True)
        stages: list[nn.Sequential] = []
        chs, idx, exp = stem_chs, 0, 0
        for cfg in cfgs:
            layers = []
            for k, exp, c, se_ratio, s in cfg:
                out_chs, mid_chs = make_divisible(c * width, 4), make_divisible(exp * width, 4)
                attn = version == "v2" and idx > 1
                layers.append(GhostBottleneck(chs, mid_chs, out_chs, k, s, se_ratio=se_ratio, attn=attn))
                chs, idx = out_chs, idx + 1
            stages.append(nn.Sequential(*layers))
        out_chs = make_divisible(exp * width, 4)
        stages.append(nn.Sequential(ConvBnAct(chs, out_chs, 1)))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = nn.Conv2d(out_chs, head_chs, 1, 1, 0, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(head_chs, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean((2, 3), keepdim=True)
        x = self.flatten(self.act2(self.conv_head(x)))
        return self.classifier(self.head_drop(x))

    def reparameterize(self) -> None:
        self.bn1 = fold_conv_bn(self.conv_stem, self.bn1)


_THOP_BUFFERS = ("total_ops", "total_params")


def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm and huawei-noah checkpoints share this network's keys; drop the FLOP-profiler (thop) buffers that
    some released files carry, and fill BN counters that older saves lack."""
    sd = {k: v for k, v in state_dict.items() if k.rsplit(".", 1)[-1] not in _THOP_BUFFERS}
    return _fill_bn_counters(sd, model)


# ----------------------------------------------------------------------------------------------- variants


def ghostnet(width: float = 1.0, version: str = "v1", num_classes: int = 1000, drop_rate: float = 0.2) -> GhostNet:
    return GhostNet(GHOSTNET_CFG, width=width, version=version, num_classes=num_classes, drop_rate=drop_rate)


_PREPROCESS = Preprocess(crop_pct=0.875, interpolation="bicubic")  # timm's ghostnet default_cfg
_OPTIONS = ("num_classes", "drop_rate")
_PARAMS_CONVENTION = "all parameters of the training-form network (BatchNorm affine included, running stats not)"
_MACS_CONVENTION = ("conv + linear MACs from torch.utils.flop_counter (FLOPs / 2), batch 1, 224x224 (the papers' "
                    "'FLOPs'); activations, BN, pooling, DFC sigmoid/upsampling and residual adds not counted")
_PHONE = "ARM-based mobile phone"

_VARIANTS = (
    # name, aliases, width, version, params M, MACs M, top-1, latency ms (None: not in the figure), timm name
    ("ghostnet-0.5x", (), 0.5, "v1", 2.6, 42.0, 66.2, None, "ghostnet_050"),
    ("ghostnet-1.0x", ("ghostnet",), 1.0, "v1", 5.2, 141.0, 73.9, 31.0, "ghostnet_100"),
    ("ghostnet-1.3x", (), 1.3, "v1", 7.3, 226.0, 75.7, 47.0, "ghostnet_130"),
    ("ghostnetv2-1.0x", ("ghostnetv2",), 1.0, "v2", 6.16, 167.0, 75.3, 37.5, "ghostnetv2_100"),
)


def _paper(version: str, params: float, macs: float, top1: float, ms: float | None) -> PaperNumbers:
    v1 = version == "v1"
    arxiv = "1911.11907" if v1 else "2211.12905"
    title = f"{'GhostNet' if v1 else 'GhostNetV2'} (arXiv {arxiv})"
    note = "batch 1" if v1 else "'the same kind of phone' as GhostNet's figure; runtime and threads assumed equal"
    claims = () if ms is None else (LatencyClaim(
        ms=ms, device=_PHONE, runtime="TFLite", threads=1,
        source=f"{title} latency-vs-accuracy figure, read off +-1 ms", note=note),)
    return PaperNumbers(arxiv=arxiv, params_m=params, macs_m=macs, top1=top1, latency=claims,
                        source=f"{title} ImageNet comparison table",
                        unconfirmed=() if v1 else ("latency.runtime", "latency.threads"))


for _name, _aliases, _width, _version, _params, _macs, _top1, _ms, _timm in _VARIANTS:
    register(ModelInfo(
        name=_name,
        family="ghostnet",
        aliases=_aliases,
        builder=ghostnet,
        builder_kwargs={"width": _width, "version": _version},
        paper=_paper(_version, _params, _macs, _top1, _ms),
        preprocess=_PREPROCESS,
        checkpoint_filter=checkpoint_filter,
        params_convention=_PARAMS_CONVENTION,
        macs_convention=_MACS_CONVENTION,
        # DFC attention halves the resolution once more, so V2's last stage needs a 2x2 map (64 px input).
        img_size_rule=(32, 32) if _version == "v1" else (64, 32),
        options=_OPTIONS,
        default_checkpoint_layouts=(f"timm:{_timm}", "huawei-noah:" + ("ghostnet_pytorch" if _version == "v1"
                                                                      else "ghostnetv2_pytorch")),
        tags=("cnn",),
    ))
