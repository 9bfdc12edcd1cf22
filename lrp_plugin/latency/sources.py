"""Turn model arguments into models to time: ``timm:NAME`` (+ its pruned counterpart), a pruned file, an ONNX file.

Why random weights are fine: latency depends on shapes, not on values; BatchNorm is randomized
so a pruned counterpart built in-process goes through the same verified reconstruction as a
trained model would.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import LRPError
from .errors import InputShapeError, ModelSourceError


@dataclass
class ModelEntry:
    """One model to time. ``module`` is None for an ONNX file given as is."""

    name: str
    source: str
    module: nn.Module | None = None
    onnx_path: Path | None = None
    params: int | None = None
    macs: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def create_timm(name: str, num_classes: int, seed: int) -> nn.Module:
    """A randomly initialised timm model in eval mode with randomized BatchNorm."""
    try:
        import timm
    except ImportError as exc:
        raise ModelSourceError(f"timm:{name} needs timm: pip install 'lrp_plugin[timm]'") from exc
    from ..testing import randomize_batchnorm

    if name not in timm.list_models():
        raise ModelSourceError(f"timm has no model {name!r}: see timm.list_models() (e.g. timm:resnet50)")
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    return randomize_batchnorm(model, seed=seed).eval()


def prune_in_process(model: nn.Module, x: torch.Tensor, ratio: float, criterion: str) -> nn.Module:
    """compute_masks -> apply_masks -> reconstruct on a copy; the original stays untouched."""
    from .. import core as lrp

    masked = copy.deepcopy(model)
    masks = lrp.compute_masks(masked, x, criterion=criterion, ratio=ratio)
    lrp.apply_masks(masked, masks)
    return lrp.reconstruct(masked, x).model.eval()


def _parse_timm(spec: str) -> str | None:
    return spec.split(":", 1)[1] if spec.startswith("timm:") else None


def check_forward(entry: ModelEntry, x: torch.Tensor) -> None:
    """Run the model once so a shape it rejects fails here, with the shape in the message."""
    try:
        with torch.no_grad():
            entry.module(x)
    except (RuntimeError, ValueError, AssertionError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InputShapeError(f"model {entry.name!r} rejects input shape {list(x.shape)}: {first}; fix "
                              "--input-shape (C,H,W) / --batch to what the model takes (e.g. 3,224,224)") from exc


def load_models(specs: list[str], *, base: str | None, x: torch.Tensor, prune_ratio: float | None,
                criterion: str, num_classes: int, seed: int, quiet: bool = False) -> list[ModelEntry]:
    """Resolve every argument; the first entry is the reference (the original) for the ratios."""
    from .. import core as lrp

    entries: list[ModelEntry] = []
    base_added = False
    for spec in specs:
        tname = _parse_timm(spec)
        if tname is not None:
            _log(f"building timm:{tname} (random weights)", quiet)
            model = create_timm(tname, num_classes, seed)
            entry = ModelEntry(tname, spec, module=model)
            check_forward(entry, x)
            entries.append(entry)
            if prune_ratio:
                _log(f"pruning {tname} in-process: {criterion}, ratio {prune_ratio} (compute_masks, apply_masks, "
                     "reconstruct)", quiet)
                try:
                    pruned = prune_in_process(model, x, prune_ratio, criterion)
                except LRPError:  # already names the fix (e.g. UnsupportedLayerError, LosslessError)
                    raise
                except (RuntimeError, ValueError, TypeError) as exc:
                    raise ModelSourceError(f"could not prune timm:{tname} ({exc}); lrp prunes BatchNorm CNNs such "
                                           "as timm ResNets: give another model or a pruned file") from exc
                entries.append(ModelEntry(f"{tname}-{criterion}-cr{prune_ratio:g}", f"{spec} pruned", module=pruned,
                                          notes={"prune": {"ratio": prune_ratio, "criterion": criterion}}))
            continue
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelSourceError(f"model file {str(path)!r} does not exist: give a pruned file from "
                                   "lrp.save_pruned (with --base timm:NAME), an .onnx file, or timm:NAME")
        if path.suffix.lower() == ".onnx":
            entries.append(ModelEntry(path.stem, str(path), onnx_path=path))
            continue
        if base is None or _parse_timm(base) is None:
            raise ModelSourceError(f"{path.name} is a pruned file: also give its base model, e.g. "
                                   "--base timm:resnet18 (the architecture it was pruned from)")
        base_model = create_timm(_parse_timm(base), num_classes, seed)
        if not base_added:
            entries.insert(0, ModelEntry(_parse_timm(base), base, module=copy.deepcopy(base_model)))
            base_added = True
        _log(f"loading pruned {path.name} into {base}", quiet)
        try:
            pruned = lrp.load_pruned(base_model, path).eval()
        except LRPError:  # SpecMismatchError names the fix (wrong --base, not a save_pruned file)
            raise
        except Exception as exc:  # torch.load raises UnpicklingError, RuntimeError, EOFError ... on a foreign file
            raise ModelSourceError(f"{str(path)!r} is not a pruned model file from lrp.save_pruned "
                                   f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); give such a file "
                                   "with --base, an .onnx file, or timm:NAME") from exc
        entries.append(ModelEntry(path.stem, str(path), module=pruned))
    if not entries:
        raise ModelSourceError("no model given: e.g. timm:resnet18 --prune-ratio 0.5")
    seen: dict[str, int] = {}
    for e in entries:  # unique names: they are keys in the result
        if e.name in seen:
            seen[e.name] += 1
            e.name = f"{e.name}#{seen[e.name]}"
        else:
            seen[e.name] = 1
        if e.module is not None:
            check_forward(e, x)
            macs, params = lrp.count_macs_params(e.module, x)
            e.macs, e.params = int(macs), int(params)
    return entries
