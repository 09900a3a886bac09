"""Mobile-Former: a MobileNet-style local path and a few global tokens, joined by two-way cross-attention.

Paper: Chen et al., "Mobile-Former: Bridging MobileNet and Transformer", CVPR 2022 (arXiv 2108.05895).
Variant configurations and the state-dict layout follow the public implementation that ships weights for all
seven variants, AAboys/MobileFormer (``mobile_former.py`` / ``dna_blocks.py``, built on timm 0.3.4); its
checkpoints load here by key identity. The network is written anew for export:

* tokens stay ``[B, M, D]``; feature maps enter a bridge flattened to ``[B, HW, C]`` (a free reshape of the NHWC
  tensor a converter keeps); only Mobile->Former's keys need the channels-first ``[B, C, HW]`` view;
* heads are channel slices, every softmax runs on the last dimension, and keys are handed over transposed so
  every product is a plain batched matmul (``q @ k.T`` becomes a FULLY_CONNECTED with run-time weights in
  TFLite, which XNNPACK does not delegate);
* dynamic-ReLU coefficients come from token 0 through the per-layer MLP, reshaped once to ``[B, 2C, 1, 1]``;
* ``reparameterize()`` folds BatchNorm (by the core), the attention scales, and the hard-sigmoid affine maps
  of dynamic ReLU and of the Mobile->Former gate into the neighbouring linear layers, runs the dynamic-ReLU MLPs
  as 1x1 convs and spells LayerNorm out, so converters keep everything channels-last; expanding depthwise convs
  become input copies and a multiplier-1 depthwise conv (:class:`RepeatedDepthwise`), which integer kernels run
  far faster.

Parameter and MAdds conventions (``count_paper_params`` / ``count_paper_macs``) are stated in the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edge.models._layers import fold_bn_into
from edge.models._registry import ModelInfo, PaperNumbers, Preprocess, register

ARXIV = "2108.05895"
BRIDGE_HEADS = 2  # Mobile->Former and Former->Mobile (attn_num_heads in the reference)
FORMER_HEADS = 4  # the Former's self-attention (the reference's GlobalBlock default, never overridden)
HYPER_REDUCTION = 4  # token_dim // 4 hidden units in each dynamic-ReLU coefficient MLP
FFN_EXPANSION = 2
MAX_CONCAT_INPUTS = 5  # LiteRT's XNNPACK delegate leaves a CONCATENATION of more inputs to TFLite's own kernels


def _scale_linear_(linear: nn.Linear, factor: float, shift: torch.Tensor | float = 0.0) -> None:
    """In place: ``linear(x) * factor + shift`` becomes ``linear(x)``."""
    with torch.no_grad():
        linear.weight.mul_(factor)
        linear.bias.mul_(factor).add_(shift)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle (only Mobile-Former-26M uses grouped 1x1 convs).

    Written channels-last: NHWC runtimes then need one TRANSPOSE per shuffle instead of three.
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = x.permute(0, 2, 3, 1).reshape(b, h, w, self.groups, c // self.groups).transpose(3, 4)
        return y.reshape(b, h, w, c).permute(0, 3, 1, 2)


def _maybe_shuffle(groups: int, applies: bool) -> nn.Module:
    # An empty Sequential keeps the reference's module indices (and thus its state-dict keys) in every variant.
    return ChannelShuffle(groups) if applies else nn.Sequential()


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


def _repeat_channels(x: torch.Tensor, copies: int) -> torch.Tensor:
    """``x`` concatenated ``copies`` times along channels, no concatenation taking more than MAX_CONCAT_INPUTS.

    More copies are a concatenation of concatenations, each read more than once: the converter folds a nested
    concatenation that is read once back into one op with all the inputs (XNNPACK then leaves it out).
    """
    if copies <= MAX_CONCAT_INPUTS:
        return torch.cat([x] * copies, dim=1)
    inner = next((k for k in range(MAX_CONCAT_INPUTS, 1, -1) if copies % k == 0), None)
    if inner is None:  # a prime above the limit: one wide concatenation
        return torch.cat([x] * copies, dim=1)
    return _repeat_channels(_repeat_channels(x, inner), copies // inner)


def _copy_major(channels: int, copies: int) -> torch.Tensor:
    """For each output channel of :class:`RepeatedDepthwise`, the expanding conv's output channel it computes."""
    p = torch.arange(channels * copies)
    return (p % channels) * copies + p // channels


