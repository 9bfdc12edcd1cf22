"""Small module lookups every layer needs: unwrap a training wrapper, name modules, count channels."""

from __future__ import annotations

import sys

from torch import nn

_TORCH_WRAPPERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP, DataParallel or an MMEngine model wrapper (any nesting).

    MMEngine is consulted only when it is already imported: a model cannot be wrapped by
    an MMEngine wrapper otherwise, and the core must not import optional libraries.
    """
    while True:
        if isinstance(model, _TORCH_WRAPPERS):
            model = model.module
            continue
        mm_model = sys.modules.get("mmengine.model")
        if mm_model is not None and mm_model.is_model_wrapper(model) and hasattr(model, "module"):
            model = model.module
            continue
        return model


def module_names(model: nn.Module) -> dict[nn.Module, str]:
    """Module -> its qualified name in ``model``."""
    return {m: n for n, m in model.named_modules()}


def out_channels(module: nn.Module) -> int | None:
    """Output channels of a conv or linear layer (None for anything else)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    return None
