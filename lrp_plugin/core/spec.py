"""Save a pruned model as weights + channel spec; load it by shrinking a fresh base model.

The spec records, for every module that has channel attributes, those attributes, and
for every parameter and buffer its shape. Loading replaces the base model's tensors
by empty ones of the recorded shapes, sets the attributes, and loads the weights with
``weights_only=True`` and strict keys, so a spec that does not fit is an error, never
a silent partial load.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import SpecMismatchError
from .checks import check_state_dict_fits, load_weights_only
from .files import atomic_path, write_text

SPEC_FORMAT = "lrp-channel-spec/1"
ORIGINAL_SHAPES_ATTR = "_lrp_original_shapes"  # set by reconstruct: tensor shapes before pruning
_CHANNEL_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "in_features", "out_features",
                  "num_channels", "normalized_shape", "num_parameters")


def channel_spec(model: nn.Module) -> dict[str, Any]:
    """Channel attributes per module and the shape of every parameter and buffer."""
    modules = {}
    for name, module in all_named_modules(model).items():
        attrs = {a: _plain(getattr(module, a)) for a in _CHANNEL_ATTRS if hasattr(module, a)}
        if attrs:
            modules[name] = {"type": type(module).__name__, **attrs}
    tensors = tensor_shapes(model)
    return {"format": SPEC_FORMAT, "modules": modules, "tensors": tensors,
            "original_tensors": getattr(model, ORIGINAL_SHAPES_ATTR, None)}


def tensor_shapes(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def adopt_shapes(dst: nn.Module, src: nn.Module) -> nn.Module:
    """Give ``dst`` (in place) the channel attributes, parameters and buffers of ``src``, a rebuilt
    copy of it: the modules stay the caller's objects, only their tensors and counts change."""
    sources = dict(src.named_modules())
    for name, module in dst.named_modules():
        other = sources.get(name)
        if other is None:
            continue
        for attr in _CHANNEL_ATTRS:
            if hasattr(other, attr) and hasattr(module, attr):
                setattr(module, attr, getattr(other, attr))
        for key, param in other._parameters.items():
            module._parameters[key] = param
        for key, buffer in other._buffers.items():
            module._buffers[key] = buffer
    if hasattr(src, ORIGINAL_SHAPES_ATTR):
        setattr(dst, ORIGINAL_SHAPES_ATTR, getattr(src, ORIGINAL_SHAPES_ATTR))
    return dst


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def save_pruned(model: nn.Module, path: str | Path, *, extra: Mapping[str, Any] | None = None,
                base_model: nn.Module | None = None) -> Path:
    """Write ``path`` (weights + spec, loadable with weights_only=True) and ``path.spec.json``.

    The file is read back through the loader before it gets its name: into ``base_model``
    (a fresh unpruned model) when given, else against the pruned model itself, so a file
    that would not load is refused when written, never when a teammate loads it.
    """
    path = Path(path)
    spec = channel_spec(model)
    payload = {"format": SPEC_FORMAT, "spec_json": json.dumps(spec), "state_dict": model.state_dict(),
               **dict(extra or {})}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
        check_reloads(tmp, model if base_model is None else base_model)
    write_text(path.with_name(path.name + ".spec.json"), json.dumps(spec, indent=1))
    return path


def check_reloads(path: str | Path, base_model: nn.Module) -> None:
    """Load a just-written ``save_pruned`` file into a copy of ``base_model``; SpecMismatchError if it would not."""
    spec, state_dict = read_pruned(path)
    check_loads(base_model, spec, state_dict, source=str(path))


def check_loads(base_model: nn.Module, spec: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], *,
                source: str) -> None:
    """Shrink a copy of ``base_model`` (the unpruned model, or the pruned one itself, whose origin
    check is then skipped) to ``spec`` and load ``state_dict`` strictly, as every loader does."""
    try:
        model = _shrink(base_model, spec, inplace=False, check_origin=not hasattr(base_model, ORIGINAL_SHAPES_ATTR))
        check_state_dict_fits(model, state_dict, source=source)
        model.load_state_dict(state_dict, strict=True)
    except (SpecMismatchError, KeyError, RuntimeError) as exc:
        raise SpecMismatchError(f"the pruned model written to {source!r} would not load back "
                                f"({type(exc).__name__}: {exc}); nothing was written") from exc


