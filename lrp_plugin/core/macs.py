"""MACs a rebuild *would* have, from the masks and the group plans, without rebuilding.

One counted forward (the report's counter, layer by layer) and one traced forward (which layer
reads which layer's channels, through adds, concats and activations) are made once; afterwards
each candidate set of masks costs only the group plans (``plan_group``: union, never-empty,
grouped-conv balance, ``round_to``) and a sum. This lets ``target_macs`` bisect on the ratio.

Each counted layer scales with the channels it keeps: a conv or linear by kept outputs x kept
inputs (a depthwise conv by its outputs only), every other counted layer (BatchNorm, activation,
pooling, upsampling) by the kept fraction of the channels it reads.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Iterable, Mapping

import torch
import torch_pruning as tp
from torch import nn

from .graph import PRODUCER_TYPES, ForwardFn, preserved_state, run_forward
from .groups import ChannelGroup
from .plan import plan_group


class _ForwardWith(nn.Module):
    """Lets Torch-Pruning's layer-wise counter call models that need a custom forward (mmdet ``_forward``)."""

    def __init__(self, model: nn.Module, forward_fn: ForwardFn | None):
        super().__init__()
        self.model, self.forward_fn = model, forward_fn

    def forward(self, example_inputs: Any) -> Any:
        return run_forward(self.model, example_inputs, self.forward_fn)


class _Layer:
    __slots__ = ("name", "module", "macs", "in_fn", "in_channels", "out_channels")

    def __init__(self, name: str, module: nn.Module, macs: float):
        self.name, self.module, self.macs = name, module, macs
        self.in_fn: Any = None
        self.in_channels = self.out_channels = 0


def _counted_layers(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None) -> tuple[float, list[_Layer]]:
    """(total MACs as the report counts them, the layers the counter counted with their raw MACs)."""
    wrapper = _ForwardWith(model, forward_fn)
    training = model.training
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            total, _, per_layer, _ = tp.utils.count_ops_and_params(wrapper, (example_inputs,), layer_wise=True)
    finally:
        model.train(training)
    layers = []
    for name, module in model.named_modules():
        macs = per_layer.get(module)
        children = list(module.children())
        # the counter returns a counted layer's own MACs and a container's as the sum of its children
        if macs is not None and (not children or any(per_layer.get(c) is None for c in children)):
            layers.append(_Layer(name, module, float(macs)))
    return float(total), layers