class RepeatedDepthwise(nn.Module):
    """Deploy form of an expanding depthwise conv (C -> m*C channels, one group per input channel).

    Converters keep a channel multiplier m > 1 as one DEPTHWISE_CONV_2D, which XNNPACK's int8 path runs as a
    grouped GEMM with m outputs per group: in Mobile-Former-294M's int8 TFLite those convs took about 70% of the
    time (int8 ran at 0.61x fp32's speed on an AMX Xeon; 1.43x with this form, docs/fast-artifacts.md). The same
    numbers come from the input repeated m times along channels (concatenations) and a depthwise conv with
    multiplier 1, whose outputs are in copy-major order (copy j of channel c at j*C + c) instead of channel-major
    (c*m + j); ``order`` maps each new channel to the old one, and the layers that read them are permuted to match
    (``_repeat_expanding_depthwise``).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        channels, self.copies = conv.in_channels, conv.out_channels // conv.in_channels
        self.conv = nn.Conv2d(conv.out_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              groups=conv.out_channels)
        self.order = _copy_major(channels, self.copies)
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight[self.order])
            self.conv.bias.copy_(conv.bias[self.order] if conv.bias is not None else torch.zeros(conv.out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_repeat_channels(x, self.copies))


def _expands(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.groups == conv.in_channels > 1
            and conv.out_channels > conv.in_channels)


@torch.no_grad()
def _repeat_expanding_depthwise(seq: nn.Sequential, readers: Sequence[nn.Conv2d]) -> torch.Tensor | None:
    """In place: ``seq`` = (expanding depthwise conv, BatchNorm, ...) gets its BatchNorm folded and the conv
    written as :class:`RepeatedDepthwise`; each conv in ``readers`` reads the new channel order. Returns the order
    (new channel -> old channel) for the per-channel layers in between, or None when ``seq`` does not expand."""
    conv, bn = seq[0], seq[1]
    if not _expands(conv) or not isinstance(bn, nn.BatchNorm2d):
        return None
    fold_bn_into(conv, bn)
    repeated = RepeatedDepthwise(conv)
    seq[0], seq[1] = repeated, nn.Identity()
    for reader in readers:
        reader.weight.copy_(reader.weight[:, repeated.order].clone())
    return repeated.order


class TokenNorm(nn.LayerNorm):
    """LayerNorm over the token dimension. Deploy form spells it out as ``mean((x - mu)^2 + eps)``: converters
    lower that with keep-dims reductions, where ``nn.LayerNorm`` costs four RESHAPEs per norm in TFLite."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.explicit = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.explicit:
            return super().forward(x)
        d = x - x.mean(-1, keepdim=True)
        return d * torch.rsqrt((d * d + self.eps).mean(-1, keepdim=True)) * self.weight + self.bias

    def reparameterize(self) -> None:
        self.explicit = True


