"""Small module helpers every layer needs: unwrap a training wrapper, name modules, count channels,
keep memory formats, randomize BatchNorms (random-weight models whose BN effects must show)."""

from __future__ import annotations

import sys

import torch
from torch import nn

_TORCH_WRAPPERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP, DataParallel, ``torch.compile`` or an MMEngine model wrapper (any nesting).

    MMEngine is consulted only when it is already imported: a model cannot be wrapped by
    an MMEngine wrapper otherwise, and the core must not import optional libraries.
    """
    while True:
        if isinstance(model, _TORCH_WRAPPERS):
            model = model.module
            continue
        compiled = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule keeps the eager module here
        if isinstance(compiled, nn.Module):
            model = compiled
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


_LAST_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


def memory_formats(model: nn.Module) -> dict[str, torch.memory_format]:
    """Parameters and buffers stored channels-last (``model.to(memory_format=torch.channels_last)``), by name;
    tensors whose layout is the same either way (1x1 kernels) are left out."""
    formats = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        fmt = _LAST_FORMATS.get(tensor.dim())
        if fmt is not None and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=fmt):
            formats[name] = fmt
    return formats


@torch.no_grad()
def restore_memory_formats(model: nn.Module, formats: dict[str, torch.memory_format]) -> None:
    """Give the named tensors their recorded memory format again (pruning makes new, contiguous ones)."""
    for name, fmt in formats.items():
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        tensor = getattr(owner, attr)
        if tensor.is_contiguous(memory_format=fmt):
            continue
        if isinstance(tensor, nn.Parameter):
            tensor.data = tensor.data.contiguous(memory_format=fmt)  # the same Parameter object, new layout
        else:
            setattr(owner, attr, tensor.contiguous(memory_format=fmt))


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running stats and affine params in every BatchNorm, so a removed channel that
    still emits ``beta - gamma*mean/std`` shows up as an output error."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            if module.running_mean is not None:
                module.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
                module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            if module.weight is not None:
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model
