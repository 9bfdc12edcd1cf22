"""MMSegmentation 1.x FCN (and any EncoderDecoder) on ResNetV1c backbones.

The tensor-only forward returns the decode head's logits AND the auxiliary head's: the
auxiliary head is not part of ``_forward``, but it is trained, so its channels must be
traced (and checked) like the rest. ``conv_seg`` convs are output-bound, never pruned.
SyncBN is reverted to mmengine's ``_BatchNormXd`` (a ``_BatchNorm``) for tracing.
mmseg is imported only inside functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import Adapter, register_adapter
from .openmmlab import build_in_scope, model_config, revert_sync_batchnorm

FCN_R101_CONFIG = "fcn/fcn_r101-d8_4xb4-40k_voc12aug-512x512.py"
FCN_R50_CONFIG = "fcn/fcn_r50-d8_4xb4-40k_voc12aug-512x512.py"


def build_fcn(config: str | Path | Any = FCN_R101_CONFIG, num_classes: int | None = None,
              sync_bn_to_bn: bool = True) -> nn.Module:
    """A randomly initialised segmentor from a stock (or any) mmseg config, in eval mode.

    Stock configs use SyncBN, which needs a process group to train; ``sync_bn_to_bn``
    reverts it to BN after building (what the adapter's ``prepare`` does too).
    """
    model_cfg = model_config("mmseg", config)
    if num_classes is not None:
        for head in ("decode_head", "auxiliary_head"):
            heads = model_cfg.get(head)
            for h in (heads if isinstance(heads, list) else [heads] if heads else []):
                h["num_classes"] = num_classes
    model = build_in_scope("mmseg", model_cfg)
    if sync_bn_to_bn:
        model = revert_sync_batchnorm(model)
    return model.eval()


def is_mmseg_encoder_decoder(model: nn.Module) -> bool:
    """True for mmseg's EncoderDecoder (FCN and friends); non-mmseg models import nothing."""
    if not type(model).__module__.startswith("mmseg."):
        return False
    from mmseg.models.segmentors import EncoderDecoder

    return isinstance(model, EncoderDecoder)


def _aux_heads(model: nn.Module) -> list[nn.Module]:
    aux = getattr(model, "auxiliary_head", None)
    if aux is None:
        return []
    return list(aux) if isinstance(aux, nn.ModuleList) else [aux]


def forward_tensors(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(decode logits, auxiliary logits...): every head that is trained, from one backbone pass."""
    feats = model.extract_feat(inputs)
    return (model.decode_head.forward(feats), *(head.forward(feats) for head in _aux_heads(model)))


def example_inputs(model: nn.Module, batch_size: int = 1, image_size: int = 64) -> torch.Tensor:
    """A small random batch: FCN is fully convolutional, any size divisible by 8 traces the same graph."""
    return torch.randn(batch_size, 3, image_size, image_size)


def ignored_layers(model: nn.Module) -> list[str]:
    """Every head's ``conv_seg`` (one channel per class)."""
    names = []
    for name, module in model.named_modules():
        if name.endswith("conv_seg") and isinstance(module, nn.Conv2d):
            names.append(name)
    return names


MMSEG_ENCODER_DECODER = register_adapter(Adapter(
    name="mmseg-encoder-decoder",
    matches=is_mmseg_encoder_decoder,
    example_inputs=example_inputs,
    ignored_layers=ignored_layers,
    forward_fn=forward_tensors,
    prepare=revert_sync_batchnorm,
))
