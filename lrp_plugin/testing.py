"""Helpers for tests and demos: make BatchNorm effects visible on random models."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running stats and affine params in every BatchNorm, so a removed channel that
    still emits ``beta - gamma*mean/std`` shows up as an output error."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            if module.running_mean is not None:
                module.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
                module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            if module.weight is not None:
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model
