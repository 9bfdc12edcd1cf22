"""Apply masks to conv (+ BatchNorm) weights and hold them at exactly zero while training.

Holding works without touching the state_dict layout, so a masked checkpoint still
loads into the unpruned architecture:

* masked entries are zeroed once;
* a gradient hook zeroes their gradients, so SGD (momentum, weight decay), Adam and
  AdamW leave an exact zero at zero, and DDP all-reduces zeros;
* a load_state_dict post-hook re-zeroes them after any checkpoint load;
* ``enforce_masks`` re-zeroes on demand (training hooks call it after each step).

The masks travel beside the weights: ``model._lrp_masks`` (a plain attribute, not a
buffer) and ``save_masked``/``load_masked`` checkpoint metadata.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import MaskError
from .checks import check_state_dict_fits, load_weights_only
from .files import atomic_path
from .graph import ForwardFn
from .masks import ChannelMasks, validate_masks
from .modules import unwrap_model
from .norms import trace_norms

_STATE_ATTR = "_lrp_masks"
MASKED_CHECKPOINT_KEY = "lrp_masks"


@dataclass
class HeldMasks:
    """Masks held on a model, with the handles that keep them in force."""

    masks: ChannelMasks
    mask_bn: bool
    handles: list = field(default_factory=list, repr=False)
    pairs: list | None = field(default=None, repr=False)  # (parameter, keep) of this model, found once

    def __deepcopy__(self, memo):  # a copy gets the masks, not our hooks or this model's parameters
        return HeldMasks(self.masks.copy(), self.mask_bn)

    def params(self, model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """The held (parameter, keep) pairs; looked up once, since training hooks ask every step."""
        if self.pairs is None:
            self.pairs = masked_params(model, self.masks, self.mask_bn)
        return self.pairs


def masked_params(model: nn.Module, masks: ChannelMasks, mask_bn: bool) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, keep-mask along dim 0) for every tensor to hold at zero."""
    modules = dict(model.named_modules())
    pairs = []
    for name, keep in masks.items():
        if bool(keep.all()):
            continue
        layer = modules[name]
        pairs.append((layer.weight, keep))
        if getattr(layer, "bias", None) is not None:
            pairs.append((layer.bias, keep))
        if mask_bn and name in masks.norm_layers:
            pairs.extend(_affine_pairs(modules[masks.norm_layers[name]], keep))
    if mask_bn:
        for name, keep in masks.norm_masks.items():
            pairs.extend(_affine_pairs(modules[name], keep))
    return pairs


