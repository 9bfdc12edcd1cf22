"""Checks that run before anything is changed, so a failure loses nothing."""

from __future__ import annotations

import difflib
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import InvalidArgumentError, MaskError, SpecMismatchError, UnsafeCheckpointError
from .criteria import check_ratio, get_criterion


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


def check_pruning_options(criterion: Any, ratio: float, *, ratio_dict: Mapping[str, float] | None = None,
                          ignored_layers: Any = None) -> None:
    """What can be checked about pruning options without the model: the criterion name, the ratios,
    the form of ``ignored_layers``; run where options are given (a hook's constructor), so a typo
    costs nothing instead of a dataset load."""
    get_criterion(criterion)
    check_ratio(ratio)
    if ratio_dict is not None and not isinstance(ratio_dict, Mapping):
        raise InvalidArgumentError(f"ratio_dict must map module names to ratios, got {type(ratio_dict).__name__}")
    for name, value in (ratio_dict or {}).items():
        check_ratio(value)
        if not isinstance(name, str):
            raise InvalidArgumentError(f"ratio_dict keys are module names, got {name!r}")
    if ignored_layers is not None and (isinstance(ignored_layers, str) or not all(
            isinstance(n, (str, nn.Module)) for n in ignored_layers)):
        raise InvalidArgumentError(f"ignored_layers must be a list of module names, got {ignored_layers!r}")


def check_layer_names(model: nn.Module, names: Any, what: str) -> None:
    """Every name is a module of ``model``; MaskError naming the misspelt ones (with close names)."""
    modules = dict(model.named_modules())
    unknown = [n for n in names if isinstance(n, str) and n not in modules]
    if unknown:
        hints = {n: difflib.get_close_matches(n, [m for m in modules if m], n=3) for n in unknown}
        listed = "; ".join(f"{n!r}" + (f" (did you mean {hints[n]}?)" if hints[n] else "") for n in unknown[:5])
        raise MaskError(f"{what} names modules that are not in the model: {listed}")
