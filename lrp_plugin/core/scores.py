"""Channel scores for ``selection="group"``: one score per channel of a coupled group.

A group's producers (the convs summed into a residual stream, a depthwise chain) and its
consumers (every conv/linear reading the channels) each score the group's channels with the
criterion: producers by their output filters, consumers by their input slices (as Torch-Pruning's
``GroupMagnitudeImportance`` counts both). Layers differ in scale, so each layer's scores are
divided by their mean before they are summed over the group; the lowest sums are masked in every
producer at once, so union = intersection and the rebuild stays exact.

GM (FPGM) is treated like the norms: each layer's distance-to-the-others sums, normalised by their
mean, are summed over the group (a channel close to the geometric median in most of the layers
that touch it is the one to drop); no single median is formed over the concatenated filters,
whose layers have different shapes.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from .criteria import Criterion, is_importance

# (module, its channel indices, the group's root indices they carry)
Part = tuple[nn.Module, list[int], list[int]]


def output_filters(module: nn.Module) -> torch.Tensor:
    """The weight with one row per output channel (transposed convs store inputs first)."""
    weight = module.weight
    return weight.transpose(0, 1) if getattr(module, "transposed", False) else weight


def input_slices(module: nn.Module) -> torch.Tensor | None:
    """The weight with one row per *input* channel (None for depthwise convs: their input is their output)."""
    weight = module.weight.detach()
    if isinstance(module, nn.Linear):
        return weight.t()
    if not isinstance(module, nn.modules.conv._ConvNd):
        return None
    if getattr(module, "transposed", False):
        return weight  # (in, out/groups, k...)
    groups = module.groups
    if groups > 1 and groups == module.in_channels == module.out_channels:
        return None
    out, per_group = weight.shape[0], weight.shape[1]
    # (out, in/g, k...) -> (g, out/g, in/g, k...) -> (g, in/g, out/g, k...) -> one row per input channel
    grouped = weight.reshape(groups, out // groups, per_group, *weight.shape[2:]).transpose(1, 2)
    return grouped.reshape(groups * per_group, -1)


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    scores = scores.detach().to(torch.float64).flatten()
    return scores / scores.abs().mean().clamp_min(torch.finfo(torch.float64).tiny)


def combine(score: Criterion, channels: int, producers: Iterable[Part], consumers: Iterable[Part]) -> torch.Tensor:
    """Sum over the group's layers of each layer's mean-normalised criterion, per root channel."""
    total = torch.zeros(channels, dtype=torch.float64)
    for parts, rows in ((producers, output_filters), (consumers, input_slices)):
        for module, idxs, roots in parts:
            weight = rows(module)
            if weight is None or not idxs:
                continue
            scores = _normalised(score(weight))
            total.index_add_(0, torch.as_tensor(roots, dtype=torch.long), scores[torch.as_tensor(idxs)])
    return total


def group_scores(group: Any, score: Criterion | Any, graph: Any = None) -> torch.Tensor:
    """One score per root channel of a ``ChannelGroup``; a Torch-Pruning ``Importance`` is called
    on Torch-Pruning's own group of the root producer instead."""
    if is_importance(score):
        root = group.producers[0].module if group.producers else None
        return importance_scores(score, graph, root, group.channels)
    producers = [(m.module, m.idxs, m.root_idxs) for m in group.producers]
    consumers = [(m.module, m.idxs, m.root_idxs) for m in group.consumers]
    return combine(score, group.channels, producers, consumers)


def layer_scores(module: nn.Module, score: Criterion | Any, graph: Any = None) -> torch.Tensor:
    """One score per output filter of ``module`` (the paper's per-layer selection)."""
    if is_importance(score):
        return importance_scores(score, graph, module, int(output_filters(module).shape[0]))
    return score(output_filters(module))


def importance_scores(importance: Any, graph: Any, module: nn.Module, channels: int) -> torch.Tensor:
    """A Torch-Pruning ``Importance`` on the group Torch-Pruning builds for ``module``'s output channels."""
    fn = graph.get_pruner_of_module(module).prune_out_channels
    with torch.no_grad():
        scores = importance(graph.get_pruning_group(module, fn, list(range(channels))))
    if scores is None:  # Torch-Pruning's convention for "no opinion": keep the order
        return torch.arange(channels, dtype=torch.float64)
    return torch.as_tensor(scores).detach().to(torch.float64).flatten()[:channels]
