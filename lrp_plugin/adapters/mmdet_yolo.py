"""The paper's MMDetection YOLOv3 (Darknet-53, 20 VOC classes): a builder only.

YOLOv3 is pruned through the generic ``mmdet-detector`` adapter (``mmdet_detector.py``): its
tensor forward is the head's three prediction maps, and the prediction convs
(``bbox_head.convs_pred``) are kept because tracing finds that they feed the outputs. This module
adds only what the paper's experiments need: the stock config name and a builder with the VOC head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .mmdet_detector import build_detector

YOLOV3_D53_CONFIG = "yolo/yolov3_d53_8xb8-ms-416-273e_coco.py"


def build_yolov3(config: str | Path | Any = YOLOV3_D53_CONFIG, num_classes: int | None = 20) -> nn.Module:
    """A randomly initialised YOLOv3 from a stock (or any) mmdet config, in eval mode.

    ``num_classes=20`` gives the paper's VOC head; ``None`` keeps the config's classes.
    """
    return build_detector(config, num_classes)
