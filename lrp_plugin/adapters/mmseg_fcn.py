"""The paper's MMSegmentation FCN (ResNetV1c-101/50, VOC 2012 aug): config names and a builder only.

FCN is pruned through the generic ``mmseg-segmentor`` adapter (``mmseg_segmentor.py``), which
traces the decode head and the auxiliary head; this module adds only the paper's stock configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .mmseg_segmentor import build_segmentor

FCN_R101_CONFIG = "fcn/fcn_r101-d8_4xb4-40k_voc12aug-512x512.py"
FCN_R50_CONFIG = "fcn/fcn_r50-d8_4xb4-40k_voc12aug-512x512.py"


def build_fcn(config: str | Path | Any = FCN_R101_CONFIG, num_classes: int | None = None,
              sync_bn_to_bn: bool = True) -> nn.Module:
    """A randomly initialised FCN from a stock (or any) mmseg config, in eval mode (SyncBN reverted)."""
    return build_segmentor(config, num_classes, sync_bn_to_bn)
