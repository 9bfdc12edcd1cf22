"""Any MMSegmentation 1.x segmentor with decode heads (EncoderDecoder: FCN, PSPNet, DeepLabV3+,
UNet, BiSeNet ...; CascadeEncoderDecoder: OCRNet ...).

The tensor-only forward returns the decode head's logits AND every auxiliary head's: auxiliary
heads are not part of ``_forward``, but they are trained, so their channels must be traced (and
checked) like the rest. The prediction convs (``conv_seg`` of every head) are not named here:
they are the layers whose channels reach an output, found by tracing. SyncBN is reverted to
mmengine's ``_BatchNormXd`` (a ``_BatchNorm``) for tracing. mmseg is imported only inside functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.graph import probe_model
from .base import Adapter, register_adapter
from .openmmlab import build_in_scope, model_config, revert_sync_batchnorm

DEFAULT_SIZE = 64  # fully convolutional: any multiple of the output stride traces the same graph


def build_segmentor(config: str | Path | Any, num_classes: int | None = None, sync_bn_to_bn: bool = True) -> nn.Module:
    """A randomly initialised segmentor from a stock config name, a path, a Config or a model dict, in eval mode.

    Stock configs use SyncBN, which needs a process group to train; ``sync_bn_to_bn`` reverts it
    to BN after building (what the adapter's ``prepare`` does too).
    """
    model_cfg = model_config("mmseg", config)
    model_cfg.get("backbone", {}).pop("init_cfg", None)  # stock configs download ImageNet weights
    model_cfg.pop("pretrained", None)
    if num_classes is not None:
        for key in ("decode_head", "auxiliary_head"):
            heads = model_cfg.get(key)
            for head in (heads if isinstance(heads, list) else [heads] if heads else []):
                head["num_classes"] = num_classes
    model = build_in_scope("mmseg", model_cfg)
    return (revert_sync_batchnorm(model) if sync_bn_to_bn else model).eval()


def is_mmseg_segmentor(model: nn.Module) -> bool:
    """True for mmseg segmentors with decode heads; non-mmseg models import nothing."""
    if not type(model).__module__.startswith("mmseg."):
        return False
    from mmseg.models.segmentors import BaseSegmentor

    return isinstance(model, BaseSegmentor) and getattr(model, "decode_head", None) is not None


def _heads(module: nn.Module | None) -> list[nn.Module]:
    if module is None:
        return []
    return list(module) if isinstance(module, nn.ModuleList) else [module]


def forward_tensors(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(decode logits..., auxiliary logits...): every trained head, from one backbone pass.

    A cascade (a ModuleList of decode heads) feeds each head the previous one's output.
    """
    feats = model.extract_feat(inputs)
    decode = _heads(model.decode_head)
    outs = [decode[0](feats)]
    for head in decode[1:]:
        outs.append(head(feats, outs[-1]))
    return (*outs, *(head(feats) for head in _heads(getattr(model, "auxiliary_head", None))))


def example_inputs(model: nn.Module, batch_size: int = 1, image_size: int = DEFAULT_SIZE) -> torch.Tensor:
    """A small random batch (multiple of 32 for UNet's and BiSeNet's down/up-sampling)."""
    return torch.randn(batch_size, 3, image_size, image_size)


def output_layers(model: nn.Module) -> list[str]:
    """Every head's prediction conv (``conv_seg``): the layers whose channels reach an output."""
    return sorted(probe_model(model, example_inputs(model), forward_tensors).output_layers)


MMSEG_SEGMENTOR = register_adapter(Adapter(
    name="mmseg-segmentor",
    matches=is_mmseg_segmentor,
    example_inputs=example_inputs,
    ignored_layers=output_layers,
    forward_fn=forward_tensors,
    prepare=revert_sync_batchnorm,
))