def read_pruned(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(spec, state_dict) from a file written by ``save_pruned``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pruned model file {str(path)!r} does not exist")
    payload = load_weights_only(path, "pruned model file")
    if not isinstance(payload, dict) or payload.get("format") != SPEC_FORMAT:
        raise SpecMismatchError(f"{str(path)!r} was not written by lrp.save_pruned (no {SPEC_FORMAT} spec)")
    return json.loads(payload["spec_json"]), payload["state_dict"]


def shrink_to_spec(model: nn.Module, spec: Mapping[str, Any], *, inplace: bool = False) -> nn.Module:
    """Give ``model`` the channel counts of ``spec`` (weights left uninitialised)."""
    return _shrink(model, spec, inplace=inplace, check_origin=True)


def all_named_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every name a module is reachable under: a module shared under two names (an alias, RTMDet's
    ``share_conv``) appears under both, as its tensors do in ``state_dict()``."""
    return dict(model.named_modules(remove_duplicate=False))


def _shrink(model: nn.Module, spec: Mapping[str, Any], *, inplace: bool, check_origin: bool) -> nn.Module:
    _check_spec(model, spec, check_origin=check_origin)
    model = model if inplace else copy.deepcopy(model)
    modules = all_named_modules(model)
    for name, attrs in spec["modules"].items():
        module = modules[name]
        for attr, value in attrs.items():
            if attr != "type" and hasattr(module, attr):
                setattr(module, attr, tuple(value) if isinstance(value, list) else value)
    for key, shape in spec["tensors"].items():
        owner_name, _, leaf = key.rpartition(".")
        owner = modules[owner_name]
        current = getattr(owner, leaf)
        if current is None:  # a bias the rebuild added to absorb folded constants
            ref = next(owner.parameters(), None)
            fresh = torch.empty(shape, dtype=ref.dtype if ref is not None else torch.float32)
            setattr(owner, leaf, nn.Parameter(fresh, requires_grad=ref.requires_grad if ref is not None else True))
            continue
        if list(current.shape) == list(shape):
            continue
        fresh = torch.empty(shape, dtype=current.dtype, device=current.device)
        if isinstance(current, nn.Parameter):
            setattr(owner, leaf, nn.Parameter(fresh, requires_grad=current.requires_grad))
        else:
            owner.register_buffer(leaf, fresh, persistent=leaf not in owner._non_persistent_buffers_set)
    return model


def _check_spec(model: nn.Module, spec: Mapping[str, Any], *, check_origin: bool = True) -> None:
    if not isinstance(spec, Mapping) or spec.get("format") != SPEC_FORMAT:
        raise SpecMismatchError(f"not an lrp channel spec (expected format {SPEC_FORMAT!r})")
    modules = all_named_modules(model)
    own = model.state_dict()
    problems = []
    for name, attrs in spec["modules"].items():
        module = modules.get(name)
        if module is None:
            problems.append(f"module {name!r} is not in the base model")
        elif type(module).__name__ != attrs.get("type"):
            problems.append(f"{name!r} is a {type(module).__name__} in the base model, {attrs.get('type')} in the spec")
    missing = sorted(set(own) - set(spec["tensors"]))
    extra = sorted(k for k in set(spec["tensors"]) - set(own) if not _added_bias(modules, k))
    if missing:
        problems.append(f"base model tensors absent from the spec: {missing[:5]}")
    if extra:
        problems.append(f"spec tensors absent from the base model: {extra[:5]}")
    for key, shape in spec["tensors"].items():
        if key in own and (len(shape) != own[key].dim() or any(s > o for s, o in zip(shape, own[key].shape))):
            problems.append(f"{key}: spec {shape} does not shrink base {list(own[key].shape)}")
    original = (spec.get("original_tensors") or {}) if check_origin else {}
    for key, shape in original.items():  # the architecture the pruned model was cut from
        if key in own and list(own[key].shape) != list(shape):
            problems.append(f"{key}: base model has {list(own[key].shape)}, the pruned model was cut from {shape}")
    if problems:
        raise SpecMismatchError(
            "the channel spec does not fit the base model: " + "; ".join(problems[:8])
            + ". Build the base model exactly as the pruned one was built (same name, classes, stem)."
        )


def _added_bias(modules: Mapping[str, nn.Module], key: str) -> bool:
    """A tensor the base model declares but leaves empty (``bias=False``): a rebuild may add it."""
    owner, _, leaf = key.rpartition(".")
    module = modules.get(owner)
    return module is not None and leaf in module._parameters and module._parameters[leaf] is None


def load_pruned(base_model: nn.Module, path: str | Path, *, inplace: bool = False) -> nn.Module:
    """Shrink a fresh ``base_model`` to the saved spec and load the pruned weights (strict)."""
    spec, state_dict = read_pruned(path)
    model = shrink_to_spec(base_model, spec, inplace=inplace)
    check_state_dict_fits(model, state_dict, source=str(path))
    model.load_state_dict(state_dict, strict=True)
    return model