class DynamicReLU(nn.Module):
    """Dynamic ReLU-B: ``max(a1 * x, a2 * x)`` with per-sample, per-channel slopes from the tokens.

    ``coeffs`` is ``[B, 2C, 1, 1]``: the first C channels are a1 in [0, 2], the last C are a2 in [-1, 1].
    Counting hooks attach here: the paper counts 3 ops per output element (two multiplies and a max).
    """

    def forward(self, x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        a1, a2 = coeffs.chunk(2, dim=1)
        return torch.maximum(x * a1, x * a2)


class DyReLUCoefficients(nn.Module):
    """Slopes of one dynamic ReLU from token 0: Linear -> ReLU -> Linear -> hard sigmoid, mapped to (a1, a2).

    The reference maps the hard sigmoid h as a1 = 2h, a2 = 2h - 1. The deploy form folds that factor (and the
    hard sigmoid's 1/6 and +3) into the last layer, leaving a1 = hardtanh(z) + 1, a2 = hardtanh(z), and runs the
    MLP as 1x1 convs on token 0 viewed as ``[B, D, 1, 1]``: converters then keep the coefficients channels-last,
    so slicing them needs no layout op.
    """

    def __init__(self, token_dim: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.hyper = nn.Sequential(
            nn.Linear(token_dim, token_dim // HYPER_REDUCTION),
            nn.ReLU(inplace=True),
            nn.Linear(token_dim // HYPER_REDUCTION, 2 * channels),
            nn.Hardsigmoid(),
        )
        # added to the coefficients: -1 on the a2 half (training form); +1 on the a1 half (deploy form)
        self.register_buffer("shift", torch.cat([torch.zeros(channels), -torch.ones(channels)]), persistent=False)
        self.deployed = False

    def forward(self, token0: torch.Tensor) -> torch.Tensor:
        """token0 [B, 1, D] -> coefficients [B, 2C, 1, 1]."""
        if self.deployed:
            return self.hyper(token0.reshape(token0.shape[0], -1, 1, 1)) + self.shift
        return (self.hyper(token0) * 2.0 + self.shift).reshape(token0.shape[0], 2 * self.channels, 1, 1)

    @torch.no_grad()
    def permute_channels(self, order: torch.Tensor) -> None:
        """Give the coefficients of channel ``order[i]`` to channel i (both halves, a1 and a2)."""
        rows = torch.cat([order, order + self.channels])
        last = self.hyper[2]
        last.weight.copy_(last.weight[rows].clone())
        last.bias.copy_(last.bias[rows].clone())
        self.shift = self.shift.flatten()[rows].reshape(self.shift.shape)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deployed:
            return
        # 2 * relu6(z + 3) / 6 - 1 == hardtanh(z / 3)
        _scale_linear_(self.hyper[2], 1.0 / 3.0)
        self.hyper[0], self.hyper[2] = _pointwise_conv(self.hyper[0]), _pointwise_conv(self.hyper[2])
        self.hyper[3] = nn.Hardtanh()
        self.shift = (self.shift + 1.0).reshape(1, -1, 1, 1)  # 4-D, so converters keep the add channels-last
        self.deployed = True


def _pointwise_conv(linear: nn.Linear) -> nn.Conv2d:
    """The same map as ``linear``, on ``[B, C, 1, 1]`` tensors."""
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None, None])
        conv.bias.copy_(linear.bias)
    return conv


def _head_attention(q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention over channel slices: q [B, Nq, C], k_t [B, C, Nk] (keys, transposed), v [B, Nk, Cv]
    -> [B, Nq, Cv]. Scores ``q @ k_t`` (scale already in q), softmax over the last dim.

    Heads are channel chunks, so no head reshapes/transposes appear in the exported graph. Keys come transposed
    because converters turn ``q @ k.transpose()`` into a FULLY_CONNECTED op with run-time weights, which
    XNNPACK does not delegate (each one splits the delegated graph); a plain batched matmul it runs.
    ``torch.bmm`` rather than ``@``: ATen decomposes a matmul into expand + view + bmm + view, and the converters
    re-trace the graph several times, so the 5 extra nodes per product cost litert-torch about 7 s per export of
    Mobile-Former-294M (180 products); the converted graphs are the same.
    """
    outs = [
        torch.bmm(torch.softmax(torch.bmm(qh, kh), dim=-1), vh)
        for qh, kh, vh in zip(q.chunk(heads, -1), k_t.chunk(heads, 1), v.chunk(heads, -1))
    ]
    return torch.cat(outs, dim=-1)


def _flatten_hw(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, HW, C]: a plain reshape of the NHWC tensor that converters keep."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


class MobileToFormer(nn.Module):
    """Mobile->Former cross-attention: tokens query the feature map (keys = values = the features).

    Reference ``Local2Global`` with ``block_type='attn'``, ``use_dynamic=True``, ``remove_proj_local=True``:
    tokens <- LayerNorm(tokens + proj(attn(q(tokens), x, x) * 2 * hardsigmoid(alpha(tokens)))).
    """

    def __init__(self, channels: int, token_dim: int, heads: int = BRIDGE_HEADS) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.alpha_gain = 2.0
        self.alpha = nn.Sequential(nn.Linear(token_dim, channels), nn.Hardsigmoid())
        self.q = nn.Linear(token_dim, channels)
        self.proj = nn.Linear(channels, token_dim)
        self.layer_norm = TokenNorm(token_dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        q = self.q(tokens)
        if self.scale != 1.0:
            q = q * self.scale
        # keys [B, C, HW] (channels-first: one transpose of the map in NHWC runtimes), values [B, HW, C]
        t = _head_attention(q, x.flatten(2), _flatten_hw(x), self.heads) * self.alpha(tokens)  # [B, M, C]
        if self.alpha_gain != 1.0:
            t = t * self.alpha_gain
        return self.layer_norm(tokens + self.proj(t))

    def reparameterize(self) -> None:
        if self.scale != 1.0:
            _scale_linear_(self.q, self.scale)
            self.scale = 1.0
        if self.alpha_gain != 1.0:
            # 2 * relu6(z + 3) / 6: the +3 goes into alpha's bias, the 2/6 into proj (proj(t * g) == (g W) t + b)
            _scale_linear_(self.alpha[0], 1.0, 3.0)
            self.alpha[1] = nn.ReLU6()
            with torch.no_grad():
                self.proj.weight.mul_(self.alpha_gain / 6.0)
            self.alpha_gain = 1.0


class Former(nn.Module):
    """The Former: self-attention over the tokens (keys = values = tokens), then an FFN; post-norm.

    Reference ``GlobalBlock`` with ``block_type='attn'``, ``use_ffn=True``, 4 heads.
    """

    def __init__(self, token_dim: int, heads: int = FORMER_HEADS, ffn_expansion: int = FFN_EXPANSION) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (token_dim // heads) ** -0.5
        self.ffn = nn.Sequential(
            nn.Linear(token_dim, token_dim * ffn_expansion), nn.GELU(), nn.Linear(token_dim * ffn_expansion, token_dim)
        )
        self.ffn_norm = TokenNorm(token_dim)
        self.q = nn.Linear(token_dim, token_dim)
        self.channel_mlp = nn.Linear(token_dim, token_dim)
        self.layer_norm = TokenNorm(token_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.q(tokens)
        if self.scale != 1.0:
            q = q * self.scale
        attn = _head_attention(q, tokens.transpose(1, 2), tokens, self.heads)
        tokens = self.layer_norm(tokens + self.channel_mlp(attn))
        return self.ffn_norm(tokens + self.ffn(tokens))

    def reparameterize(self) -> None:
        if self.scale != 1.0:
            _scale_linear_(self.q, self.scale)
            self.scale = 1.0


class FormerToMobile(nn.Module):
    """Former->Mobile cross-attention: each pixel queries the tokens (query = the features themselves).

    Reference ``Global2Local`` with ``block_type='attn'``, ``remove_proj_local=True``:
    x <- x + attn(x, k(tokens), proj(tokens)).
    """

    def __init__(self, channels: int, token_dim: int, heads: int = BRIDGE_HEADS) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.k = nn.Linear(token_dim, channels)
        self.proj = nn.Linear(token_dim, channels)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k = self.k(tokens)
        if self.scale != 1.0:
            k = k * self.scale
        g = _head_attention(_flatten_hw(x), k.transpose(1, 2), self.proj(tokens), self.heads)  # [B, HW, C]
        return x + g.reshape(b, h, w, c).permute(0, 3, 1, 2)

    def reparameterize(self) -> None:
        if self.scale != 1.0:
            _scale_linear_(self.k, self.scale)
            self.scale = 1.0


class Bridges(nn.Module):
    """Shared constructor for the two block kinds that carry Mobile->Former, Former and Former->Mobile."""

    def _build_bridges(self, cin: int, cout: int, token_dim: int) -> None:
        self.local_global = MobileToFormer(cin, token_dim)
        self.global_block = Former(token_dim)
        self.global_local = FormerToMobile(cout, token_dim)


class StemBlock(nn.Module):
    """The first block: depthwise 3x3 -> ReLU6 -> pointwise, no bridges (reference ``DnaBlock3`` with e2 = 0)."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, groups: int = 1) -> None:
        super().__init__()
        hidden = cin * expansion
        self.identity = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            *_conv_bn(cin, hidden, 3, stride, groups=cin),
            nn.ReLU6(inplace=True),
            _maybe_shuffle(cin, groups > 1),
            *_conv_bn(hidden, cout, 1, groups=groups),
        )

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.conv(x)
        return (out + x if self.identity else out), tokens

    def reparameterize(self) -> None:
        if not isinstance(self.conv[3], ChannelShuffle):  # a shuffle between would need its own permutation
            _repeat_expanding_depthwise(self.conv, [self.conv[4]])


class BottleneckBlock(Bridges):
    """Mobile-Former block with an inverted-bottleneck Mobile path (reference ``DnaBlock``).

    tokens: Mobile->Former, Former. Mobile: pw -> dyReLU -> dw (stride) -> dyReLU -> pw (+ skip).
    Then Former->Mobile on the output.
    """

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, token_dim: int, groups: int = 1) -> None:
        super().__init__()
        hidden = round(cin * expansion)
        self.identity = stride == 1 and cin == cout
        self.conv1 = nn.Sequential(*_conv_bn(cin, hidden, 1, groups=groups), _maybe_shuffle(groups, groups > 1))
        self.act1 = DynamicReLU()
        self.hyper1 = DyReLUCoefficients(token_dim, hidden)
        self.conv2 = nn.Sequential(*_conv_bn(hidden, hidden, 3, stride, groups=hidden))
        self.act2 = DynamicReLU()
        self.hyper2 = DyReLUCoefficients(token_dim, hidden)
        self.conv3 = nn.Sequential(*_conv_bn(hidden, cout, 1, groups=groups), _maybe_shuffle(groups, groups > 1))
        self._build_bridges(cin, cout, token_dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.global_block(self.local_global(x, tokens))
        token0 = tokens[:, :1]
        out = self.act1(self.conv1(x), self.hyper1(token0))
        out = self.act2(self.conv2(out), self.hyper2(token0))
        out = self.conv3(out)
        if self.identity:
            out = out + x
        return self.global_local(out, tokens), tokens


class DoubleDwBlock(Bridges):
    """Mobile-Former block whose Mobile path is dw (stride) -> dyReLU -> pw -> dw -> dyReLU -> pw + inner skip
    (reference ``DnaBlock3``). Former->Mobile runs before the outer skip, unlike ``BottleneckBlock``."""

    def __init__(
        self, cin: int, cout: int, stride: int, expansion: int, expansion2: int, token_dim: int, groups: int = 1
    ) -> None:
        super().__init__()
        hidden1, hidden2 = round(cin * expansion), round(cout * expansion2)
        self.identity = stride == 1 and cin == cout
        self.conv1 = nn.Sequential(*_conv_bn(cin, hidden1, 3, stride, groups=cin), _maybe_shuffle(cin, groups > 1))
        self.act1 = DynamicReLU()
        self.hyper1 = DyReLUCoefficients(token_dim, hidden1)
        self.conv2 = nn.Sequential(*_conv_bn(hidden1, cout, 1, groups=groups))
        self.conv3 = nn.Sequential(*_conv_bn(cout, hidden2, 3, 1, groups=cout), _maybe_shuffle(cout, groups > 1))
        self.act3 = DynamicReLU()
        self.hyper3 = DyReLUCoefficients(token_dim, hidden2)
        self.conv4 = nn.Sequential(*_conv_bn(hidden2, cout, 1, groups=groups))
        self._build_bridges(cin, cout, token_dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.global_block(self.local_global(x, tokens))
        token0 = tokens[:, :1]
        mid = self.conv2(self.act1(self.conv1(x), self.hyper1(token0)))
        out = self.conv4(self.act3(self.conv3(mid), self.hyper3(token0))) + mid
        out = self.global_local(out, tokens)
        return (out + x if self.identity else out), tokens

    def reparameterize(self) -> None:
        for dw, hyper, pw in ((self.conv1, self.hyper1, self.conv2), (self.conv3, self.hyper3, self.conv4)):
            if isinstance(dw[-1], ChannelShuffle):  # a shuffle between would need its own permutation
                continue
            order = _repeat_expanding_depthwise(dw, [pw[0]])
            if order is not None:
                hyper.permute_channels(order)


class MergeHead(nn.Module):
    """Classifier: pw expansion -> ReLU6 -> global pool -> h-swish, concatenated with token 0,
    then Linear -> BN -> h-swish -> Linear (reference ``MergeClassifier`` with ``last_act='relu'``)."""

    def __init__(
        self, cin: int, num_features: int, token_dim: int, num_classes: int, expansion: int = 6, groups: int = 1,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = cin * expansion
        self.conv = nn.Sequential(_maybe_shuffle(groups, groups > 1), *_conv_bn(cin, hidden, 1, groups=groups))
        self.act = nn.ReLU6(inplace=True)
        self.pool_act = nn.Hardswish()
        self.fc = nn.Sequential(
            nn.Linear(hidden + token_dim, num_features), nn.BatchNorm1d(num_features), nn.Hardswish()
        )
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(num_features, num_classes))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        # adaptive pooling (not mean over H, W): converters keep it channels-last, with no transpose before it
        pooled = self.pool_act(F.adaptive_avg_pool2d(self.act(self.conv(x)), 1).flatten(1))
        return self.classifier(self.fc(torch.cat([pooled, tokens[:, 0]], dim=1)))


@dataclass(frozen=True)
class BlockSpec:
    """One row of the paper's appendix table (the reference's ``[block, e1, c, n, s, e2]``)."""

    kind: str  # "dw2" = DnaBlock3 (dw-pw-dw-pw; e2 == 0: stem block), "pw" = DnaBlock (pw-dw-pw)
    expansion: int
    channels: int
    stride: int
    expansion2: int


@dataclass(frozen=True)
class MobileFormerConfig:
    stem: int
    blocks: tuple[BlockSpec, ...]
    tokens: int
    token_dim: int
    num_features: int
    groups: int = 1


class MobileFormer(nn.Module):
    """Mobile-Former: stem, Mobile-Former blocks, a last Mobile->Former bridge, merge classifier."""

    def __init__(self, cfg: MobileFormerConfig, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        d = cfg.token_dim
        self.tokens = nn.Embedding(cfg.tokens, d)  # the learned global tokens (state-dict key tokens.weight)
        self.stem = nn.Sequential(*_conv_bn(in_chans, cfg.stem, 3, 2), nn.ReLU6(inplace=True))
        blocks: list[nn.Module] = []
        cin = cfg.stem
        for s in cfg.blocks:
            if s.kind == "dw2" and s.expansion2 == 0:
                blocks.append(StemBlock(cin, s.channels, s.stride, s.expansion, cfg.groups))
            elif s.kind == "dw2":
                blocks.append(DoubleDwBlock(cin, s.channels, s.stride, s.expansion, s.expansion2, d, cfg.groups))
            else:
                blocks.append(BottleneckBlock(cin, s.channels, s.stride, s.expansion, d, cfg.groups))
            cin = s.channels
        self.features = nn.ModuleList(blocks)
        self.local_global = MobileToFormer(cin, d)
        self.classifier = MergeHead(cin, cfg.num_features, d, num_classes, groups=cfg.groups, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference's init: He-normal convs (fan-out), N(0, 0.01) linears with zero bias, tokens N(0, 1).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, (2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)) ** 0.5)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # repeat (not expand): a view of a parameter made under no_grad confuses autograd-based module trackers
        tokens = self.tokens.weight.unsqueeze(0).repeat(x.shape[0], 1, 1)
        x = self.stem(x)
        for block in self.features:
            x, tokens = block(x, tokens)
        return x, self.local_global(x, tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(*self.forward_features(x))


# --- counting conventions -------------------------------------------------------------------------------------

DYRELU_OPS_PER_ELEMENT = 3  # two multiplies and a max


@torch.no_grad()
def count_paper_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """The paper's MAdds: conv + linear + attention-matmul MACs (torch.utils.flop_counter FLOPs / 2), plus 3 ops
    per dynamic-ReLU output element. This rule reproduces the paper within 0.5% on all seven variants."""
    from torch.utils.flop_counter import FlopCounterMode

    elements = [0]

    def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        elements[0] += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, DynamicReLU)]
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return counter.get_total_flops() // 2 + DYRELU_OPS_PER_ELEMENT * elements[0]


def count_paper_params(model: nn.Module) -> int:
    """Every parameter of the training-form network (tokens and BatchNorm affine included), as the public
    implementation counts them (its totals equal the paper's table)."""
    return sum(p.numel() for p in model.parameters())


# --- variant table ----------------------------------------------------------------------------------------------


def _blocks(rows: Sequence[tuple[str, int, int, int, int]]) -> tuple[BlockSpec, ...]:
    return tuple(BlockSpec(kind, e1, c, s, e2) for kind, e1, c, s, e2 in rows)


# The paper's appendix tables, as the reference encodes them: rows (kind, e1, channels, stride, e2), each block
# once. "dw2" = dw-pw-dw-pw (reference DnaBlock3; e2 = 0 makes it the bridge-less stem block), "pw" = pw-dw-pw
# (reference DnaBlock; its e2 is unused).
_SMALL = _blocks([  # 26M and 52M (26M adds 4-group pointwise convs)
    ("dw2", 3, 12, 2, 0), ("pw", 3, 12, 1, 3), ("dw2", 6, 24, 2, 4), ("pw", 3, 24, 1, 3), ("dw2", 6, 48, 2, 4),
    ("pw", 4, 48, 1, 4), ("pw", 6, 64, 1, 4), ("dw2", 6, 96, 2, 4), ("pw", 6, 96, 1, 4),
])
CONFIGS: dict[str, MobileFormerConfig] = {
    "26m": MobileFormerConfig(8, _SMALL, tokens=3, token_dim=128, num_features=1024, groups=4),
    "52m": MobileFormerConfig(8, _SMALL, tokens=3, token_dim=128, num_features=1024),
    "96m": MobileFormerConfig(12, _blocks([
        ("dw2", 2, 12, 1, 0), ("dw2", 6, 16, 2, 4), ("dw2", 6, 32, 2, 4), ("pw", 3, 32, 1, 3), ("dw2", 6, 64, 2, 4),
        ("pw", 4, 64, 1, 4), ("pw", 6, 88, 1, 4), ("dw2", 6, 128, 2, 4), ("pw", 6, 128, 1, 4),
    ]), tokens=4, token_dim=128, num_features=1280),
    "151m": MobileFormerConfig(12, _blocks([
        ("dw2", 2, 12, 1, 0), ("dw2", 6, 16, 2, 4), ("pw", 3, 16, 1, 3), ("dw2", 6, 32, 2, 4), ("pw", 3, 32, 1, 3),
        ("dw2", 6, 64, 2, 4), ("pw", 4, 64, 1, 4), ("pw", 6, 88, 1, 4), ("pw", 6, 88, 1, 4), ("dw2", 6, 128, 2, 4),
        ("pw", 6, 128, 1, 4), ("pw", 6, 128, 1, 4),
    ]), tokens=6, token_dim=192, num_features=1280),
    "214m": MobileFormerConfig(12, _blocks([
        ("dw2", 2, 12, 1, 0), ("dw2", 6, 20, 2, 4), ("pw", 3, 20, 1, 4), ("dw2", 6, 40, 2, 4), ("pw", 4, 40, 1, 4),
        ("dw2", 6, 80, 2, 4), ("pw", 4, 80, 1, 4), ("pw", 6, 112, 1, 4), ("pw", 6, 112, 1, 4), ("dw2", 6, 160, 2, 4),
        ("pw", 6, 160, 1, 4), ("pw", 6, 160, 1, 4),
    ]), tokens=6, token_dim=192, num_features=1600),
    "294m": MobileFormerConfig(16, _blocks([
        ("dw2", 2, 16, 1, 0), ("dw2", 6, 24, 2, 4), ("pw", 4, 24, 1, 4), ("dw2", 6, 48, 2, 4), ("pw", 4, 48, 1, 4),
        ("dw2", 6, 96, 2, 4), ("pw", 4, 96, 1, 4), ("pw", 6, 128, 1, 4), ("pw", 6, 128, 1, 4), ("dw2", 6, 192, 2, 4),
        ("pw", 6, 192, 1, 4), ("pw", 6, 192, 1, 4),
    ]), tokens=6, token_dim=192, num_features=1920),
    "508m": MobileFormerConfig(24, _blocks([
        ("dw2", 2, 24, 1, 0), ("dw2", 6, 40, 2, 4), ("pw", 3, 40, 1, 3), ("dw2", 6, 72, 2, 4), ("pw", 3, 72, 1, 3),
        ("dw2", 6, 128, 2, 4), ("pw", 4, 128, 1, 4), ("pw", 6, 176, 1, 4), ("pw", 6, 176, 1, 4), ("dw2", 6, 240, 2, 4),
        ("pw", 6, 240, 1, 4), ("pw", 6, 240, 1, 4),
    ]), tokens=6, token_dim=192, num_features=1920),
}

# (params M, MAdds M, top-1) from the paper's Table / the reference's README
PAPER: dict[str, tuple[float, float, float]] = {
    "26m": (3.2, 26, 64.0), "52m": (3.5, 52, 68.7), "96m": (4.6, 96, 72.8), "151m": (7.6, 151, 75.2),
    "214m": (9.4, 214, 76.7), "294m": (11.4, 294, 77.9), "508m": (14.0, 508, 79.3),
}


def mobileformer(variant: str = "294m", num_classes: int = 1000, drop_rate: float = 0.0) -> MobileFormer:
    return MobileFormer(CONFIGS[variant], num_classes=num_classes, drop_rate=drop_rate)


for _v, (_params, _madds, _top1) in PAPER.items():
    register(ModelInfo(
        name=f"mobileformer-{_v}",
        family="mobileformer",
        builder=mobileformer,
        builder_kwargs={"variant": _v},
        paper=PaperNumbers(arxiv=ARXIV, params_m=_params, macs_m=_madds, top1=_top1, source="Table 9 / appendix"),
        input_size=(3, 224, 224),
        preprocess=Preprocess(crop_pct=0.875, interpolation="bilinear"),
        aliases=("mobileformer",) if _v == "294m" else (),
        params_convention="all parameters of the training-form network, global tokens and BatchNorm included "
        "(as AAboys/MobileFormer counts them; its totals match the paper)",
        count_paper_params=count_paper_params,
        macs_convention="paper MAdds: conv + linear + attention-matmul MACs (flop_counter FLOPs / 2) plus 3 ops per "
        "dynamic-ReLU output element (two multiplies and a max); bridges included",
        count_paper_macs=count_paper_macs,
        classifier="classifier.classifier.1",
        default_checkpoint_layouts=("AAboys/MobileFormer",),
        tags=("hybrid", "attention", "dynamic-relu"),
    ))
