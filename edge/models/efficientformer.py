"""EfficientFormer (V1): vision transformers at MobileNet speed.

Paper: `EfficientFormer: Vision Transformers at MobileNet Speed` - https://arxiv.org/abs/2206.01191
Original code: snap-research/EfficientFormer ``models/efficientformer.py`` (Apache-2.0); timm ports it as
``efficientformer_l1/l3/l7``. The module tree here gives timm's state-dict keys, so timm checkpoints load with an
identity mapping; ``checkpoint_filter`` maps the official release's keys (``patch_embed.*``, ``network.N.M.*``,
``dist_head``) onto them.

Four stages of PoolFormer-style "Meta4D" blocks (3x3 average pooling as token mixer, Conv-BN MLP) on NCHW maps;
the last few blocks of stage 4 are "Meta3D" blocks (LayerNorm, multi-head attention with a learned
relative-position bias, linear MLP) on tokens. Two classifier heads (class and distillation) are averaged.

Two forms of one network:
* training form: the paper's network. Tokens are made with an NHWC permute, which converters cancel against their
  own NCHW->NHWC transpose, and softmax is a plain last-dim softmax.
* deploy form (``edge.models.reparameterize_model``): BatchNorm and layer scales folded into the preceding
  conv/linear, LayerNorm affines folded into the following linear, the attention bias gathered once into a dense
  buffer, the attention scale folded into the query weights, attention run as per-head batched matmuls whose
  output projection is summed over heads (so heads never move back beside the channels), and the two heads merged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edge.errors import EdgeError
from edge.models._layers import fold_bn_into
from edge.models._registry import LatencyClaim, ModelInfo, PaperNumbers, Preprocess, register

# ----------------------------------------------------------------------------------------------- helpers


def rel_pos_index(res: int, q_stride: int = 1) -> torch.Tensor:
    """Index of each (query, key) pair into a ``(heads, res*res)`` bias table: ``|dy| * res + |dx|``.

    Queries sit on every ``q_stride``-th position of the ``res x res`` key grid. This is the order in which the
    official code's ``attention_offsets`` dict first meets each offset, so tables load unchanged from either layout.
    """
    ky, kx = torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij")
    qy, qx = torch.meshgrid(torch.arange(0, res, q_stride), torch.arange(0, res, q_stride), indexing="ij")
    dy = (qy.reshape(-1, 1) - ky.reshape(1, -1)).abs()
    dx = (qx.reshape(-1, 1) - kx.reshape(1, -1)).abs()
    return dy * res + dx


@torch.no_grad()
def scale_out_channels(layer: nn.Conv2d | nn.Linear, scale: torch.Tensor) -> None:
    """Fold ``y * scale`` (per output channel) into ``layer``: a layer scale after a conv or linear."""
    layer.weight.mul_(scale.reshape(-1, *([1] * (layer.weight.dim() - 1))))
    if layer.bias is not None:
        layer.bias.mul_(scale)


@torch.no_grad()
def fold_layernorm_into(norm: nn.LayerNorm, layers: Sequence[nn.Linear]) -> nn.LayerNorm:
    """Fold a LayerNorm's affine into the linears that read it; returns the affine-free LayerNorm to use instead."""
    for layer in layers:
        layer.bias.add_(layer.weight @ norm.bias)
        layer.weight.mul_(norm.weight.reshape(1, -1))
    return nn.LayerNorm(norm.normalized_shape, eps=norm.eps, elementwise_affine=False)


def paper_params(model: nn.Module) -> int:
    """Parameters with BatchNorm folded: every BN here follows a conv with a bias, so folding removes its affine
    parameters and adds none. Everything else (both heads, layer scales, attention biases) counts."""
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for p in m.parameters(recurse=False))
    return sum(p.numel() for p in model.parameters()) - bn


class LayerScale(nn.Module):
    """Per-channel residual-branch scale on the last dim (tokens)."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class LayerScale2d(LayerScale):
    """Per-channel residual-branch scale on NCHW maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.reshape(1, -1, 1, 1)


# ----------------------------------------------------------------------------------------------- blocks


class Stem4(nn.Sequential):
    """Two 3x3 stride-2 Conv-BN-ReLU: the paper found large-kernel patch embedding slow on the phone."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.add_module("conv1", nn.Conv2d(in_chs, out_chs // 2, 3, stride=2, padding=1))
        self.add_module("norm1", nn.BatchNorm2d(out_chs // 2))
        self.add_module("act1", nn.ReLU())
        self.add_module("conv2", nn.Conv2d(out_chs // 2, out_chs, 3, stride=2, padding=1))
        self.add_module("norm2", nn.BatchNorm2d(out_chs))
        self.add_module("act2", nn.ReLU())


class Downsample(nn.Sequential):
    """3x3 stride-2 Conv-BN between stages (a Sequential, so the generic BN fold handles it)."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1))
        self.add_module("norm", nn.BatchNorm2d(out_chs))


