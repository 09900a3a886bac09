"""Tiny networks for the export tests: every layer kind the zoo uses, at sizes that convert in seconds."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))


class TinyNet(nn.Module):
    """conv + BN + hardswish stem, depthwise-separable block, then (optionally) one attention block with
    LayerNorm and a GELU MLP, mean pool, linear head."""

    def __init__(self, num_classes: int = 10, attention: bool = True, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(w, w, 3, 1, 1, groups=w, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(w, 2 * w, 1, bias=False), nn.BatchNorm2d(2 * w), nn.Hardswish())
        self.attention = attention
        if attention:
            self.norm = nn.LayerNorm(2 * w)
            self.attn = Attention(2 * w)
            self.mlp = nn.Sequential(nn.Linear(2 * w, 4 * w), nn.GELU(), nn.Linear(4 * w, 2 * w))
        self.head = nn.Linear(2 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.dw(self.stem(x)))
        x = x[:, : self.pw[0].out_channels]  # keeps every channel: exports as aten.alias, as in GhostNet
        x = F.avg_pool2d(x, 2)
        if self.attention:
            t = x.flatten(2).transpose(1, 2)
            t = t + self.attn(self.norm(t))
            t = t + self.mlp(t)
            return self.head(t.mean(1))
        return self.head(x.mean((2, 3), keepdim=True).flatten(1))


def tiny(attention: bool = True, seed: int = 0) -> TinyNet:
    """A TinyNet whose BatchNorm statistics are not the identity, so folding them is actually exercised."""
    torch.manual_seed(seed)
    net = TinyNet(attention=attention)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


class Erfinv(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erfinv(x.clamp(-0.9, 0.9))


class Rejected(nn.Module):
    """A conv followed by erfinv inside a named submodule: no converter here lowers erfinv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.block = nn.Sequential(nn.Identity(), Erfinv())
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.conv(x)).mean((2, 3)))
