"""MMDetection 3.x YOLOv3 (Darknet-53 and MobileNetV2 backbones).

``model._forward`` is the tensor-only path (``mode='tensor'``): it returns a tuple holding
one tuple of prediction maps, which the core flattens. The prediction convs
(``bbox_head.convs_pred``, anchors x (5 + classes) outputs) are never pruned. mmdet is
imported only inside functions, so importing this module costs nothing without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgumentError
from .base import Adapter, register_adapter
from .openmmlab import build_in_scope, model_config, revert_sync_batchnorm

YOLOV3_D53_CONFIG = "yolo/yolov3_d53_8xb8-ms-416-273e_coco.py"


def build_yolov3(config: str | Path | Any = YOLOV3_D53_CONFIG, num_classes: int | None = 20) -> nn.Module:
    """A randomly initialised YOLOv3 from a stock (or any) mmdet config, in eval mode.

    ``num_classes=20`` gives the paper's VOC head; ``None`` keeps the config's classes.
    """
    model_cfg = model_config("mmdet", config)
    if num_classes is not None:
        model_cfg["bbox_head"]["num_classes"] = num_classes
    return build_in_scope("mmdet", model_cfg)


def is_mmdet_yolov3(model: nn.Module) -> bool:
    """True for mmdet's YOLOV3 detector (checked by module first, so non-mmdet models import nothing)."""
    if not type(model).__module__.startswith("mmdet."):
        return False
    from mmdet.models.detectors import YOLOV3

    return isinstance(model, YOLOV3)


def forward_tensors(model: nn.Module, inputs: torch.Tensor) -> Any:
    """Backbone + neck + head on a batch tensor: what ``mode='tensor'`` runs, without data samples."""
    return model._forward(inputs)


def example_inputs(model: nn.Module, batch_size: int = 1, image_size: int = 416) -> torch.Tensor:
    """A random batch; ``image_size`` must be a multiple of 32 (Darknet's output stride)."""
    if image_size % 32:
        raise InvalidArgumentError(f"YOLOv3 needs an input size divisible by 32, got {image_size}: use e.g. 416 or 128")
    return torch.randn(batch_size, 3, image_size, image_size)


def ignored_layers(model: nn.Module) -> list[str]:
    """The prediction convs: their channels are anchors x (5 + classes)."""
    return [f"bbox_head.convs_pred.{i}" for i in range(len(model.bbox_head.convs_pred))]


MMDET_YOLOV3 = register_adapter(Adapter(
    name="mmdet-yolov3",
    matches=is_mmdet_yolov3,
    example_inputs=example_inputs,
    ignored_layers=ignored_layers,
    forward_fn=forward_tensors,
    prepare=revert_sync_batchnorm,
))
