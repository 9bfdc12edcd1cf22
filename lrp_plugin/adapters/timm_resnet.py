"""timm ResNets (resnet18/34/50/101 and variants with the same graph).

Adds the paper's CIFAR variant: a 3x3 stride-1 stem conv for 32x32 inputs with the
max-pool kept, which is what the paper's MFLOPs figures count.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnknownModelError
from ..extras import require
from .base import Adapter, register_adapter

PAPER_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def _timm():
    return require("timm", "timm")


def create_resnet(name: str = "resnet50", num_classes: int = 1000, *, cifar_stem: bool = False,
                  **kwargs) -> nn.Module:
    """A randomly initialised timm ResNet; ``cifar_stem=True`` gives the paper's CIFAR variant."""
    timm = _timm()
    if not isinstance(name, str) or not name.startswith("resnet") or name not in timm.list_models("resnet*"):
        raise UnknownModelError(
            f"unknown timm ResNet {name!r}: use one of {', '.join(PAPER_RESNETS)} (or another name from "
            "timm.list_models('resnet*'))"
        )
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if cifar_stem:
        if not isinstance(model.conv1, nn.Conv2d):
            raise UnknownModelError(f"{name} has a deep stem; the CIFAR stem applies to plain-stem ResNets")
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(3, 32, 32))
    return model


def is_timm_resnet(model: nn.Module) -> bool:
    try:
        from timm.models.resnet import ResNet
    except ImportError:
        return False
    return isinstance(model, ResNet)


def example_inputs(model: nn.Module, batch_size: int = 1, image_size: int | None = None) -> torch.Tensor:
    """A random batch at the model's native input size (32x32 for the CIFAR stem)."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    _, height, width = cfg.get("input_size", (3, 224, 224))
    size = (image_size, image_size) if image_size else (height, width)
    return torch.randn(batch_size, 3, *size)


TIMM_RESNET = register_adapter(Adapter(
    name="timm-resnet",
    matches=is_timm_resnet,
    example_inputs=example_inputs,
    ignored_layers=lambda model: ["fc"],
))
