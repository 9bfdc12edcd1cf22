"""Accuracy at equal cost: layer vs group selection, and Torch-Pruning's own group pruning as the yardstick.

Rows (each fine-tuned with the same recipe): ``group`` at the study's CR; ``layer`` and ``group`` at
``target_macs`` (masks held while fine-tuning, then the lossless rebuild: ``changed_predictions``
compares the rebuild with the masked model); ``tp_group_magnitude``: Torch-Pruning's ``MetaPruner`` +
``GroupMagnitudeImportance(p=1)`` at the same MACs (uniform ratio searched the same way), pruned
physically, then fine-tuned (no masked model: nothing to compare its predictions with).
"""

from __future__ import annotations

import copy
import time

import torch
import torch_pruning as tp
from torch import nn

from .. import core as lrp
from ..core.selection import MACS_TOLERANCE
from .data import ImageSplit
from .pipeline import VariantResult, conv_channels
from .recipes import Recipe
from .training import accuracy, predict, train


def _held_row(net: nn.Module, data: ImageSplit, criterion: str, variant: str, masks: lrp.ChannelMasks,
              finetune: Recipe, seed: int, progress: bool) -> VariantResult:
    example = data.test_x[:2]
    masked = copy.deepcopy(net)
    lrp.apply_masks(masked, masks)
    start = time.perf_counter()
    train(masked, data, finetune, seed=seed, desc=f"fine-tune {criterion} {variant}", progress=progress)
    seconds = time.perf_counter() - start
    masked_pred = predict(masked, data.test_x)
    result = lrp.reconstruct(masked, example)
    pred = predict(result.model, data.test_x)
    return VariantResult(criterion=criterion, variant=variant, masked_accuracy=accuracy(masked_pred, data.test_y),
                         reconstructed_accuracy=accuracy(pred, data.test_y),
                         identical_predictions=bool(torch.equal(pred, masked_pred)),
                         changed_predictions=int((pred != masked_pred).sum()),
                         max_rel_error=result.report.max_rel_error, params=result.report.params_after,
                         macs=result.report.macs_after, finetune_seconds=seconds,
                         channels=conv_channels(result.model))


def tp_group_pruned(net: nn.Module, example: torch.Tensor, target_macs: float) -> nn.Module:
    """Torch-Pruning's MetaPruner + GroupMagnitudeImportance(p=1), its uniform ratio bisected to ``target_macs``."""
    base, _ = lrp.count_macs_params(net, example)

    def pruned(ratio: float) -> tuple[nn.Module, float]:
        model = copy.deepcopy(net).eval()
        ignore = [m for m in model.modules() if isinstance(m, nn.Linear)]  # the classifier, as in our masks
        tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=1),
                             pruning_ratio=ratio, ignored_layers=ignore).step()
        return model, lrp.count_macs_params(model, example)[0] / base

    low, high, best = 0.0, 0.99, None
    for _ in range(20):
        mid = (low + high) / 2
        model, value = pruned(mid)
        if best is None or abs(value - target_macs) < abs(best[1] - target_macs):
            best = (model, value)
        if abs(value - target_macs) <= target_macs * MACS_TOLERANCE / 4:
            break
        low, high = (mid, high) if value > target_macs else (low, mid)
    return best[0]


def selection_rows(net: nn.Module, data: ImageSplit, criterion: str, ratio: float | None, target_macs: float | None,
                   finetune: Recipe, seed: int = 0, progress: bool = True) -> list[VariantResult]:
    """``group`` at ``ratio`` (None: no such row); with ``target_macs``: ``layer``/``group`` and Torch-Pruning's
    group pruning there."""
    example = data.test_x[:2]
    rows = [] if ratio is None else [_held_row(net, data, criterion, "group", lrp.compute_masks(
        net, example, criterion, ratio, selection="group"), finetune, seed, progress)]
    if target_macs is None:
        return rows
    for selection in ("layer", "group"):
        masks = lrp.compute_masks(net, example, criterion, selection=selection, target_macs=target_macs)
        rows.append(_held_row(net, data, criterion, f"{selection}@macs{target_macs:g}", masks, finetune, seed,
                              progress))
    model = tp_group_pruned(net, example, target_macs)
    start = time.perf_counter()
    train(model, data, finetune, seed=seed, desc=f"fine-tune Torch-Pruning @macs{target_macs:g}", progress=progress)
    seconds = time.perf_counter() - start
    macs, params = lrp.count_macs_params(model, example)
    rows.append(VariantResult(criterion="tp-group-magnitude-p1", variant=f"tp_group@macs{target_macs:g}",
                              masked_accuracy=None,
                              reconstructed_accuracy=accuracy(predict(model, data.test_x), data.test_y),
                              identical_predictions=None, changed_predictions=None, max_rel_error=None,
                              params=params, macs=macs, finetune_seconds=seconds, channels=conv_channels(model)))
    return rows
