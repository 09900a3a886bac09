"""EfficientFormerV2: vision transformers at MobileNet size and speed.

Paper: `Rethinking Vision Transformers for MobileNet Size and Speed` - https://arxiv.org/abs/2212.08059
Original code: snap-research/EfficientFormer ``models/efficientformer_v2.py`` (Apache-2.0); timm ports it as
``efficientformerv2_s0/s1/s2/l``. The module tree here gives timm's state-dict keys, so timm checkpoints load with
an identity mapping; ``checkpoint_filter`` maps the official release's keys (``patch_embed.*``, ``network.N.M.*``,
``dist_head``, ``(dim, 1, 1)`` layer scales, saved ``attention_bias_idxs``) onto them.

All four stages are NCHW. Every block has a Conv-BN MLP with a depthwise 3x3 in the middle; the last blocks of
stages 3 and 4 add 4D multi-head attention (1x1 conv q/k/v, a depthwise "local value" branch, talking-head
mixing before and after the softmax, a relative-position bias). Stage 3's attention runs at half resolution
(strided depthwise conv, bilinear upsampling back), and the downsampler into stage 4 adds an attention branch
whose queries come from a strided local+pooled map.

Two forms of one network:
* training form: the paper's network. Heads are split from NHWC-permuted conv outputs, which converters cancel
  against their own NCHW->NHWC transposes, talking heads are batched matmuls over the head axis (a 1x1 conv there
  makes converters move the softmax axis and decompose the softmax), and softmax is on the last dim.
* deploy form (``edge.models.reparameterize_model``): BatchNorm folded everywhere (the final BN into the merged
  head), layer scales folded into the preceding conv, the attention scale folded into the query conv, the
  attention bias gathered once and pushed through the first talking head into one dense buffer, the pooled-query
  branch folded into the query depthwise conv, and the class and distillation heads merged. Attention comes in
  two arrangements of the same math, picked by the runtime's layout:
  - ``layout="nchw"`` (ONNX Runtime, Core ML): heads split from the NCHW conv outputs by reshape, keys already
    laid out for ``q @ k``, talking heads as 1x1 convs over the head channels: three transposes per attention,
    as in the paper's code.
  - ``layout="nhwc"`` (LiteRT): queries and keys are per-head batched matmuls from the NHWC map (no transpose;
    the key transpose of ``q @ k^T`` is folded into TFLite's BATCH_MATMUL by ``edge.export.tflite_graph``),
    values and the local branch enter the heads with one transpose, and the output projection is a per-head
    matmul summed over heads. One transpose per attention remains. In an NCHW runtime this arrangement costs
    more transposes than it saves (ONNX: 31 against 16), hence the two.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edge.errors import EdgeError
from edge.models._layers import fold_bn_into
from edge.models._registry import LatencyClaim, ModelInfo, PaperNumbers, Preprocess, register
from edge.models.efficientformer import LayerScale2d, paper_params, rel_pos_index, scale_out_channels

# ----------------------------------------------------------------------------------------------- blocks


class ConvNorm(nn.Module):
    """Conv (with bias) followed by BatchNorm; ``reparameterize`` folds the BN."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups)
        self.bn: nn.Module = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def reparameterize(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            fold_bn_into(self.conv, self.bn)
            self.bn = nn.Identity()


class ConvNormAct(ConvNorm):
    """Conv-BN-GELU (timm's ConvNormAct keeps the same ``conv``/``bn`` keys)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__(in_chs, out_chs, kernel_size, stride, groups)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def _mix_heads(weight: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Talking heads: a 1x1 conv over the head axis of (B, h, N, M), as a batched matmul so that converters keep
    the layout (and the softmax axis) where it is."""
    B, h, N, M = attn.shape
    return (weight.reshape(1, h, h) @ attn.reshape(B, h, N * M)).reshape(B, h, N, M)


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, h*c, H, W) map -> (B, h, N, c) per-head tokens, through NHWC (the permute converters cancel)."""
    B, C, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, H * W, num_heads, C // num_heads).permute(0, 2, 1, 3)


def _heads_t(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, h*c, H, W) map -> (B, h, c, N): keys laid out for ``q @ k``."""
    B, C, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, H * W, num_heads, C // num_heads).permute(0, 2, 3, 1)


