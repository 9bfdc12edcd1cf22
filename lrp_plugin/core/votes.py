"""The producers' keep-masks merged over a group's root channels: which channels a group may lose.

Shared by the norm tracing of steps 1-2 (which BatchNorms normalize channels every producer
masked) and the planner of step 3, so neither imports the other.
"""

from __future__ import annotations

from typing import Mapping

import torch

from .groups import ChannelGroup


def merge_votes(group: ChannelGroup, masks: Mapping[str, torch.Tensor], output_layers: set[str],
                merge: str) -> tuple[torch.Tensor, dict[str, int | None], str]:
    """Union/intersection of the producers' keep-masks over the group's root channels:
    (keep over root channels, channels kept by each producer (None: unmasked), a note)."""
    channels = group.channels
    fixed = torch.zeros(channels, dtype=torch.bool)
    removed_votes = torch.zeros(channels, dtype=torch.long)
    kept_votes = torch.zeros(channels, dtype=torch.long)
    kept_by: dict[str, int | None] = {}
    note = "channels that are model outputs are kept" if group.output_bound else ""
    if group.output_bound:
        fixed[:] = True
    for member in group.producers:
        keep = masks.get(member.name) if member.name is not None else None
        roots = torch.tensor(member.root_idxs, dtype=torch.long)
        if keep is None or member.name in output_layers:
            fixed[roots] = True
            kept_by[member.name or type(member.module).__name__] = None
            if keep is not None and not bool(keep.all()):
                note = f"{member.name} feeds a model output; its mask is not applied physically"
            continue
        kept_by[member.name] = int(keep.sum())
        votes = keep[torch.tensor(member.idxs, dtype=torch.long)]
        kept_votes.index_add_(0, roots, votes.long())
        removed_votes.index_add_(0, roots, (~votes).long())
    if merge == "union":
        keep = fixed | (kept_votes > 0) | (removed_votes == 0)
    else:
        keep = fixed | (removed_votes == 0)
    return keep, kept_by, note
