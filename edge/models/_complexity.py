"""Params and MACs counted from the network itself (never copied from a paper)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Multiply-adds of one batch-1 forward: torch.utils.flop_counter FLOPs / 2 (conv, linear, matmul, sdpa)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2
