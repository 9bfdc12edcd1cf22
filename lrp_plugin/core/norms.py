"""Which BatchNorms are masked with the convs: the one place that traces them.

The BatchNorm right after a masked conv is masked with it (``norm_layers``); a BatchNorm further
down that normalizes channels every producer masked (DenseNet's pre-activation BNs after a
concat) gets a keep-mask of its own (``norm_masks``), so a removed channel is zero at every
consumer. Steps 1-2 (``compute_masks``, ``apply_masks``) and the rebuild record them alike.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .graph import ForwardFn, trace_model
from .groups import ChannelGroup, GroupWalker
from .votes import merge_votes

# ChannelMasks (masks.py imports this module): a mapping of keep-masks with ``norm_layers``/``norm_masks``
ChannelMasksLike = Mapping[str, torch.Tensor]


def downstream_norm_masks(groups: list[ChannelGroup], masks: ChannelMasksLike, output_layers: set[str],
                          keep_existing: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks for every BatchNorm that normalizes channels all producers masked (e.g. DenseNet's
    pre-activation BNs after a concat), so a removed channel is zero at every consumer."""
    immediate = set(masks.norm_layers.values())
    result: dict[str, torch.Tensor] = {k: v.clone() for k, v in (keep_existing or {}).items()}
    for group in groups:
        keep, _, _ = merge_votes(group, masks, output_layers, "union")
        if bool(keep.all()):
            continue
        for norm in group.norms:
            if norm.name is None or norm.name in immediate:
                continue
            bn_keep = result.setdefault(norm.name, torch.ones(norm.module.num_features, dtype=torch.bool))
            for idx, root in zip(norm.idxs, norm.root_idxs):
                if not bool(keep[root]):
                    bn_keep[idx] = False
    return {k: v for k, v in result.items() if not bool(v.all())}


def record_norms(masks: Any, norm_after: Mapping[str, str], groups: list[ChannelGroup],
                 output_layers: set[str]) -> None:
    """Record in ``masks`` the BatchNorm after each masked conv (where none is recorded yet) and the
    keep-masks of the BatchNorms further down (``groups``: the masked producers' groups)."""
    masks.norm_layers.update({c: b for c, b in norm_after.items() if c in masks and c not in masks.norm_layers})
    masks.norm_masks.update(downstream_norm_masks(groups, masks, output_layers, keep_existing=masks.norm_masks))


def trace_norms(model: nn.Module, masks: Any, example_inputs: Any, forward_fn: ForwardFn | None) -> None:
    """``record_norms`` for masks made elsewhere: one traced forward and the masked groups."""
    traced = trace_model(model, example_inputs, forward_fn)
    walker = GroupWalker(traced.graph, model)
    groups, _ = walker.groups_of(n for n, keep in masks.items() if not bool(keep.all()))
    record_norms(masks, traced.probe.norm_after, groups, traced.probe.output_layers)
    masks.meta["norms_traced"] = True
