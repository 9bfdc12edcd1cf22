"""Params and MACs, counted the way the paper's tables were (ptflops convention).

Torch-Pruning's ``count_ops_and_params`` hooks conv, BN, activations, pooling and
linear layers like ptflops 0.6.9; it returns MACs. The paper's "FLOPs" are 2 x MACs.
``counting_macs`` applies the same hooks to a forward that runs anyway (the trace, the
check of the rebuilt model), so a reconstruction pays no forward of its own for its MACs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

from torch import nn

from ..compat import mac_counting_hooks
from .graph import ForwardFn, preserved_state, run_forward

_COUNT_ATTR = "__flops__"  # where Torch-Pruning's hooks add their count


@dataclass
class MacCount:
    """MACs per example of the forward run inside ``counting_macs`` (set when the block ends)."""

    macs: int = 0


def _counted_modules(model: nn.Module, hooks: dict[type, Any]) -> list[nn.Module]:
    """Modules of a counted type, not inside another counted module (whose count already covers them)."""
    found, stack = [], [model]
    while stack:
        module = stack.pop()
        if type(module) in hooks:
            found.append(module)
        else:
            stack.extend(module.children())
    return found


def _batch_size(example_inputs: Any) -> int:
    """The divisor ``count_ops_and_params`` uses: ``len`` of the example inputs (a tensor's batch)."""
    try:
        return max(len(example_inputs), 1)
    except TypeError:
        return 1


@contextlib.contextmanager
def counting_macs(model: nn.Module, example_inputs: Any) -> Iterator[MacCount]:
    """Count the MACs of the one forward run on ``example_inputs`` inside the block."""
    hooks = mac_counting_hooks()
    count = MacCount()
    modules = _counted_modules(model, hooks)  # a module under two parents counts twice, as in Torch-Pruning
    unique = list(dict.fromkeys(modules))  # ... but is hooked once
    saved = {m: m.__dict__[_COUNT_ATTR] for m in unique if _COUNT_ATTR in m.__dict__}
    handles = []
    try:
        for module in unique:
            setattr(module, _COUNT_ATTR, 0)
            handles.append(module.register_forward_hook(hooks[type(module)]))
        yield count
        count.macs = int(sum(getattr(m, _COUNT_ATTR) for m in modules) / _batch_size(example_inputs))
    finally:
        for handle in handles:
            handle.remove()
        for module in unique:
            module.__dict__.pop(_COUNT_ATTR, None)
        for module, value in saved.items():
            module.__dict__[_COUNT_ATTR] = value


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs_params(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None = None) -> tuple[int, int]:
    """(MACs, params) of one forward on ``example_inputs``; the model is not modified."""
    with preserved_state(model, grad=False), counting_macs(model, example_inputs) as count:
        run_forward(model, example_inputs, forward_fn)
    return count.macs, count_params(model)


def paper_flops(macs: int) -> int:
    """The paper's FLOPs figure: 2 x MACs."""
    return 2 * int(macs)
