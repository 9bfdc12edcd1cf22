"""What the hook, the export and LRPPruned share about an OpenMMLab model: its adapter, and a
copy that traces without a process group."""

from __future__ import annotations

import copy

from torch import nn

from ...adapters.base import Adapter, find_adapter
from ...adapters.openmmlab import register_installed_scopes
from ...errors import UnknownModelError


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of ``model``, or an UnknownModelError naming how to add one."""
    register_installed_scopes()
    adapter = find_adapter(model)
    if adapter is None:
        raise UnknownModelError(
            f"lrp_plugin has no adapter for {type(model).__module__}.{type(model).__name__}: "
            "LosslessPruningHook supports mmdet single- and two-stage detectors and mmseg segmentors with decode "
            "heads; for another model register one with lrp_plugin.adapters.register_adapter(Adapter(...)) in a "
            "module listed in custom_imports (README: Adapters)")
    return adapter


def trace_copy(model: nn.Module, adapter: Adapter | None) -> nn.Module:
    """SyncBN needs a process group even to trace: trace a reverted copy, same names."""
    if adapter is not None and any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        return adapter.prepare(copy.deepcopy(model))
    return model
