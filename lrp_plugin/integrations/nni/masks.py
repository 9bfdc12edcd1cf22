"""What NNI masks mean, and which of them a lossless rebuild can reproduce.

NNI applies a mask by multiplying it into the parameter (``weight * mask``); that masked model
is the reference any rebuild must match. Three kinds are understood:

- whole conv/linear filters (NNI's L1/L2/FPGM pruners, ours): the filters' channels are removed;
- BatchNorm-only masks (NNI's ``SlimPruner``, network slimming): a masked BN channel has gamma 0
  and so emits its constant beta (NNI leaves the bias unmasked); it is mapped to the channels of
  the conv that feeds the BN and rebuilt with that constant folded into the consumers;
- anything else, element-wise masks above all (``LevelPruner``), is refused by name: unstructured
  sparsity zeroes single weights, no channel, so it does not make a model smaller.

Masks on layers whose channels are model outputs are refused too: the rebuild must keep those
channels, so it could not compute what the masked model computes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from ...core import ChannelMasks
from ...core.graph import PRODUCER_TYPES, ModelProbe
from ...errors import ForeignMaskError, MaskError

NNIMasks = Mapping[str, Mapping[str, torch.Tensor]]
_BATCHNORMS = nn.modules.batchnorm._BatchNorm


def masks_from_nni(nni_masks: NNIMasks, model: nn.Module | None = None) -> ChannelMasks:
    """NNI's ``{module: {'weight': mask, ...}}`` -> keep-masks over output channels of the convs/linears.

    A filter is kept when any entry of its weight mask is non-zero. BatchNorm entries are not
    channel producers and are left out (``interpret_nni_masks`` maps them to their producers).
    """
    modules = dict(model.named_modules()) if model is not None else {}
    masks = ChannelMasks(meta={"source": "nni"})
    for name, targets in nni_masks.items():
        weight = targets.get("weight") if isinstance(targets, Mapping) else None
        if weight is None or weight.dim() < 2:
            continue  # BN (1-D) or bias-only entries
        if modules and name not in modules:
            raise MaskError(f"NNI masks name {name!r}, which is not a module of the model")
        masks[name] = weight.detach().reshape(weight.shape[0], -1).ne(0).any(dim=1).cpu()
    return masks


@dataclass
class NNIMaskPlan:
    """NNI masks read as channel removals: what ``reconstruct`` gets, and how it must be called."""

    masks: ChannelMasks  # keep-masks over the output channels of convs/linears
    mask_bn: bool  # every removed channel's BN has gamma and beta masked: it emits exact zeros
    from_batchnorm: dict[str, str] = field(default_factory=dict)  # producer -> BN whose mask it took


def check_nni_masks(model: nn.Module, nni_masks: NNIMasks) -> None:
    """Every entry names a module of ``model`` and a parameter of it, with a mask of its shape."""
    if not isinstance(nni_masks, Mapping):
        raise MaskError("NNI masks must be a dict {module name: {'weight': mask, ...}}, "
                        f"got {type(nni_masks).__name__}")
    modules = dict(model.named_modules())
    problems = []
    for name, targets in nni_masks.items():
        module = modules.get(name)
        if module is None:
            close = [n for n in modules if n and (n.endswith(name) or name.endswith(n))][:3]
            problems.append(f"{name!r} is not a module of the model" + (f" (did you mean {close}?)" if close else ""))
            continue
        if not isinstance(targets, Mapping):
            problems.append(f"{name!r}: expected {{'weight': mask, 'bias': mask}}, got {type(targets).__name__}")
            continue
        for target, mask in targets.items():
            param = getattr(module, target, None) if isinstance(target, str) else None
            if mask is None or (param is None and isinstance(target, str) and hasattr(module, target)):
                continue  # NNI lists a mask (or None) for a bias the layer does not have
            if not isinstance(param, torch.Tensor):
                problems.append(f"{name!r} has no tensor {target!r} to mask")
            elif not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(param.shape):
                shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                problems.append(f"{name}.{target}: mask of shape {shape} for a tensor of shape {tuple(param.shape)}")
    if problems:
        raise MaskError("NNI masks do not fit the model: " + "; ".join(problems[:6])
                        + ". Pass the masks of this model (pruner.compress() or pruner.get_masks()).")


def apply_nni_masks(model: nn.Module, nni_masks: NNIMasks) -> nn.Module:
    """``model`` (in place) with every mask multiplied into its tensor, as NNI applies them."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, targets in nni_masks.items():
            for target, mask in targets.items():
                tensor = getattr(modules[name], target)
                if mask is None or tensor is None:
                    continue
                tensor.mul_(mask.to(device=tensor.device, dtype=tensor.dtype))
    return model


