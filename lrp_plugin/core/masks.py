"""Channel masks: the one data type everything turns around.

``ChannelMasks`` maps a module name to a boolean keep-mask over that module's output
channels (True = kept). It also remembers which BatchNorm follows each conv, so the
BN can be masked with it, and how the masks were made.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MaskError
from .checks import load_weights_only
from .files import atomic_path
from .modules import module_names, out_channels

MASKS_FORMAT = "lrp-channel-masks/1"


class ChannelMasks(MutableMapping[str, torch.Tensor]):
    """Keep-masks over output channels keyed by module name (``{"layer1.0.conv1": bool[C]}``)."""

    def __init__(
        self,
        masks: Mapping[str, Any] | None = None,
        *,
        norm_layers: Mapping[str, str] | None = None,
        norm_masks: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ):
        self._masks: dict[str, torch.Tensor] = {}
        self.norm_layers: dict[str, str] = dict(norm_layers or {})  # conv name -> BN right after it
        # BN name -> keep-mask over its channels, for BNs further down that normalize channels every
        # producer masked (DenseNet's pre-activation BNs after a concat)
        self.norm_masks: dict[str, torch.Tensor] = {k: torch.as_tensor(v).bool().clone()
                                                    for k, v in (norm_masks or {}).items()}
        self.meta: dict[str, Any] = dict(meta or {})  # criterion, ratio, source tool ...
        for name, mask in (masks or {}).items():
            self[name] = mask

    # -- mapping protocol ------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __setitem__(self, name: str, mask: Any) -> None:
        tensor = torch.as_tensor(mask).detach().cpu()
        if tensor.dim() != 1:
            raise MaskError(f"mask for {name!r} must be 1-D over output channels, got shape {tuple(tensor.shape)}")
        if tensor.dtype != torch.bool:
            tensor = tensor != 0
        self._masks[str(name)] = tensor.clone()

    def __delitem__(self, name: str) -> None:
        del self._masks[name]
        self.norm_layers.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        kept = sum(int(m.sum()) for m in self._masks.values())
        total = sum(m.numel() for m in self._masks.values())
        return f"ChannelMasks({len(self)} layers, {kept}/{total} channels kept, meta={self.meta})"

    # -- queries ---------------------------------------------------------------------
    def masked_channels(self) -> dict[str, int]:
        return {name: int((~m).sum()) for name, m in self._masks.items()}

    def copy(self) -> ChannelMasks:
        return ChannelMasks(self._masks, norm_layers=self.norm_layers, norm_masks=self.norm_masks, meta=self.meta)

    # -- serialisation: plain tensors / JSON ------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and strings; loads with ``torch.load(weights_only=True)``."""
        return {
            "format": MASKS_FORMAT,
            "masks": {k: v.clone() for k, v in self._masks.items()},
            "norm_layers": dict(self.norm_layers),
            "norm_masks": {k: v.clone() for k, v in self.norm_masks.items()},
            "meta": json.loads(json.dumps(self.meta, default=str)),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ChannelMasks:
        if not isinstance(state, Mapping) or state.get("format") != MASKS_FORMAT:
            raise MaskError(f"not an lrp_plugin mask file (expected format {MASKS_FORMAT!r})")
        return cls(state["masks"], norm_layers=state.get("norm_layers"), norm_masks=state.get("norm_masks"),
                   meta=state.get("meta"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: masks as lists of 0/1."""
        state = self.state_dict()
        state["masks"] = {k: v.to(torch.int8).tolist() for k, v in self._masks.items()}
        state["norm_masks"] = {k: v.to(torch.int8).tolist() for k, v in self.norm_masks.items()}
        return state

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelMasks:
        return cls.from_state_dict(data)

    def save(self, path: str | Path) -> Path:
        """``.json`` writes JSON; anything else a torch file of plain tensors."""
        path = Path(path)
        with atomic_path(path) as tmp:
            if path.suffix == ".json":
                tmp.write_text(json.dumps(self.to_dict()))
            else:
                torch.save(self.state_dict(), tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ChannelMasks:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"mask file {str(path)!r} does not exist")
        if path.suffix == ".json":
            return cls.from_dict(json.loads(path.read_text()))
        return cls.from_state_dict(load_weights_only(path, "mask file"))


def validate_masks(model: nn.Module, masks: Mapping[str, Any]) -> ChannelMasks:
    """Check every mask names a conv/linear of ``model`` and has one entry per output channel."""
    masks = masks if isinstance(masks, ChannelMasks) else ChannelMasks(masks)
    modules = dict(model.named_modules())
    problems = []
    for name, keep in masks.items():
        module = modules.get(name)
        if module is None:
            close = [n for n in modules if n.endswith(name) or name.endswith(n)][:3] if name else []
            hint = f" (did you mean {close}?)" if close else ""
            problems.append(f"{name!r} is not a module of the model{hint}")
            continue
        channels = out_channels(module)
        if channels is None:
            problems.append(f"{name!r} is a {type(module).__name__}; masks apply to conv/linear output channels")
        elif keep.numel() != channels:
            problems.append(f"{name!r} has {channels} output channels but its mask has {keep.numel()}")
    for conv, bn in masks.norm_layers.items():
        if conv in masks and not isinstance(modules.get(bn), nn.modules.batchnorm._BatchNorm):
            problems.append(f"norm layer {bn!r} recorded for {conv!r} is not a BatchNorm of the model")
    for bn, keep in masks.norm_masks.items():
        module = modules.get(bn)
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module.num_features != keep.numel():
            problems.append(f"norm mask for {bn!r} does not fit a BatchNorm of the model")
    if problems:
        raise MaskError(
            "masks do not fit the model: " + "; ".join(problems)
            + ". Compute masks on this architecture (lrp.compute_masks) or fix the names/lengths."
        )
    return masks


def resolve_ignored(model: nn.Module, ignored_layers: Iterable[Any] | None) -> set[str]:
    """Names of ignored modules (and all their children) from modules or names."""
    if not ignored_layers:
        return set()
    names = module_names(model)
    roots = []
    for item in ignored_layers:
        if isinstance(item, nn.Module):
            if item not in names:
                raise MaskError(f"ignored layer {type(item).__name__} is not a submodule of the model")
            roots.append(names[item])
        elif isinstance(item, str):
            if item not in dict(model.named_modules()):
                raise MaskError(f"ignored layer {item!r} is not a module of the model")
            roots.append(item)
        else:
            raise MaskError(f"ignored_layers takes modules or module names, got {type(item).__name__}")
    return {n for n in names.values() for r in roots if n == r or n.startswith(r + ".") or r == ""}