def _merge_heads(x: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """(B, h, N, c) per-head output + (B, h*c, H, W) local branch -> (B, h*c, H, W), summed in NHWC."""
    B, h, N, c = x.shape
    _, _, H, W = local.shape
    return (x.permute(0, 2, 1, 3).reshape(B, H, W, h * c) + local.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _head_weights(proj: nn.Conv2d, num_heads: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A (BN-folded) 1x1 conv as per-head matmul weights (h, C, d) and biases (h, 1, d), ``scale`` folded in."""
    out_chs, in_chs = proj.weight.shape[:2]
    w = proj.weight.detach().reshape(num_heads, out_chs // num_heads, in_chs).transpose(1, 2) * scale
    b = proj.bias.detach().reshape(num_heads, 1, out_chs // num_heads) * scale
    return w.contiguous(), b.contiguous()


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, N, C): NHWC tokens, broadcast over heads."""
    B, C, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, 1, H * W, C)


def _scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``q @ k^T`` over the last two dims. Converters write the key transpose as a TRANSPOSE feeding BATCH_MATMUL;
    edge's TFLite target folds it into the matmul's ``adj_y`` (``edge.export.tflite_graph``)."""
    return q @ k.transpose(-1, -2)


def _resize_heads(x: torch.Tensor, size: tuple[int, int], up: nn.Module) -> torch.Tensor:
    """Bilinear upsampling of per-head tokens (B, h, n, c) on the (h, w) grid, heads as the batch of an NHWC
    image: the resize runs in the layout the heads are in, so no transpose back to a channels map is needed."""
    B, h, n, c = x.shape
    H, W = size
    img = x.reshape(B * h, H, W, c).permute(0, 3, 1, 2)
    img = up(img).permute(0, 2, 3, 1)
    return img.reshape(B, h, -1, c)


def _project_heads(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """1x1 output projection of per-head tokens (B, h, N, c): per-head matmul with (h, c, C), summed over heads
    (the same sum a conv over the merged channels makes), then the NHWC map viewed as NCHW."""
    B = x.shape[0]
    y = (x @ weight).sum(dim=1) + bias  # (B, N, C)
    return y.reshape(B, size[0], size[1], -1).permute(0, 3, 1, 2)


def _proj_weights(proj: nn.Conv2d, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (BN-folded) 1x1 conv over merged heads as (h, c, C) per-head weights and a (C,) bias."""
    out_chs, in_chs = proj.weight.shape[:2]
    w = proj.weight.detach().reshape(out_chs, num_heads, in_chs // num_heads).permute(1, 2, 0)
    return w.contiguous(), proj.bias.detach().clone()


class Attention2d(nn.Module):
    """4D multi-head attention with talking heads and a local value branch (optionally at half resolution)."""

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: int = 4, resolution: int = 7,
                 stride: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        if stride is not None:
            resolution = math.ceil(resolution / stride)
            self.stride_conv: nn.Module | None = ConvNorm(dim, dim, 3, stride=stride, groups=dim)
            self.upsample: nn.Module | None = nn.Upsample(scale_factor=stride, mode="bilinear")
        else:
            self.stride_conv = None
            self.upsample = None
        self.resolution = resolution
        self.dh = int(attn_ratio * key_dim) * num_heads
        kh = key_dim * num_heads
        self.q = ConvNorm(dim, kh)
        self.k = ConvNorm(dim, kh)
        self.v = ConvNorm(dim, self.dh)
        self.v_local = ConvNorm(self.dh, self.dh, 3, groups=self.dh)
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.act = nn.GELU()
        self.proj = ConvNorm(self.dh, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", rel_pos_index(resolution), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        q = _heads(self.q(x), self.num_heads)
        k = _heads_t(self.k(x), self.num_heads)
        v = self.v(x)
        v_local = self.v_local(v)
        attn = (q @ k) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        attn = _mix_heads(self.talking_head1.weight, attn) + self.talking_head1.bias.reshape(1, -1, 1, 1)
        attn = F.softmax(attn, dim=-1)
        attn = _mix_heads(self.talking_head2.weight, attn) + self.talking_head2.bias.reshape(1, -1, 1, 1)
        x = _merge_heads(attn @ _heads(v, self.num_heads), v_local)
        if self.upsample is not None:
            x = self.upsample(x)
        return self.proj(self.act(x))

    @torch.no_grad()
    def fused(self, layout: str) -> nn.Module:
        return Attention2dNHWC(self) if layout == "nhwc" else Attention2dNCHW(self)


def _scaled(conv: nn.Conv2d, scale: float) -> nn.Conv2d:
    """The (BN-folded) conv with its output multiplied by ``scale``: the attention scale folded into the queries."""
    conv.weight.mul_(scale)
    conv.bias.mul_(scale)
    return conv


def _nchw_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, h*c, H, W) -> (B, h, c, N): a reshape of the NCHW map, keys' layout for ``q @ k``."""
    B, C, H, W = x.shape
    return x.reshape(B, num_heads, C // num_heads, H * W)


def _dense_bias(attn: nn.Module, talking_head: nn.Conv2d | None = None) -> torch.Tensor:
    """The gathered (h, N, M) attention bias, pushed through ``talking_head`` (a 1x1 conv over heads) if given."""
    bias = attn.attention_biases.detach()[:, attn.attention_bias_idxs]
    if talking_head is None:
        return bias.contiguous()
    h = bias.shape[0]
    return (torch.einsum("gh,hnm->gnm", talking_head.weight.detach().reshape(h, h), bias)
            + talking_head.bias.detach().reshape(h, 1, 1)).contiguous()


class Attention2dNCHW(nn.Module):
    """Inference form of :class:`Attention2d` for NCHW runtimes (its convs already BN-folded; the block's layer
    scale in ``proj``): the paper's arrangement, with the scale folded into ``q`` and the bias (through the first
    talking head) one dense ``(h, N, N)`` buffer added after the bias-free head mixer ``mix1``."""

    def __init__(self, attn: Attention2d) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.stride_conv, self.upsample = attn.stride_conv, attn.upsample
        self.q, self.k, self.v = _scaled(attn.q.conv, attn.scale), attn.k.conv, attn.v.conv
        self.v_local, self.act, self.proj = attn.v_local, attn.act, attn.proj
        self.register_buffer("attention_bias", _dense_bias(attn, attn.talking_head1))
        self.mix1, self.mix2 = attn.talking_head1, attn.talking_head2
        self.mix1.bias = None  # now inside attention_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        B, _, H, W = x.shape
        h = self.num_heads
        v = self.v(x)
        q = _nchw_heads(self.q(x), h).transpose(-1, -2)
        attn = F.softmax(self.mix1(q @ _nchw_heads(self.k(x), h)) + self.attention_bias, dim=-1)
        out = self.mix2(attn) @ _nchw_heads(v, h).transpose(-1, -2)
        out = out.transpose(-1, -2).reshape(B, -1, H, W) + self.v_local(v)
        if self.upsample is not None:
            out = self.upsample(out)
        return self.proj(self.act(out))


class Attention2dNHWC(nn.Module):
    """Inference form of :class:`Attention2d` (its convs already BN-folded; the block's layer scale in ``proj``),
    written so that an NHWC runtime needs one transpose per attention.

    Queries and keys are per-head batched matmuls from the NHWC tokens (scale folded into the queries); values
    and the local-value branch are concatenated and split into heads with one transpose; the sum with the local
    branch, the upsampling (heads as the batch of an NHWC image) and the activation stay per head, and the
    output projection is a per-head matmul summed over heads. The attention bias, pushed through the first
    talking head, is one dense ``(h, N, N)`` buffer.
    """

    def __init__(self, attn: Attention2d) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.stride_conv = attn.stride_conv
        self.upsample = attn.upsample
        wq, bq = _head_weights(attn.q.conv, attn.num_heads, attn.scale)
        self.wq, self.bq = nn.Parameter(wq), nn.Parameter(bq)
        wk, bk = _head_weights(attn.k.conv, attn.num_heads)
        self.wk, self.bk = nn.Parameter(wk), nn.Parameter(bk)
        wp, bp = _proj_weights(attn.proj.conv, attn.num_heads)
        self.wp, self.bp = nn.Parameter(wp), nn.Parameter(bp)
        self.v, self.v_local, self.act = attn.v, attn.v_local, attn.act
        h = attn.num_heads
        w1 = attn.talking_head1.weight.detach().reshape(h, h)
        self.register_buffer("attention_bias", _dense_bias(attn, attn.talking_head1))
        self.th1 = nn.Parameter(w1.clone())
        self.th2 = nn.Parameter(attn.talking_head2.weight.detach().reshape(h, h).clone())
        self.th2_bias = nn.Parameter(attn.talking_head2.bias.detach().reshape(1, h, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        tokens = _tokens(x)
        q = tokens @ self.wq + self.bq
        k = tokens @ self.wk + self.bk
        v = self.v(x)
        values, local = _heads(torch.cat([v, self.v_local(v)], dim=1), 2 * self.num_heads).chunk(2, dim=1)
        attn = F.softmax(_mix_heads(self.th1, _scores(q, k)) + self.attention_bias, dim=-1)
        attn = _mix_heads(self.th2, attn) + self.th2_bias
        out = attn @ values + local
        if self.upsample is not None:
            out = _resize_heads(out, x.shape[-2:], self.upsample)
        return _project_heads(self.act(out), self.wp, self.bp, size)


class LocalGlobalQuery(nn.Module):
    """Strided queries: depthwise 3x3 stride-2 conv plus 1x1 stride-2 pooling (subsampling), then 1x1 Conv-BN."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(1, 2, 0)
        self.local = nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim)
        self.proj = ConvNorm(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.local(x) + self.pool(x))


class Attention2dDownsample(nn.Module):
    """Attention whose queries sit on a stride-2 grid: the attention branch of the downsampler into stage 4."""

    def __init__(self, dim: int, out_dim: int, key_dim: int = 16, num_heads: int = 8, attn_ratio: int = 4,
                 resolution: int = 7) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        self.resolution = resolution
        self.dh = int(attn_ratio * key_dim) * num_heads
        kh = key_dim * num_heads
        self.q = LocalGlobalQuery(dim, kh)
        self.k = ConvNorm(dim, kh)
        self.v = ConvNorm(dim, self.dh)
        self.v_local = ConvNorm(self.dh, self.dh, 3, stride=2, groups=self.dh)
        self.act = nn.GELU()
        self.proj = ConvNorm(self.dh, out_dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", rel_pos_index(resolution, q_stride=2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = _heads(self.q(x), self.num_heads)
        k = _heads_t(self.k(x), self.num_heads)
        v = self.v(x)
        v_local = self.v_local(v)
        attn = (q @ k) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        attn = F.softmax(attn, dim=-1)
        x = _merge_heads(attn @ _heads(v, self.num_heads), v_local)
        return self.proj(self.act(x))

    @torch.no_grad()
    def fused(self, layout: str) -> nn.Module:
        return Attention2dDownsampleNHWC(self) if layout == "nhwc" else Attention2dDownsampleNCHW(self)


def _fold_pool_into_local(local: nn.Conv2d) -> nn.Conv2d:
    """The 1x1 stride-2 pool of :class:`LocalGlobalQuery` reads exactly the centre tap of its strided depthwise
    conv: +1 there."""
    k = local.kernel_size[0] // 2
    local.weight[:, 0, k, k] += 1.0
    return local


class Attention2dDownsampleNCHW(nn.Module):
    """Inference form of :class:`Attention2dDownsample` for NCHW runtimes: the paper's arrangement, with the
    pooled-query branch folded into the query depthwise conv, the scale into the query projection, and the bias
    one dense buffer."""

    def __init__(self, attn: Attention2dDownsample) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.q_local = _fold_pool_into_local(attn.q.local)
        self.q, self.k, self.v = _scaled(attn.q.proj.conv, attn.scale), attn.k.conv, attn.v.conv
        self.v_local, self.act, self.proj = attn.v_local, attn.act, attn.proj
        self.register_buffer("attention_bias", _dense_bias(attn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.num_heads
        v = self.v(x)
        local = self.v_local(v)
        q = _nchw_heads(self.q(self.q_local(x)), h).transpose(-1, -2)
        attn = F.softmax(q @ _nchw_heads(self.k(x), h) + self.attention_bias, dim=-1)
        out = (attn @ _nchw_heads(v, h).transpose(-1, -2)).transpose(-1, -2)
        return self.proj(self.act(out.reshape(local.shape) + local))


class Attention2dDownsampleNHWC(nn.Module):
    """Inference form of :class:`Attention2dDownsample`, with one transpose (merging the heads) in an NHWC runtime.

    The subsampling branch becomes +1 on the centre tap of the query depthwise conv (a 1x1 stride-2 pool reads
    exactly that pixel); queries, keys and values are per-head batched matmuls from NHWC tokens (scale folded into
    the queries). The value projection is also kept as a conv for the strided local branch: computing it twice
    (one 1x1 conv's MACs) keeps this attention at one transpose instead of two. The bias is one dense buffer.
    """

    def __init__(self, attn: Attention2dDownsample) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.q_local = _fold_pool_into_local(attn.q.local)
        wq, bq = _head_weights(attn.q.proj.conv, attn.num_heads, attn.scale)
        self.wq, self.bq = nn.Parameter(wq), nn.Parameter(bq)
        wk, bk = _head_weights(attn.k.conv, attn.num_heads)
        self.wk, self.bk = nn.Parameter(wk), nn.Parameter(bk)
        wv, bv = _head_weights(attn.v.conv, attn.num_heads)
        self.wv, self.bv = nn.Parameter(wv), nn.Parameter(bv)
        self.v, self.v_local, self.act, self.proj = attn.v, attn.v_local, attn.act, attn.proj
        self.register_buffer("attention_bias", _dense_bias(attn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = _tokens(self.q_local(x)) @ self.wq + self.bq
        tokens = _tokens(x)
        attn = F.softmax(_scores(q, tokens @ self.wk + self.bk) + self.attention_bias, dim=-1)
        x = _merge_heads(attn @ (tokens @ self.wv + self.bv), self.v_local(self.v(x)))
        return self.proj(self.act(x))


class Downsample(nn.Module):
    """3x3 stride-2 Conv-BN, plus (into stage 4) a strided-query attention branch."""

    def __init__(self, in_chs: int, out_chs: int, use_attn: bool = False, resolution: int = 7) -> None:
        super().__init__()
        self.conv = ConvNorm(in_chs, out_chs, 3, stride=2)
        self.attn: nn.Module | None = (
            Attention2dDownsample(in_chs, out_chs, resolution=resolution) if use_attn else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.attn is not None:
            out = out + self.attn(x)
        return out

    @torch.no_grad()
    def reparameterize(self, layout: str = "nchw") -> None:
        if isinstance(self.attn, Attention2dDownsample):
            self.attn = self.attn.fused(layout)


class ConvMlpWithNorm(nn.Module):
    """1x1 Conv-BN-GELU, depthwise 3x3 Conv-BN-GELU, 1x1 Conv-BN."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = ConvNormAct(dim, hidden)
        self.mid = ConvNormAct(hidden, hidden, 3, groups=hidden)
        self.fc2 = ConvNorm(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.mid(self.fc1(x)))


class EfficientFormerV2Block(nn.Module):
    """x + ls1 * Attention2d(x) (attention blocks only), then x + ls2 * Mlp(x)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, use_attn: bool = False, resolution: int = 7,
                 stride: int | None = None, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        if use_attn:
            self.token_mixer: nn.Module | None = Attention2d(dim, resolution=resolution, stride=stride)
            self.ls1: nn.Module | None = LayerScale2d(dim, layer_scale_init)
        else:
            self.token_mixer = None
            self.ls1 = None
        self.mlp = ConvMlpWithNorm(dim, int(dim * mlp_ratio))
        self.ls2: nn.Module = LayerScale2d(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_mixer is not None:
            x = x + self.ls1(self.token_mixer(x))
        return x + self.ls2(self.mlp(x))

    @torch.no_grad()
    def reparameterize(self, layout: str = "nchw") -> None:
        # Children go first, so every ConvNorm here is already a plain (BN-folded) conv.
        if isinstance(self.token_mixer, Attention2d):
            scale_out_channels(self.token_mixer.proj.conv, self.ls1.gamma)
            self.token_mixer = self.token_mixer.fused(layout)
            self.ls1 = nn.Identity()
        if isinstance(self.ls2, LayerScale2d):
            scale_out_channels(self.mlp.fc2.conv, self.ls2.gamma)
            self.ls2 = nn.Identity()


class Stem4(nn.Sequential):
    """Two 3x3 stride-2 Conv-BN-GELU."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.add_module("conv1", ConvNormAct(in_chs, out_chs // 2, 3, stride=2))
        self.add_module("conv2", ConvNormAct(out_chs // 2, out_chs, 3, stride=2))


class EfficientFormerV2Stage(nn.Module):
    """Optional downsample (with an attention branch into stage 4), then blocks; the last ``num_vit`` blocks of
    stages 3 and 4 have attention (stage 3's at half resolution)."""

    def __init__(self, dim: int, dim_out: int, depth: int, resolution: int, downsample: bool,
                 downsample_attn: bool, block_attn: bool, block_stride: int | None, num_vit: int,
                 mlp_ratios: Sequence[float], layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        if downsample:
            self.downsample: nn.Module = Downsample(dim, dim_out, use_attn=downsample_attn, resolution=resolution)
            resolution = math.ceil(resolution / 2)
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[
            EfficientFormerV2Block(dim_out, mlp_ratios[i], use_attn=block_attn and i >= depth - num_vit,
                                   resolution=resolution, stride=block_stride, layer_scale_init=layer_scale_init)
            for i in range(depth)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class EfficientFormerV2(nn.Module):
    """EfficientFormerV2: stem (stride 4), four stages (strides 4-32), BatchNorm, class + distillation heads."""

    def __init__(self, depths: Sequence[int], embed_dims: Sequence[int], mlp_ratios: Sequence[Sequence[float]],
                 num_vit: int, num_classes: int = 1000, img_size: int = 224, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        if img_size % 32 or img_size < 64:
            # Stage 3's half-resolution attention upsamples by 2, so the stride-16 map must have an even size.
            raise EdgeError(f"img_size {img_size} is not supported", "use a multiple of 32, at least 64 (default 224)")
        self.img_size = img_size
        self.num_classes = num_classes
        self.stem = Stem4(3, embed_dims[0])
        stages = []
        prev, stride = embed_dims[0], 4
        for i, (depth, dim) in enumerate(zip(depths, embed_dims)):
            stages.append(EfficientFormerV2Stage(
                prev, dim, depth, resolution=math.ceil(img_size / stride), downsample=i > 0,
                downsample_attn=i >= 3, block_attn=i >= 2, block_stride=2 if i == 2 else None, num_vit=num_vit,
                mlp_ratios=mlp_ratios[i], layer_scale_init=layer_scale_init))
            if i > 0:
                stride *= 2
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.num_features = embed_dims[-1]
        self.norm: nn.Module = nn.BatchNorm2d(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)
        self.head_dist: nn.Linear | None = nn.Linear(self.num_features, num_classes)
        self.pool_layout = "nhwc"  # the deploy form sets its runtime's layout
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_layout == "nhwc":  # spatial mean through NHWC: an NHWC converter adds no transpose
            x = x.permute(0, 2, 3, 1).mean(dim=(1, 2))
        else:
            x = x.mean(dim=(2, 3))
        if self.head_dist is None:  # deploy form: merged head
            return self.head(x)
        return (self.head(x) + self.head_dist(x)) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def reparameterize(self, layout: str = "nchw") -> None:
        """Merge the averaged heads and fold the final BatchNorm into them (the spatial mean commutes with it);
        take the spatial mean in the runtime's layout."""
        self.pool_layout = layout
        if self.head_dist is None:
            return
        head = nn.Linear(self.num_features, self.num_classes)
        w = (self.head.weight + self.head_dist.weight) / 2
        b = (self.head.bias + self.head_dist.bias) / 2
        if isinstance(self.norm, nn.BatchNorm2d):
            bn = self.norm
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            b = b + w @ shift
            w = w * scale.reshape(1, -1)
            self.norm = nn.Identity()
        head.weight.copy_(w)
        head.bias.copy_(b)
        self.head, self.head_dist = head, None


# ----------------------------------------------------------------------------------------------- checkpoints

# Official key pieces -> timm's, applied in order to the part of a key below its block / downsampler.
_RENAMES = (
    (r"^layer_scale_([12])$", r"ls\1.gamma"),
    (r"^mlp\.fc1\.", "mlp.fc1.conv."), (r"^mlp\.norm1\.", "mlp.fc1.bn."),
    (r"^mlp\.mid\.", "mlp.mid.conv."), (r"^mlp\.mid_norm\.", "mlp.mid.bn."),
    (r"^mlp\.fc2\.", "mlp.fc2.conv."), (r"^mlp\.norm2\.", "mlp.fc2.bn."),
    (r"^(token_mixer|attn)\.proj\.1\.", r"\1.proj.conv."),  # Sequential(act, conv, bn)
    (r"^(token_mixer|attn)\.proj\.2\.", r"\1.proj.bn."),
    (r"^attn\.q\.local\.0\.", "attn.q.local."),  # Sequential(conv)
    (r"^(token_mixer|attn)\.(q\.proj|q|k|v|v_local|stride_conv)\.0\.", r"\1.\2.conv."),  # Sequential(conv, bn)
    (r"^(token_mixer|attn)\.(q\.proj|q|k|v|v_local|stride_conv)\.1\.", r"\1.\2.bn."),
    (r"^(proj|conv)\.", "conv.conv."), (r"^(norm|bn)\.", "conv.bn."),  # downsampler conv (plain / with attn)
)
_STEM = {"0": "conv1.conv", "1": "conv1.bn", "3": "conv2.conv", "4": "conv2.bn"}


def _official_to_timm_key(key: str) -> str:
    """snap-research key -> timm/edge key. ``network`` alternates stages (even) and downsamplers (odd)."""
    parts = key.split(".")
    if parts[0] == "patch_embed" and parts[1] in _STEM:
        return ".".join(["stem", _STEM[parts[1]], *parts[2:]])
    if parts[0] == "dist_head":
        return ".".join(["head_dist", *parts[1:]])
    if parts[0] != "network" or len(parts) < 3:
        return key
    n = int(parts[1])
    if n % 2 == 0:
        prefix, rest = f"stages.{n // 2}.blocks.{parts[2]}.", ".".join(parts[3:])
    else:
        prefix, rest = f"stages.{(n + 1) // 2}.downsample.", ".".join(parts[2:])
    for pattern, repl in _RENAMES:
        rest, hit = re.subn(pattern, repl, rest)
        if hit:
            break
    return prefix + rest


def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the official release's keys onto timm's (this network's); timm/edge checkpoints pass through.

    The official code saves each attention's ``attention_bias_idxs``; here they are derived from the resolution
    (timm does the same), so they are checked against this network's and dropped.
    """
    if not any(k.startswith(("patch_embed.", "network.")) for k in state_dict):
        return state_dict
    own = model.state_dict()
    buffers = dict(model.named_buffers())
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = _official_to_timm_key(key)
        if new.endswith("attention_bias_idxs"):
            mine = buffers.get(new)
            if mine is not None and mine.shape == value.shape and not torch.equal(mine, value.to(mine.dtype)):
                raise EdgeError(f"checkpoint's {key} does not match this network's relative-position index",
                                "the checkpoint was made for another input resolution; build with img_size=...")
            continue
        if new.endswith(("ls1.gamma", "ls2.gamma")) and value.dim() == 3 and new in own:
            value = value.reshape(-1)  # official layer scales are (dim, 1, 1)
        out[new] = value
    return out


# ----------------------------------------------------------------------------------------------- variants


def efficientformerv2(depths: Sequence[int], embed_dims: Sequence[int], mlp_ratios: Sequence[Sequence[float]],
                      num_vit: int, num_classes: int = 1000, img_size: int = 224) -> EfficientFormerV2:
    return EfficientFormerV2(depths, embed_dims, mlp_ratios, num_vit, num_classes=num_classes, img_size=img_size)


_PREPROCESS = Preprocess(crop_pct=0.95, interpolation="bicubic")  # timm's efficientformerv2 default_cfg
_OPTIONS = ("num_classes", "img_size")
_PARAMS_CONVENTION = (
    "BatchNorm folded, distillation head included (as for EfficientFormer): all training-form parameters minus "
    "BatchNorm affine parameters (every BN follows a biased conv, so folding adds none); layer scales and "
    "attention-bias tables count. The official toolbox.py profiler, which also skips layer scales and bias tables "
    "and counts a conv's bias as its input-channel count, gives 3.535 / 6.092 / 12.551 / 26.069M: within 1% of "
    "this count and of the paper either way.")
_MACS_CONVENTION = (
    "conv + linear + attention matmul MACs from torch.utils.flop_counter (FLOPs / 2), batch 1, 224x224, training "
    "form (talking heads counted as the 1x1 convs they are). Like the official toolbox.py profiler, BatchNorm is not "
    "counted; unlike it, GELU and pooling elementwise work is not counted either.")
_LATENCY_SOURCE = ("EfficientFormerV2 (arXiv 2212.08059) ImageNet table; official README: iPhone 12 (iOS 16), "
                   "Xcode 14 Core ML performance report")

_RATIOS = {
    "s0": ((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4)),
    "s1": ((4,) * 3, (4,) * 3, (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4)),
    "s2": ((4,) * 4, (4,) * 4, (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4)),
    "l": ((4,) * 5, (4,) * 5, (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 4, 3, 3, 3, 3, 4, 4, 4)),
}
_VARIANTS = (
    # name, aliases, key, depths, widths, attention blocks per stage, params M, MACs M, top-1 (300 ep), iPhone 12 ms
    ("efficientformerv2-s0", ("efficientformerv2",), "s0", (2, 2, 6, 4), (32, 48, 96, 176), 2, 3.5, 400.0, 75.7, 0.9),
    ("efficientformerv2-s1", (), "s1", (3, 3, 9, 6), (32, 48, 120, 224), 2, 6.1, 650.0, 79.0, 1.1),
    ("efficientformerv2-s2", (), "s2", (4, 4, 12, 8), (32, 64, 144, 288), 4, 12.6, 1250.0, 81.6, 1.6),
    ("efficientformerv2-l", (), "l", (5, 5, 15, 10), (40, 80, 192, 384), 6, 26.1, 2560.0, 83.3, 2.7),
)

for _name, _aliases, _key, _depths, _dims, _vit, _params, _macs, _top1, _ms in _VARIANTS:
    register(ModelInfo(
        name=_name,
        family="efficientformerv2",
        aliases=_aliases,
        builder=efficientformerv2,
        builder_kwargs={"depths": _depths, "embed_dims": _dims, "mlp_ratios": _RATIOS[_key], "num_vit": _vit},
        paper=PaperNumbers(
            arxiv="2212.08059", params_m=_params, macs_m=_macs, top1=_top1,
            latency=(LatencyClaim(ms=_ms, device="iPhone 12", runtime="Core ML", precision="unstated",
                                  source=_LATENCY_SOURCE,
                                  note="iOS 16; compute precision not stated (Core ML on the A14 NPU); batch 1, "
                                       "224x224"),),
            source="EfficientFormerV2 (arXiv 2212.08059) ImageNet-1K comparison table (300-epoch top-1)",
        ),
        preprocess=_PREPROCESS,
        checkpoint_filter=checkpoint_filter,
        params_convention=_PARAMS_CONVENTION,
        count_paper_params=paper_params,
        macs_convention=_MACS_CONVENTION,
        # Attention-bias tables are sized for the build resolution: a network accepts only the img_size it was
        # built with (default 224; others via create(name, img_size=S), S a multiple of 32, >= 64).
        img_size_rule=(64, 32),
        options=_OPTIONS,
        classifier="head",
        default_checkpoint_layouts=(f"timm:efficientformerv2_{_key}",
                                    "snap-research/EfficientFormer:models/efficientformer_v2.py"),
        tags=("attention",),
    ))