def nni_masked_copy(model: nn.Module, nni_masks: NNIMasks) -> nn.Module:
    """The reference: a copy of ``model`` with the masks applied as NNI applies them."""
    return apply_nni_masks(copy.deepcopy(model), nni_masks)


def _filter_keep(name: str, module: nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """One keep flag per output filter; element-wise masks are refused by name."""
    rows = mask.detach().reshape(mask.shape[0], -1).ne(0).cpu()
    keep = rows.any(dim=1)
    partial = keep & ~rows.all(dim=1)
    if bool(partial.any()):
        raise ForeignMaskError(
            f"{name} ({type(module).__name__}) has element-wise masks ({int(partial.sum())} filters partly masked), "
            "as NNI's LevelPruner and other unstructured (fine-grained) pruners make: unstructured sparsity zeroes "
            "single weights, not channels, so it does not shrink a model and there is nothing to rebuild. Use a "
            "channel pruner (L1NormPruner, L2NormPruner, FPGMPruner, SlimPruner, or lrp_plugin's own)")
    return keep


def interpret_nni_masks(model: nn.Module, nni_masks: NNIMasks, probe: ModelProbe) -> NNIMaskPlan:
    """Read NNI masks as channel removals, or refuse by name before anything is rebuilt."""
    check_nni_masks(model, nni_masks)
    modules = dict(model.named_modules())
    producer_of_bn = {bn: conv for conv, bn in probe.norm_after.items()}
    masks = ChannelMasks(meta={"source": "nni"})
    from_batchnorm: dict[str, str] = {}
    refused = []
    for name, targets in nni_masks.items():
        module = modules[name]
        targets = {t: m for t, m in targets.items() if m is not None and getattr(module, t, None) is not None}
        if isinstance(module, PRODUCER_TYPES):
            if "weight" in targets:
                masks[name] = _filter_keep(name, module, targets["weight"])
            continue
        if not isinstance(module, _BATCHNORMS):
            if any(not bool(m.ne(0).all()) for m in targets.values()):
                refused.append(f"{name} ({type(module).__name__})")
            continue
        all_kept = torch.ones(module.num_features, dtype=torch.bool)
        gamma = targets["weight"].ne(0).cpu() if "weight" in targets else all_kept
        beta = targets["bias"].ne(0).cpu() if "bias" in targets else torch.ones_like(gamma)
        if bool((~beta & gamma).any()):
            raise ForeignMaskError(
                f"{name}: its bias (beta) is masked on channels whose weight (gamma) is kept; such a channel still "
                "varies with the input, so no channel can be removed. Mask BatchNorm weight and bias together")
        if bool(gamma.all()):
            continue
        conv = producer_of_bn.get(name)
        if conv is None:
            raise ForeignMaskError(
                f"{name} (BatchNorm) is masked but no conv/linear feeds it directly (it follows a concat, an add or "
                "the input), so its channels cannot be mapped to filters to remove; exclude it from the config list")
        keep = masks[conv] & gamma if conv in masks else gamma
        masks[conv] = keep
        from_batchnorm[conv] = name
    if refused:
        raise ForeignMaskError(
            f"masks on {refused[:5]}: lrp_plugin rebuilds conv/linear filters and BatchNorm channels only; "
            "exclude these layers from the config list")
    at_outputs = sorted(n for n, keep in masks.items() if n in probe.output_layers and not bool(keep.all()))
    if at_outputs:
        raise ForeignMaskError(
            f"masks on layers that feed model outputs: {at_outputs[:6]}. Their channels are the model's outputs "
            "(a classifier's classes, a detector's predictions), so a rebuild keeps them and could not compute what "
            "the masked model computes; exclude them from the config list (exclude_op_names) and mask again")
    return NNIMaskPlan(masks=masks, mask_bn=_bn_masked(nni_masks, masks, probe), from_batchnorm=from_batchnorm)


def _bn_masked(nni_masks: NNIMasks, masks: ChannelMasks, probe: ModelProbe) -> bool:
    """True if every masked conv's BatchNorm has gamma and beta masked on the same channels."""
    for conv, keep in masks.items():
        if bool(keep.all()) or conv not in probe.norm_after:
            continue
        entry = nni_masks.get(probe.norm_after[conv], {})
        for target in ("weight", "bias"):
            if target not in entry or not torch.equal(entry[target].ne(0).cpu(), keep):
                return False
    return True
