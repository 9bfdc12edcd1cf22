"""Per-group decisions: which channels go, which stay, and what constants are folded.

For one ``ChannelGroup`` the planner merges the producers' keep-masks (union: the paper;
intersection: its ablation), keeps every producer at least one channel, balances grouped
convs (each conv group needs the same channel count), rounds counts up (``round_to``), and,
given the values the removed channels carry at each consumer (measured on the masked model),
keeps the ones that are not constant and plans folds for the constant ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import InvalidArgumentError
from .groups import ChannelGroup, Member, grouped_conv
from .report import GroupRecord
from .votes import merge_votes


@dataclass
class ConstantFold:
    """A removed channel that is a constant ``value`` at ``consumer`` input index ``idx``.

    ``into_idx`` is None to fold into the consumer's bias, else the consumer input index of
    the kept representative channel (value ``into_value``) whose weights absorb this one.
    """

    consumer: str
    idx: int
    root: int
    value: float
    into_idx: int | None = None
    into_value: float = 0.0


@dataclass
class GroupPlan:
    """What happens to one group: the root indices removed, and the folds that make it exact."""

    group: ChannelGroup
    record: GroupRecord
    keep: torch.Tensor  # bool over root channels
    folds: list[ConstantFold] = field(default_factory=list)
    representatives: dict[int, list[int]] = field(default_factory=dict)  # kept root -> roots it stands for

    @property
    def remove(self) -> list[int]:
        return torch.nonzero(~self.keep).flatten().tolist()

    def removed_inputs(self) -> list[tuple[str, list[int]]]:
        """(consumer, its input indices of removed channels) for every consumer reading them."""
        removed = set(self.remove)
        pairs = [(m.name, [i for i, r in zip(m.idxs, m.root_idxs) if r in removed]) for m in self.group.consumers]
        return [(name, idxs) for name, idxs in pairs if idxs]


def keep_each_producer_alive(group: ChannelGroup, keep: torch.Tensor) -> int:
    """Never leave a producer (a concat part, a whole group) with zero channels."""
    added = 0
    for member in group.producers or []:
        roots = member.root_idxs
        if roots and not bool(keep[roots].any()):
            keep[roots[0]] = True
            added += 1
    if not bool(keep.any()):
        keep[0] = True
        added += 1
    return added


def _even_out(parts: list[list[int]], width: int, keep: torch.Tensor) -> int:
    """Keep removed roots until every part (``width`` channels, of which ``roots`` are this
    group's) keeps the same count, at least one; returns how many were kept."""
    kept = [width - len(roots) + sum(bool(keep[r]) for r in roots) for roots in parts]
    target, added = max(max(kept, default=1), 1), 0
    for count, roots in zip(kept, parts):
        for root in (r for r in roots if not bool(keep[r])):
            if count >= target:
                break
            keep[root] = True
            count += 1
            added += 1
    return added


def balance_grouped_convs(group: ChannelGroup, keep: torch.Tensor) -> int:
    """Grouped convs need the same channel count in every conv group: keep extra (zero) channels."""
    added = 0
    for member in group.items:
        module = member.module
        if not grouped_conv(module):
            continue
        channels = module.out_channels if member in group.producers else module.in_channels
        width = channels // module.groups
        parts: list[list[int]] = [[] for _ in range(module.groups)]
        for idx, root in zip(member.idxs, member.root_idxs):
            parts[idx // width].append(root)
        added += _even_out(parts, width, keep)
    return added


def balance_splits(group: ChannelGroup, keep: torch.Tensor) -> int:
    """A chunk into n parts stays a chunk into n equal parts: keep extra (zero) channels to even them."""
    added = 0
    for member in group.splits:
        offsets = member.dep.target.module.offsets
        width = offsets[1] - offsets[0]
        parts: list[list[int]] = [[] for _ in offsets[:-1]]
        for idx, root in zip(member.idxs, member.root_idxs):
            parts[min(idx // width, len(parts) - 1)].append(root)
        added += _even_out(parts, width, keep)
    return added


def balance(group: ChannelGroup, keep: torch.Tensor) -> int:
    """Grouped convs and chunks both need equal counts; evening one can unbalance the other."""
    added, step = 0, -1
    while step != 0:
        step = balance_grouped_convs(group, keep) + balance_splits(group, keep)
        added += step
    return added


def check_round_to(round_to: Any) -> int | None:
    """``round_to`` as every entry point takes it: None (no rounding) or an int >= 1 (a bool is no count)."""
    if round_to is not None and (not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1):
        raise InvalidArgumentError(f"round_to must be an integer >= 1 (a channel multiple such as 8), got {round_to!r}")
    return round_to


def round_up(keep: torch.Tensor, round_to: int | None) -> int:
    """Keep extra (masked, all-zero) channels until the count is a multiple of ``round_to``."""
    if not round_to or int(keep.sum()) % round_to == 0:
        return 0
    missing = round_to - int(keep.sum()) % round_to
    extra = torch.nonzero(~keep).flatten()[:missing]
    keep[extra] = True
    return int(extra.numel())


# -- constants carried by removed channels -------------------------------------------------
@dataclass
class ChannelValue:
    """What one consumer input channel held over the example inputs (batch and positions)."""

    low: float
    high: float

    def constant(self) -> float | None:
        scale = max(abs(self.low), abs(self.high), 1e-30)
        return (self.low + self.high) / 2 if self.high - self.low <= 1e-6 * scale else None


def needs_representative(module: nn.Module) -> bool:
    """Zero padding sees a constant channel as smaller at the borders: a bias cannot stand in."""
    if not isinstance(module, nn.modules.conv._ConvNd):
        return False
    padding = module.padding if isinstance(module.padding, tuple) else (module.padding,)
    return module.padding == "same" or any(int(p) > 0 for p in padding if not isinstance(p, str))


def plan_constants(plan: GroupPlan, values: Mapping[tuple[str, int], ChannelValue],
                   modules: Mapping[str, nn.Module]) -> None:
    """Keep removed channels that are not constant at some consumer; fold the constant ones.

    Zero-padded consumers get one kept *representative* channel per group whose consumer
    weights absorb the others (exact, padding included); other consumers fold into a bias.
    """
    removed = set(plan.remove)
    if not removed:
        return
    per_root: dict[int, list[tuple[Member, int, float]]] = {r: [] for r in removed}
    not_constant: set[int] = set()
    for member in plan.group.consumers:
        for idx, root in zip(member.idxs, member.root_idxs):
            if root not in removed:
                continue
            seen = values.get((member.name, idx))
            value = seen.constant() if seen is not None else None
            if value is None:
                not_constant.add(root)
            else:
                per_root[root].append((member, idx, value))
    for root in not_constant:
        plan.keep[root] = True
        plan.record.not_constant_kept += 1
    carried = {r: uses for r, uses in per_root.items() if r not in not_constant and any(v != 0 for _, _, v in uses)}
    if not carried:
        return
    padded = {m.name for uses in carried.values() for m, _, v in uses
              if needs_representative(modules[m.name]) and v != 0}
    if any(grouped_conv(modules[name]) for name in padded):  # a representative cannot serve every conv group
        for root in carried:
            plan.keep[root] = True
            plan.record.not_constant_kept += 1
        return
    representative = None
    if padded:
        for root, uses in sorted(carried.items()):
            if all(v != 0 for m, _, v in uses if m.name in padded) and {m.name for m, _, _ in uses} >= padded:
                representative = root
                break
        if representative is None:  # no channel is non-zero at every padded consumer: keep them all
            for root in carried:
                plan.keep[root] = True
                plan.record.not_constant_kept += 1
            return
        plan.keep[representative] = True
        plan.representatives[representative] = sorted(carried)
        plan.record.constant_channels_kept += 1
    rep_at = {m.name: (idx, v) for m, idx, v in carried.get(representative, [])}
    for root, uses in carried.items():
        if root == representative:
            continue
        for member, idx, value in uses:
            if value == 0:
                continue
            into_idx, into_value = rep_at.get(member.name, (None, 0.0)) if member.name in padded else (None, 0.0)
            plan.folds.append(ConstantFold(consumer=member.name, idx=idx, root=root, value=value,
                                           into_idx=into_idx, into_value=into_value))
        plan.record.constants_folded += 1


def finalize(plan: GroupPlan, round_to: int | None) -> None:
    """Re-round after constants kept channels; a channel kept after all carries its own value."""
    plan.record.zero_channels_kept += balance(plan.group, plan.keep)
    plan.record.zero_channels_kept += round_up(plan.keep, round_to) + balance(plan.group, plan.keep)
    plan.folds = [f for f in plan.folds if not bool(plan.keep[f.root])]
    plan.record.constants_folded = len({f.root for f in plan.folds})
    plan.record.channels_after = int(plan.keep.sum())


def plan_group(group: ChannelGroup, masks: Mapping[str, torch.Tensor], output_layers: set[str], merge: str,
               round_to: int | None) -> GroupPlan:
    """The structural plan of one group, before constants are measured."""
    keep, kept_by, note = merge_votes(group, masks, output_layers, merge)
    zero_kept = keep_each_producer_alive(group, keep)
    zero_kept += balance(group, keep)
    zero_kept += round_up(keep, round_to)
    zero_kept += balance(group, keep)
    record = GroupRecord(root=group.root, members=group.members, channels_before=group.channels,
                         channels_after=int(keep.sum()), kept_by_producer=kept_by, zero_channels_kept=zero_kept,
                         note=note)
    return GroupPlan(group=group, record=record, keep=keep)