class PlannedMacs:
    """Predicts ``count_macs_params`` of the rebuilt model for given masks and groups."""

    def __init__(self, model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None = None):
        self.total, self.layers = _counted_layers(model, example_inputs, forward_fn)
        self._producer_of: dict[Any, _Layer] = {}
        self._roots: dict[int, torch.Tensor] = {}  # member -> its root indices as a tensor (members live as long)
        self._trace(model, example_inputs, forward_fn)

    def _trace(self, model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None) -> None:
        handles = []

        def pre(layer: _Layer):
            def hook(module, args):
                x = args[0] if args and isinstance(args[0], torch.Tensor) else None
                if x is not None and layer.in_fn is None:
                    layer.in_fn = x.grad_fn  # before an in-place op replaces it
                    layer.in_channels = int(x.shape[-1] if isinstance(module, nn.Linear) else
                                            (x.shape[1] if x.dim() > 1 else 0))
            return hook

        def post(layer: _Layer):
            def hook(module, args, out):
                if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                    self._producer_of[out.grad_fn] = layer
                    layer.out_channels = int(out.shape[-1] if isinstance(module, nn.Linear) else
                                             (out.shape[1] if out.dim() > 1 else 0))
            return hook

        for layer in self.layers:
            handles.append(layer.module.register_forward_pre_hook(pre(layer)))
            handles.append(layer.module.register_forward_hook(post(layer)))
        try:
            with preserved_state(model):
                run_forward(model, example_inputs, forward_fn)
        finally:
            for handle in handles:
                handle.remove()

    def planned(self, groups: Iterable[ChannelGroup], masks: Mapping[str, torch.Tensor], output_layers: set[str],
                round_to: int | None = None) -> float:
        """MACs of the rebuild of ``masks`` (union merge), as the report would count them."""
        kept_out: dict[str, int] = {}
        removed_in: dict[str, int] = {}
        for group in groups:
            keep = plan_group(group, masks, output_layers, "union", round_to).keep
            if bool(keep.all()):
                continue
            for member in group.producers:
                if member.name is not None:
                    gone = self._removed(member, keep)
                    kept_out[member.name] = kept_out.get(member.name, _channels(member.module)) - gone
            for member in group.consumers:
                if member.name is not None:
                    removed_in[member.name] = removed_in.get(member.name, 0) + self._removed(member, keep)
        memo: dict[Any, tuple[float, float] | None] = {}
        raw = scaled = 0.0
        for layer in self.layers:
            raw += layer.macs
            scaled += layer.macs * self._scale(layer, kept_out, removed_in, memo)
        return self.total * scaled / raw if raw else self.total

    def _removed(self, member: Any, keep: torch.Tensor) -> int:
        roots = self._roots.get(id(member))
        if roots is None:
            roots = self._roots[id(member)] = torch.as_tensor(member.root_idxs, dtype=torch.long)
        return int((~keep[roots]).sum())

    def _scale(self, layer: _Layer, kept_out: dict[str, int], removed_in: dict[str, int], memo: dict) -> float:
        module = layer.module
        if isinstance(module, PRODUCER_TYPES):
            out = _channels(module)
            out_frac = kept_out.get(layer.name, out) / out if out else 1.0
            if _depthwise(module):
                return out_frac
            inputs = _in_channels(module)
            in_frac = (inputs - removed_in.get(layer.name, 0)) / inputs if inputs else 1.0
            return _bias_share(module) * out_frac + (1 - _bias_share(module)) * out_frac * in_frac
        seen = self._fraction(layer.in_fn, kept_out, memo)
        return seen[0] / seen[1] if seen and seen[1] else 1.0

    def _fraction(self, fn: Any, kept_out: dict[str, int], memo: dict) -> tuple[float, float] | None:
        """(kept, total) channels of the tensor ``fn`` made, following adds, activations and concats
        back to the layers that made them (None: not traceable, counted as kept)."""
        if fn is None:
            return None
        if fn in memo:
            return memo[fn]
        memo[fn] = None  # cycles cannot occur in autograd; this only guards re-entry
        layer = self._producer_of.get(fn)
        result: tuple[float, float] | None
        if layer is not None and isinstance(layer.module, PRODUCER_TYPES):
            out = layer.out_channels or _channels(layer.module)
            result = (float(kept_out.get(layer.name, out)), float(out))
        elif layer is not None:
            result = self._fraction(layer.in_fn, kept_out, memo)
        else:
            sources = [f for f, _ in fn.next_functions if f is not None and type(f).__name__ != "AccumulateGrad"]
            if fn.name().startswith("CatBackward") and getattr(fn, "_saved_dim", 1) in (1, -3):
                parts = [self._fraction(f, kept_out, memo) for f in sources]
                result = None if any(p is None for p in parts) else (
                    sum(p[0] for p in parts), sum(p[1] for p in parts))
            else:
                result = next((r for r in (self._fraction(f, kept_out, memo) for f in sources) if r is not None), None)
        memo[fn] = result
        return result


def _channels(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    return int(module.out_channels)


def _in_channels(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    return int(module.in_channels)


def _bias_share(module: nn.Module) -> float:
    """The part of a conv's counted MACs that is its bias (one add per output; scales with outputs only)."""
    if getattr(module, "bias", None) is None or not isinstance(module, nn.modules.conv._ConvNd):
        return 0.0
    per_output = module.weight[0].numel()  # in/groups x kernel
    return 1.0 / (per_output + 1)


def _depthwise(module: nn.Module) -> bool:
    return (isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
            and module.groups == module.in_channels == module.out_channels)


def masks_macs(model: nn.Module, example_inputs: Any, groups: list[ChannelGroup], masks: Mapping[str, torch.Tensor],
               output_layers: set[str], round_to: int | None = None, forward_fn: ForwardFn | None = None
               ) -> tuple[float, float]:
    """(planned MACs after the rebuild, MACs before) for one set of masks."""
    planner = PlannedMacs(model, example_inputs, forward_fn)
    return planner.planned(groups, masks, output_layers, round_to), planner.total
