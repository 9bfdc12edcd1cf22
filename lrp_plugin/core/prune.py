"""Physical changes to the model: fold constants into consumers, then remove channels.

Torch-Pruning's pruning functions remove each member's channels; the one layout they do
not handle (input channels of a grouped conv, which must be taken per conv group) is done
here, on counts the planner balanced.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from ..compat import OPTYPE, plain_group
from .graph import ForwardFn, preserved_state, run_forward
from .groups import GroupWalker, grouped_conv
from .plan import ChannelValue, ConstantFold, GroupPlan

# ops whose offsets Torch-Pruning recomputes from part sizes after a prune
MAPPED_KINDS = (OPTYPE.CONCAT, OPTYPE.SPLIT, OPTYPE.RESHAPE, OPTYPE.SLICE, OPTYPE.UNBIND, OPTYPE.EXPAND)


# -- measuring what removed channels carry -------------------------------------------------
def channel_range_hook(records: dict, name: str, idxs: list[int]):
    """A forward pre-hook storing min/max over batch and positions of the given input channels."""
    index = torch.tensor(sorted(set(idxs)), dtype=torch.long)

    def hook(module, inputs):
        x = inputs[0].detach()
        dim = 1 if isinstance(module, nn.modules.conv._ConvNd) else x.dim() - 1  # linears: the last dim
        picked = x.index_select(dim, index.to(x.device)).movedim(dim, 0).reshape(len(index), -1).double()
        low, high = picked.min(dim=1).values.tolist(), picked.max(dim=1).values.tolist()
        for i, lo, hi in zip(index.tolist(), low, high):
            old = records.get((name, i))
            seen = ChannelValue(lo, hi)
            records[(name, i)] = seen if old is None else ChannelValue(min(old.low, lo), max(old.high, hi))

    return hook


@contextlib.contextmanager
def recording_removed_values(model: nn.Module, plans: list[GroupPlan]
                             ) -> Iterator[dict[tuple[str, int], ChannelValue]]:
    """Min/max of every removed channel at every consumer input, over the forward run inside the block."""
    modules = dict(model.named_modules())
    wanted: dict[str, list[int]] = {}
    for plan in plans:
        for name, idxs in plan.removed_inputs():
            wanted.setdefault(name, []).extend(idxs)
    records: dict[tuple[str, int], ChannelValue] = {}
    handles = [modules[name].register_forward_pre_hook(channel_range_hook(records, name, idxs))
               for name, idxs in wanted.items() if name in modules]
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


def removed_channel_values(model: nn.Module, plans: list[GroupPlan], example_inputs: Any,
                           forward_fn: ForwardFn | None) -> dict[tuple[str, int], ChannelValue]:
    """Min/max of every removed channel at every consumer input, over one forward on the example inputs."""
    with recording_removed_values(model, plans) as records, preserved_state(model, grad=False):
        run_forward(model, example_inputs, forward_fn)
    return records


# -- folding --------------------------------------------------------------------------------
def _input_weights(module: nn.Module, idx: int) -> tuple[torch.Tensor, slice]:
    """The weights reading input ``idx`` (summed over the kernel) and the output rows they feed."""
    weight = module.weight.detach()
    if isinstance(module, nn.Linear):
        return weight[:, idx], slice(None)
    groups = module.groups
    per_in, per_out = module.in_channels // groups, module.out_channels // groups
    g, local = divmod(idx, per_in)
    rows = slice(g * per_out, (g + 1) * per_out)
    return weight[rows, local].reshape(per_out, -1).sum(dim=1), rows


def apply_folds(model: nn.Module, plans: list[GroupPlan], norm_after: Mapping[str, str]) -> None:
    """Fold every planned constant into its consumer: bias (or the next BN's mean) or a representative."""
    modules = dict(model.named_modules())
    bias_delta: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for plan in plans:
            for fold in plan.folds:
                consumer = modules[fold.consumer]
                if fold.into_idx is not None:
                    _fold_into_representative(consumer, fold)
                    continue
                summed, rows = _input_weights(consumer, fold.idx)
                out = consumer.out_features if isinstance(consumer, nn.Linear) else consumer.out_channels
                delta = bias_delta.setdefault(fold.consumer, torch.zeros(out, dtype=torch.float64))
                delta[rows] += fold.value * summed.double().cpu()
        for name, delta in bias_delta.items():
            _add_to_bias(modules[name], delta, modules.get(norm_after.get(name, "")))


def _fold_into_representative(consumer: nn.Module, fold: ConstantFold) -> None:
    weight = consumer.weight
    weight[:, fold.into_idx] += (fold.value / fold.into_value) * weight[:, fold.idx]


def _add_to_bias(consumer: nn.Module, delta: torch.Tensor, norm: nn.Module | None) -> None:
    """bias += delta; without a bias, a directly following BatchNorm's running mean absorbs it
    (BN(y + d) with mean m equals BN(y) with mean m - d); otherwise a bias is added."""
    ref = consumer.weight
    if consumer.bias is not None:
        consumer.bias += delta.to(ref)
    elif isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_mean is not None:
        norm.running_mean -= delta.to(norm.running_mean)
    else:
        consumer.bias = nn.Parameter(delta.to(ref), requires_grad=ref.requires_grad)


# -- removal --------------------------------------------------------------------------------
def prune_grouped_in_channels(conv: nn.modules.conv._ConvNd, remove: list[int]) -> None:
    """Remove input channels of a grouped conv, per conv group (the planner made counts equal)."""
    groups, per_in = conv.groups, conv.in_channels // conv.groups
    per_out = conv.out_channels // groups
    removed = set(remove)
    columns = [[i - g * per_in for i in range(g * per_in, (g + 1) * per_in) if i not in removed] for g in range(groups)]
    weight = conv.weight.detach()
    parts = [weight[g * per_out:(g + 1) * per_out][:, columns[g]] for g in range(groups)]
    conv.weight = nn.Parameter(torch.cat(parts, dim=0).contiguous(), requires_grad=conv.weight.requires_grad)
    conv.in_channels = len(columns[0]) * groups


def prune_plan(walker: GroupWalker, plan: GroupPlan, modules: Mapping[str, nn.Module]) -> None:
    """Remove ``plan.remove`` from the group's root and every coupled member.

    The members come from the walk that planned the group, unless an earlier pruned group went
    through the same concat/split/reshape: their offsets changed, so the group is walked again.
    """
    remove = plan.remove
    if not remove:
        return
    mapped = {member.dep.target for member in plan.group.items if member.kind in MAPPED_KINDS}
    if mapped & walker.resized:
        if walker.stale:
            walker.refresh()
            walker.stale = False
        group = walker.group_of(modules[plan.group.root], remove)
        if group.blocked:  # it was not when planned: the graph changed under us, which must not happen
            raise RuntimeError(f"group {plan.group.root} became unmappable after earlier pruning: {group.blocked}")
        members = [(member, member.idxs) for member in group.items]
        consumers = group.consumers
    else:
        removed = set(remove)
        members = [(member, [i for i, r in zip(member.idxs, member.root_idxs) if r in removed])
                   for member in plan.group.items]
        members = [(member, idxs) for member, idxs in members if idxs]
        consumers = plan.group.consumers
    if mapped:
        walker.resized |= mapped
        walker.stale = True
    tp_items, grouped = [], []
    for member, idxs in members:
        if grouped_conv(member.module) and any(member is c for c in consumers):
            grouped.append((member, idxs))
        else:
            tp_items.append((member.dep, idxs))
    plain_group(walker.graph, tp_items).prune(record_history=False)
    for member, idxs in grouped:
        prune_grouped_in_channels(member.module, idxs)
