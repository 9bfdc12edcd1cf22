"""Params and MACs, counted the way the paper's tables were (ptflops convention).

Torch-Pruning's ``count_ops_and_params`` hooks conv, BN, activations, pooling and
linear layers like ptflops 0.6.9; it returns MACs. The paper's "FLOPs" are 2 x MACs.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from .graph import ForwardFn, run_forward


class ForwardWith(nn.Module):
    """Lets the counter call models that need a custom forward (mmdet ``_forward`` ...)."""

    def __init__(self, model: nn.Module, forward_fn: ForwardFn | None):
        super().__init__()
        self.model = model
        self.forward_fn = forward_fn

    def forward(self, example_inputs: Any) -> Any:
        return run_forward(self.model, example_inputs, self.forward_fn)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs_params(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None = None) -> tuple[int, int]:
    """(MACs, params) of one forward on ``example_inputs``; the model is not modified."""
    training = model.training
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            macs, _ = tp.utils.count_ops_and_params(ForwardWith(model, forward_fn), (example_inputs,))
    finally:
        model.train(training)
    return int(macs), count_params(model)


def paper_flops(macs: int) -> int:
    """The paper's FLOPs figure: 2 x MACs."""
    return 2 * int(macs)
