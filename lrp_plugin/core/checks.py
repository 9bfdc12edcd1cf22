"""Checks that run before anything is changed, so a failure loses nothing."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import SpecMismatchError, UnsafeCheckpointError


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


def load_weights_only(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; a file holding pickled objects beyond
    tensors and plain containers is refused with UnsafeCheckpointError (never unpickled).

    torch's own UnpicklingError advises ``weights_only=False``: wrong for a file that tried to
    run code, so its advice is replaced; the offending global it names is kept.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError) as exc:
        named = re.search(r"GLOBAL (\S+)", str(exc))
        if named is None:  # not a pickled object: a corrupt file, or no torch file at all
            lines = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()
            reason = lines[0][:120] if lines else type(exc).__name__
            raise SpecMismatchError(
                f"{str(path)!r} is not a {what} lrp_plugin wrote: torch.load cannot read it ({reason}). "
                "Pass the file lrp_plugin wrote (lrp.save_pruned, lrp.save_masked, LosslessPruningHook)"
            ) from None
        cause = f" (it calls {named.group(1)})" if named else ""
        raise UnsafeCheckpointError(
            f"{what} {str(path)!r} holds pickled Python objects besides tensors{cause}; it was not loaded, "
            "since unpickling them could run code. Use the file as lrp_plugin wrote it (lrp.save_pruned, "
            "lrp.save_masked, LosslessPruningHook), or re-save the weights from a trusted source as a plain "
            "state_dict of tensors."
        ) from None
