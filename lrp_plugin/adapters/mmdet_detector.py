"""Any MMDetection 3.x detector with a convolutional head: single-stage (RTMDet, YOLOX, YOLOv3,
RetinaNet, SSD, FCOS, ...) and two-stage (Faster/Mask R-CNN, Cascade R-CNN, ...).

The tensor-only forward is the detector's raw head outputs, without post-processing:

* single-stage: ``bbox_head(extract_feat(x))``, every level's class/box/objectness maps;
* two-stage: the RPN head's maps and the RoI head's outputs on FIXED proposals (a few boxes of
  every FPN level's size, centred on the image). The RPN's own proposals come from NMS, which
  depends on the weights; fixed ones make the traced graph the same before and after pruning,
  so the rebuild can be checked output for output.

Prediction layers (class/box/objectness/mask convs) are never named here: they are the layers
whose channels reach a model output, found by tracing (``lrp.core.graph.probe_model``), so
per-level heads and heads whose convs are shared between levels (RTMDet's ``share_conv``) need
nothing special. DETR-like detectors (``DetectionTransformer``) are refused: their channels
live in attention projections, which channel pruning does not rebuild.
mmdet is imported only inside functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.graph import probe_model
from ..errors import InvalidArgumentError, UnknownModelError
from .base import Adapter, register_adapter
from .openmmlab import build_in_scope, model_config, revert_sync_batchnorm

DEFAULT_SIZE = 320  # a multiple of every stock detector's output stride (32) and small enough to trace fast
# one box per level a stock RoI extractor maps to (finest_scale 56: <112, <224, <448, >=448 px)
PROPOSAL_SIDES = (64, 160, 320, 640)


def build_detector(config: str | Path | Any, num_classes: int | None = None) -> nn.Module:
    """A randomly initialised detector from a stock config name (``'rtmdet/rtmdet_tiny_8xb32-300e_coco.py'``),
    a config path, a loaded Config or a model dict, in eval mode; ``num_classes`` replaces every head's."""
    model_cfg = model_config("mmdet", config)
    model_cfg.get("backbone", {}).pop("init_cfg", None)  # stock configs download ImageNet weights
    if num_classes is not None:
        set_num_classes(model_cfg, num_classes)
    return build_in_scope("mmdet", model_cfg)


def set_num_classes(cfg: Any, num_classes: int) -> None:
    """Every ``num_classes`` key in a model config (bbox_head, roi_head.bbox_head, mask_head...)."""
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            if key == "num_classes":
                cfg[key] = num_classes
            else:
                set_num_classes(value, num_classes)
    elif isinstance(cfg, (list, tuple)):
        for item in cfg:
            set_num_classes(item, num_classes)


def detector_kind(model: nn.Module) -> str | None:
    """'single-stage', 'two-stage' or None (not an mmdet detector); DETR-like ones are refused."""
    if not type(model).__module__.startswith("mmdet."):
        return None  # non-mmdet models import nothing
    from mmdet.models.detectors import DetectionTransformer, SingleStageDetector, TwoStageDetector

    if isinstance(model, DetectionTransformer):
        raise UnknownModelError(
            f"{type(model).__name__} is a DETR-like detector: its channels live in transformer attention "
            "projections, which lrp_plugin's channel pruning does not rebuild. Use a convolutional detector "
            "(RTMDet, YOLOX, RetinaNet, Faster R-CNN ...), or register your own Adapter for it")
    if isinstance(model, SingleStageDetector) and getattr(model, "bbox_head", None) is not None:
        return "single-stage"
    if isinstance(model, TwoStageDetector):
        return "two-stage"
    return None


def is_mmdet_detector(model: nn.Module) -> bool:
    return detector_kind(model) is not None


def fixed_proposals(inputs: torch.Tensor) -> list:
    """The same boxes for every image: centred squares, one of each RoI level's size (RoIAlign
    samples zeros where a box extends past the image)."""
    from mmengine.structures import InstanceData

    height, width = inputs.shape[-2:]
    cy, cx = height / 2, width / 2
    boxes = torch.tensor([[cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2] for s in PROPOSAL_SIDES],
                         dtype=inputs.dtype, device=inputs.device)
    return [InstanceData(bboxes=boxes.clone()) for _ in range(inputs.shape[0])]


def forward_tensors(model: nn.Module, inputs: torch.Tensor) -> Any:
    """The raw head outputs (see the module docstring): what is trained, without NMS."""
    # a backbone stage that runs but feeds nothing (MobileNetV2's conv2 with out_indices=(2, 4, 6)) is
    # a dead layer: the core finds it by tracing and keeps the layers feeding it whole
    feats = model.extract_feat(inputs)
    if detector_kind(model) == "single-stage":
        return model.bbox_head(feats)
    rpn = model.rpn_head(feats) if model.with_rpn else ()
    return rpn, model.roi_head.forward(feats, fixed_proposals(inputs))


def stride_of(model: nn.Module) -> int:
    """The size an input must be a multiple of: 32, or the data preprocessor's padding divisor if larger."""
    divisor = getattr(getattr(model, "data_preprocessor", None), "pad_size_divisor", None)
    return max(32, int(divisor or 1))


def example_inputs(model: nn.Module, batch_size: int = 1, image_size: int = DEFAULT_SIZE) -> torch.Tensor:
    """A random batch; ``image_size`` must be a multiple of the output stride (32)."""
    stride = stride_of(model)
    if image_size % stride:
        raise InvalidArgumentError(f"{type(model).__name__} needs an input size divisible by {stride}, got "
                                   f"{image_size}: use e.g. {DEFAULT_SIZE} or 128 (input_size in the hook)")
    return torch.randn(batch_size, 3, image_size, image_size)


def output_layers(model: nn.Module) -> list[str]:
    """The prediction layers: those whose channels reach a head output (found by tracing)."""
    x = example_inputs(model, image_size=4 * stride_of(model))
    return sorted(probe_model(model, x, forward_tensors).output_layers)


MMDET_DETECTOR = register_adapter(Adapter(
    name="mmdet-detector",
    matches=is_mmdet_detector,
    example_inputs=example_inputs,
    ignored_layers=output_layers,
    forward_fn=forward_tensors,
    prepare=revert_sync_batchnorm,
))