class Flat(nn.Module):
    """NCHW map -> (B, N, C) tokens. Written as an NHWC permute so converters cancel it with their own transpose."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1, 2)


class Pooling(nn.Module):
    """PoolFormer token mixer: average of the 3x3 neighbourhood minus the centre."""

    def __init__(self, pool_size: int = 3) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class ConvMlpWithNorm(nn.Module):
    """1x1 Conv-BN-GELU-1x1 Conv-BN MLP on NCHW maps."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm1: nn.Module = nn.BatchNorm2d(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.norm2: nn.Module = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.fc2(self.act(self.norm1(self.fc1(x)))))

    def reparameterize(self) -> None:
        for conv, name in ((self.fc1, "norm1"), (self.fc2, "norm2")):
            bn = getattr(self, name)
            if isinstance(bn, nn.BatchNorm2d):
                fold_bn_into(conv, bn)
                setattr(self, name, nn.Identity())


class Mlp(nn.Module):
    """Linear-GELU-Linear MLP on tokens."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention on (B, N, C) tokens with a learned bias per head and relative offset.

    ``qkv`` packs, per head, ``key_dim`` query, ``key_dim`` key and ``attn_ratio * key_dim`` value channels (the
    official layout). The bias table has one entry per offset of the ``resolution x resolution`` grid, so the
    network is tied to the input size it was built for.
    """

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: float = 4,
                 resolution: int = 7) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.scale = key_dim ** -0.5
        self.qkv = nn.Linear(dim, (2 * key_dim + self.val_dim) * num_heads)
        self.proj = nn.Linear(self.val_dim * num_heads, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", rel_pos_index(resolution))  # persistent, as in timm/official

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        attn = F.softmax(attn, dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, -1)
        return self.proj(x)

    @torch.no_grad()
    def fused(self) -> AttentionDeploy:
        return AttentionDeploy(self)


class AttentionDeploy(nn.Module):
    """Inference form of :class:`Attention` (same math, fewer layout ops, no gather).

    Queries and values come from per-head weights as batched matmuls straight from the tokens, the scale sits in
    the query weights, the bias is one dense ``(heads, N, N)`` buffer, and the output projection runs per head and
    is summed over heads. The only layout op left is the key transpose.
    """

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        h, kd, d = attn.num_heads, attn.key_dim, attn.val_dim
        c = attn.qkv.in_features
        w = attn.qkv.weight.detach().reshape(h, 2 * kd + d, c)
        b = attn.qkv.bias.detach().reshape(h, 1, 2 * kd + d)
        wq, wk, wv = w.split([kd, kd, d], dim=1)
        bq, bk, bv = b.split([kd, kd, d], dim=2)
        self.wq = nn.Parameter((wq * attn.scale).transpose(1, 2).contiguous())  # (h, C, kd)
        self.bq = nn.Parameter((bq * attn.scale).contiguous())  # (h, 1, kd)
        self.wk = nn.Parameter(wk.transpose(1, 2).contiguous())
        self.bk = nn.Parameter(bk.contiguous())
        self.wv = nn.Parameter(wv.transpose(1, 2).contiguous())  # (h, C, d)
        self.bv = nn.Parameter(bv.contiguous())
        self.wp = nn.Parameter(attn.proj.weight.detach().t().reshape(h, d, -1).contiguous())  # (h, d, C)
        self.bp = nn.Parameter(attn.proj.bias.detach().clone())
        self.register_buffer("attention_bias", attn.attention_biases.detach()[:, attn.attention_bias_idxs].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.unsqueeze(1)  # (B, 1, N, C): broadcast over heads
        q = t @ self.wq + self.bq
        k = t @ self.wk + self.bk
        v = t @ self.wv + self.bv
        attn = F.softmax(q @ k.transpose(-2, -1) + self.attention_bias, dim=-1)
        return ((attn @ v) @ self.wp).sum(1) + self.bp


class MetaBlock2d(nn.Module):
    """Meta4D block: x + ls1 * (pool(x) - x), then x + ls2 * ConvMlp(x)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, pool_size: int = 3, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        self.token_mixer = Pooling(pool_size)
        self.ls1 = LayerScale2d(dim, layer_scale_init)
        self.mlp = ConvMlpWithNorm(dim, int(dim * mlp_ratio))
        self.ls2: nn.Module = LayerScale2d(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.token_mixer(x))
        return x + self.ls2(self.mlp(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        # The MLP's BNs are already folded (children go first); its last conv also takes the layer scale.
        # ls1 stays: pooling is not a conv with weights to fold it into.
        if isinstance(self.ls2, LayerScale):
            scale_out_channels(self.mlp.fc2, self.ls2.gamma)
            self.ls2 = nn.Identity()


class MetaBlock1d(nn.Module):
    """Meta3D block on tokens: x + ls1 * Attention(LN(x)), then x + ls2 * Mlp(LN(x))."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, layer_scale_init: float = 1e-5, resolution: int = 7) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer: nn.Module = Attention(dim, resolution=resolution)
        self.ls1: nn.Module = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2: nn.Module = LayerScale(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.token_mixer(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if not isinstance(self.token_mixer, Attention):
            return
        self.norm1 = fold_layernorm_into(self.norm1, [self.token_mixer.qkv])
        scale_out_channels(self.token_mixer.proj, self.ls1.gamma)
        self.token_mixer = self.token_mixer.fused()
        self.ls1 = nn.Identity()
        self.norm2 = fold_layernorm_into(self.norm2, [self.mlp.fc1])
        scale_out_channels(self.mlp.fc2, self.ls2.gamma)
        self.ls2 = nn.Identity()


class EfficientFormerStage(nn.Module):
    """Optional downsample, then Meta4D blocks; in the last stage the final ``num_vit`` blocks are Meta3D,
    with a :class:`Flat` before them (its position in ``blocks`` matches timm's and the official indices)."""

    def __init__(self, dim: int, dim_out: int, depth: int, downsample: bool, num_vit: int = 0,
                 mlp_ratio: float = 4.0, layer_scale_init: float = 1e-5, resolution: int = 7) -> None:
        super().__init__()
        self.downsample = Downsample(dim, dim_out) if downsample else nn.Identity()
        blocks: list[nn.Module] = []
        if num_vit and num_vit >= depth:
            blocks.append(Flat())
        for i in range(depth):
            remain = depth - i - 1
            if num_vit and num_vit > remain:
                blocks.append(MetaBlock1d(dim_out, mlp_ratio, layer_scale_init, resolution))
            else:
                blocks.append(MetaBlock2d(dim_out, mlp_ratio, layer_scale_init=layer_scale_init))
                if num_vit and num_vit == remain:
                    blocks.append(Flat())
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class EfficientFormer(nn.Module):
    """EfficientFormer-L*: stem (stride 4), four stages (strides 4-32), LayerNorm, class + distillation heads."""

    def __init__(self, depths: Sequence[int], embed_dims: Sequence[int], num_vit: int, num_classes: int = 1000,
                 img_size: int = 224, mlp_ratio: float = 4.0, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        if img_size % 32 or img_size < 64:
            raise EdgeError(f"img_size {img_size} is not supported", "use a multiple of 32, at least 64 (default 224)")
        self.img_size = img_size
        self.num_classes = num_classes
        self.stem = Stem4(3, embed_dims[0])
        stages = []
        prev = embed_dims[0]
        for i, (depth, dim) in enumerate(zip(depths, embed_dims)):
            last = i == len(depths) - 1
            stages.append(EfficientFormerStage(prev, dim, depth, downsample=i > 0, num_vit=num_vit if last else 0,
                                               mlp_ratio=mlp_ratio, layer_scale_init=layer_scale_init,
                                               resolution=img_size // 32))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.num_features = embed_dims[-1]
        self.norm: nn.Module = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)
        self.head_dist: nn.Linear | None = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=1)
        if self.head_dist is None:  # deploy form: the two heads are merged
            return self.head(x)
        return (self.head(x) + self.head_dist(x)) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge the averaged heads into one linear and fold the final LayerNorm's affine into it
        (the token mean commutes with the per-channel affine)."""
        if self.head_dist is None:
            return
        head = nn.Linear(self.num_features, self.num_classes)
        head.weight.copy_((self.head.weight + self.head_dist.weight) / 2)
        head.bias.copy_((self.head.bias + self.head_dist.bias) / 2)
        if isinstance(self.norm, nn.LayerNorm) and self.norm.elementwise_affine:
            self.norm = fold_layernorm_into(self.norm, [head])
        self.head, self.head_dist = head, None


# ----------------------------------------------------------------------------------------------- checkpoints


def _official_to_timm_key(key: str) -> str:
    """snap-research key -> timm/edge key. ``network`` alternates stages (even) and downsamplers (odd)."""
    parts = key.split(".")
    if parts[0] == "patch_embed":
        parts[1] = {"0": "conv1", "1": "norm1", "3": "conv2", "4": "norm2"}.get(parts[1], parts[1])
        parts[0] = "stem"
    elif parts[0] == "network":
        n = int(parts[1])
        if n % 2 == 0:
            parts[:2] = ["stages", str(n // 2), "blocks"]
        else:
            parts[:2] = ["stages", str((n + 1) // 2), "downsample"]
            parts[3] = {"proj": "conv", "norm": "norm"}.get(parts[3], parts[3])
    elif parts[0] == "dist_head":
        parts[0] = "head_dist"
    key = ".".join(parts)
    return key.replace("layer_scale_1", "ls1.gamma").replace("layer_scale_2", "ls2.gamma")


def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the official release's keys onto timm's (this network's); timm/edge checkpoints pass through."""
    if not any(k.startswith(("patch_embed.", "network.")) for k in state_dict):
        return state_dict
    return {_official_to_timm_key(k): v for k, v in state_dict.items()}


# ----------------------------------------------------------------------------------------------- variants


def efficientformer(depths: Sequence[int], embed_dims: Sequence[int], num_vit: int, num_classes: int = 1000,
                    img_size: int = 224) -> EfficientFormer:
    return EfficientFormer(depths, embed_dims, num_vit, num_classes=num_classes, img_size=img_size)


_PREPROCESS = Preprocess(crop_pct=0.95, interpolation="bicubic")  # timm's efficientformer default_cfg
_OPTIONS = ("num_classes", "img_size")
_PARAMS_CONVENTION = ("BatchNorm folded, distillation head included (the paper's convention): all training-form "
                      "parameters minus BatchNorm affine parameters; every BN follows a biased conv, so folding "
                      "adds none. Layer scales and attention-bias tables count.")
_MACS_CONVENTION = ("conv + linear + attention matmul MACs from torch.utils.flop_counter (FLOPs / 2), batch 1, "
                    "224x224, training form. Like the official toolbox.py profiler, BatchNorm is not counted (it "
                    "folds away); unlike it, GELU, LayerNorm and pooling elementwise work is not counted either.")
_LATENCY_SOURCE = ("EfficientFormer (arXiv 2206.01191) ImageNet table; official README: iPhone 12, CoreMLTools, "
                   "measured with the coreml-performance app")

_VARIANTS = (
    # name, aliases, depths, widths, attention blocks, params M, MACs M, top-1, iPhone 12 ms, timm name
    ("efficientformer-l1", ("efficientformer",), (3, 2, 6, 4), (48, 96, 224, 448), 1, 12.3, 1300.0, 79.2, 1.6,
     "efficientformer_l1"),
    ("efficientformer-l3", (), (4, 4, 12, 6), (64, 128, 320, 512), 4, 31.3, 3900.0, 82.4, 3.0, "efficientformer_l3"),
    ("efficientformer-l7", (), (6, 6, 18, 8), (96, 192, 384, 768), 8, 82.1, 10200.0, 83.3, 7.0,
     "efficientformer_l7"),
)

for _name, _aliases, _depths, _dims, _vit, _params, _macs, _top1, _ms, _timm in _VARIANTS:
    register(ModelInfo(
        name=_name,
        family="efficientformer",
        aliases=_aliases,
        builder=efficientformer,
        builder_kwargs={"depths": _depths, "embed_dims": _dims, "num_vit": _vit},
        paper=PaperNumbers(
            arxiv="2206.01191", params_m=_params, macs_m=_macs, top1=_top1,
            latency=(LatencyClaim(ms=_ms, device="iPhone 12", runtime="Core ML", precision="unstated",
                                  source=_LATENCY_SOURCE,
                                  note="compute precision not stated (Core ML on the A14 NPU); batch 1, 224x224"),),
            source="EfficientFormer (arXiv 2206.01191) ImageNet-1K comparison table",
        ),
        preprocess=_PREPROCESS,
        checkpoint_filter=checkpoint_filter,
        params_convention=_PARAMS_CONVENTION,
        count_paper_params=paper_params,
        macs_convention=_MACS_CONVENTION,
        # The attention-bias table is sized for img_size/32 tokens a side: a network accepts only the img_size
        # it was built with (default 224; build others with create(name, img_size=S), S a multiple of 32, >= 64).
        img_size_rule=(64, 32),
        options=_OPTIONS,
        classifier="head",
        default_checkpoint_layouts=(f"timm:{_timm}", "snap-research/EfficientFormer:models/efficientformer.py"),
        tags=("attention",),
    ))