def _affine_pairs(bn: nn.Module, keep: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
    return [(p, keep) for p in (bn.weight, bn.bias) if p is not None]


def zero_masked(pairs) -> None:
    with torch.no_grad():
        for param, keep in pairs:
            param[~keep.to(param.device)] = 0


def _grad_hook(param: torch.Tensor, keep: torch.Tensor):
    # shaped and placed once: the hook runs on every backward
    drop = (~keep).to(device=param.device).view(-1, *([1] * (param.dim() - 1)))
    owner = weakref.ref(param)

    def hook(grad: torch.Tensor) -> torch.Tensor:
        nonlocal drop
        if drop.device != grad.device:  # the model moved after apply_masks
            drop = drop.to(device=grad.device)
        # a fill, not a product: an fp16 overflow (inf) at a masked entry gives 0, not NaN, so a
        # GradScaler's step is skipped only for the kept weights' own overflows
        out = grad.masked_fill(drop, 0)
        target = owner()
        if target is not None and out.shape == target.shape and out.stride() != target.stride():
            # the parameter's own layout (channels_last 1x1 kernels), as DDP's gradient buckets expect
            out = torch.empty_like(target, dtype=out.dtype, device=out.device).copy_(out)
        return out

    return hook


def apply_masks(
    model: nn.Module,
    masks: Mapping[str, Any],
    mask_bn: bool = True,
    *,
    hold: bool = True,
    example_inputs: Any = None,
    forward_fn: ForwardFn | None = None,
) -> ChannelMasks:
    """Zero masked conv filters (and the following BN's gamma/beta) and hold them at zero.

    ``mask_bn=False`` leaves BatchNorm alive: the paper's Table 8 ablation (lossy).
    The BN after each conv comes from the masks (``compute_masks`` records it) or, for
    masks made elsewhere, from tracing ``example_inputs``. Returns the validated masks.
    """
    target = unwrap_model(model)
    masks = validate_masks(target, masks).copy()
    if mask_bn and not masks.meta.get("norms_traced"):
        missing = [n for n in masks if n not in masks.norm_layers and not bool(masks[n].all())]
        if missing and example_inputs is not None:
            trace_norms(target, masks, example_inputs, forward_fn)
        elif missing and not masks.norm_layers:
            raise MaskError(
                "mask_bn=True needs to know which BatchNorm follows each conv: pass example_inputs=... "
                "(or use masks from lrp.compute_masks, which records it), or mask_bn=False"
            )
    remove_masks(target)
    pairs = masked_params(target, masks, mask_bn)
    zero_masked(pairs)
    state = HeldMasks(masks, mask_bn, pairs=pairs)
    if hold:
        for param, keep in pairs:
            if param.requires_grad:  # frozen parameters never get gradients; zeroing them is enough
                state.handles.append(param.register_hook(_grad_hook(param, keep)))
        state.handles.append(target.register_load_state_dict_post_hook(lambda module, _keys: enforce_masks(module)))
    setattr(target, _STATE_ATTR, state)
    return masks


def get_masks(model: nn.Module) -> ChannelMasks | None:
    """The masks held on ``model`` (or a DDP wrapper of it), if any."""
    state = getattr(unwrap_model(model), _STATE_ATTR, None)
    return state.masks if isinstance(state, HeldMasks) else None


def held_mask_bn(model: nn.Module) -> bool | None:
    state = getattr(unwrap_model(model), _STATE_ATTR, None)
    return state.mask_bn if isinstance(state, HeldMasks) else None


def enforce_masks(model: nn.Module) -> None:
    """Re-zero every held masked entry (cheap; call after a step of an exotic optimizer)."""
    target = unwrap_model(model)
    state = getattr(target, _STATE_ATTR, None)
    if isinstance(state, HeldMasks):
        zero_masked(state.params(target))


def remove_masks(model: nn.Module) -> ChannelMasks | None:
    """Stop holding masks (weights stay as they are); returns the masks that were held."""
    target = unwrap_model(model)
    state = getattr(target, _STATE_ATTR, None)
    if not isinstance(state, HeldMasks):
        return None
    for handle in state.handles:
        handle.remove()
    delattr(target, _STATE_ATTR)
    return state.masks


def masks_hold(model: nn.Module, atol: float = 0.0) -> bool:
    """True if every held masked entry is (exactly, by default) zero."""
    target = unwrap_model(model)
    state = getattr(target, _STATE_ATTR, None)
    if not isinstance(state, HeldMasks):
        return True
    for param, keep in state.params(target):
        if param.detach()[~keep.to(param.device)].abs().max().item() > atol:
            return False
    return True


def save_masked(model: nn.Module, path: str | Path, **extra: Any) -> Path:
    """Save the masked model's state_dict (unpruned layout) with its masks beside it."""
    target = unwrap_model(model)
    state = getattr(target, _STATE_ATTR, None)
    if not isinstance(state, HeldMasks):
        raise MaskError("the model holds no masks: call lrp.apply_masks first")
    path = Path(path)
    payload = {"state_dict": target.state_dict(), MASKED_CHECKPOINT_KEY: state.masks.state_dict(),
               "mask_bn": state.mask_bn, **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_masked(model: nn.Module, path: str | Path, *, hold: bool = True) -> ChannelMasks:
    """Load a checkpoint from ``save_masked`` into the unpruned ``model`` and hold its masks."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    payload = load_weights_only(path, "masked checkpoint")
    if not isinstance(payload, dict) or MASKED_CHECKPOINT_KEY not in payload:
        raise MaskError(f"{str(path)!r} is not a masked checkpoint written by lrp.save_masked")
    masks = validate_masks(unwrap_model(model), ChannelMasks.from_state_dict(payload[MASKED_CHECKPOINT_KEY]))
    check_state_dict_fits(unwrap_model(model), payload["state_dict"], source=str(path))
    unwrap_model(model).load_state_dict(payload["state_dict"], strict=True)
    return apply_masks(model, masks, mask_bn=bool(payload.get("mask_bn", True)), hold=hold)
