"""Checks that run before anything is changed, so a failure loses nothing."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..errors import SpecMismatchError


def check_state_dict_fits(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise SpecMismatchError naming every missing, unexpected or mis-shaped entry.

    ``load_state_dict(strict=True)`` copies the matching tensors before it raises;
    checking first keeps the model untouched when the checkpoint does not fit.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: model {tuple(own[k].shape)} vs file {tuple(v.shape)}"
        for k, v in state_dict.items()
        if k in own and isinstance(v, torch.Tensor) and tuple(own[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:5]}{' ...' if len(shapes) > 5 else ''}")
        raise SpecMismatchError(
            f"{source} does not fit the model ({'; '.join(parts)}). Load it into the architecture "
            "it was saved from (same model name, num_classes and channel spec)."
        )
