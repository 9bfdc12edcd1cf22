"""The paper's pipeline and its studies, on any ImageSplit.

* ``prune_finetune_reconstruct``: masks (conv + BN) -> fine-tune held -> reconstruct, with the
  paper's ablations (intersection merge, Table 7; BN not masked, Table 8).
* ``order_study``: prune -> fine-tune -> reconstruct against prune -> reconstruct -> fine-tune (Fig. 6).
* ``large_vs_small``: a pruned large network against a smaller one trained as is (Tables 2-3).
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .. import core as lrp
from ..adapters import create_resnet
from .data import ImageSplit
from .recipes import Recipe
from .training import accuracy, predict, train


@dataclass
class VariantResult:
    """One (criterion, variant) row of the paper's tables."""

    criterion: str
    variant: str  # union | intersection | bn_not_masked | bn_not_masked_folded | finetune_then_reconstruct | ...
    masked_accuracy: float | None
    reconstructed_accuracy: float
    identical_predictions: bool | None
    changed_predictions: int | None
    max_rel_error: float | None
    params: int
    macs: int
    finetune_seconds: float
    channels: dict[str, int] = field(default_factory=dict)  # conv name -> output channels

    def to_dict(self) -> dict:
        return asdict(self)


def conv_channels(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def build_classifier(name: str, num_classes: int) -> nn.Module:
    """A timm ResNet with the paper's CIFAR stem (3x3 stride-1 conv, max-pool kept)."""
    return create_resnet(name, num_classes=num_classes, cifar_stem=True)


def train_original(name: str, data: ImageSplit, recipe: Recipe, seed: int, progress: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    model = build_classifier(name, data.num_classes)
    train(model, data, recipe, seed=seed, desc=f"train {name}", progress=progress)
    return model


def _timed_train(model, data, recipe, seed, desc, progress) -> float:
    start = time.perf_counter()
    train(model, data, recipe, seed=seed, desc=desc, progress=progress)
    return time.perf_counter() - start


def prune_finetune_reconstruct(model: nn.Module, data: ImageSplit, criterion: str, ratio: float, finetune: Recipe,
                               seed: int = 0, ablations: bool = True, progress: bool = True,
                               round_to: int | None = None, selection: str = "layer"
                               ) -> tuple[list[VariantResult], nn.Module]:
    """Rows for union (+ ablations) and the union-reconstructed model. ``model`` is not changed.

    BN not masked gives two rows: the paper's Table 8 (constants dropped: lossy) and ours
    (the constants the removed channels emit folded into their consumers: exact)."""
    example = data.test_x[:2]
    masks = lrp.compute_masks(model, example, criterion=criterion, ratio=ratio, selection=selection)
    rows: list[VariantResult] = []
    pruned = None
    for mask_bn in (True, False) if ablations else (True,):
        masked = copy.deepcopy(model)
        lrp.apply_masks(masked, masks, mask_bn=mask_bn)
        seconds = _timed_train(masked, data, finetune, seed, f"fine-tune {criterion}"
                               + ("" if mask_bn else " (BN not masked)"), progress)
        masked_pred = predict(masked, data.test_x)
        variants = [("union", "union", True), ("intersection", "intersection", False)] if mask_bn else \
            [("bn_not_masked", "union", False), ("bn_not_masked_folded", "union", True)]
        for variant, merge, fold in variants if ablations else variants[:1]:
            lossless_expected = merge == "union" and (mask_bn or fold)
            with warnings.catch_warnings():  # the ablations' loss is the result being measured, not a surprise
                warnings.simplefilter("ignore" if not lossless_expected else "default")
                result = lrp.reconstruct(masked, example, merge=merge, strict=lossless_expected, fold_constants=fold,
                                         round_to=round_to)
            pred = predict(result.model, data.test_x)
            rows.append(VariantResult(
                criterion=criterion, variant=variant, masked_accuracy=accuracy(masked_pred, data.test_y),
                reconstructed_accuracy=accuracy(pred, data.test_y),
                identical_predictions=bool(torch.equal(pred, masked_pred)),
                changed_predictions=int((pred != masked_pred).sum()), max_rel_error=result.report.max_rel_error,
                params=result.report.params_after, macs=result.report.macs_after, finetune_seconds=seconds,
                channels=conv_channels(result.model)))
            if variant == "union":
                pruned = result.model
    return rows, pruned


def order_study(model: nn.Module, data: ImageSplit, criterion: str, ratio: float, finetune: Recipe,
                seed: int = 0, progress: bool = True) -> list[VariantResult]:
    """Paper Fig. 6: the same fine-tuning budget before or after reconstruction."""
    example = data.test_x[:2]
    masks = lrp.compute_masks(model, example, criterion=criterion, ratio=ratio)
    rows = []

    masked = copy.deepcopy(model)
    lrp.apply_masks(masked, masks)
    seconds = _timed_train(masked, data, finetune, seed, "fine-tune masked", progress)
    masked_pred = predict(masked, data.test_x)
    result = lrp.reconstruct(masked, example)
    pred = predict(result.model, data.test_x)
    rows.append(VariantResult(criterion, "finetune_then_reconstruct", accuracy(masked_pred, data.test_y),
                              accuracy(pred, data.test_y), bool(torch.equal(pred, masked_pred)),
                              int((pred != masked_pred).sum()), result.report.max_rel_error,
                              result.report.params_after, result.report.macs_after, seconds,
                              conv_channels(result.model)))

    first = lrp.reconstruct(model, example, masks=masks)  # masks applied to a copy, BN masked
    small = first.model
    seconds = _timed_train(small, data, finetune, seed, "fine-tune reconstructed", progress)
    pred = predict(small, data.test_x)
    rows.append(VariantResult(criterion, "reconstruct_then_finetune", None, accuracy(pred, data.test_y), None, None,
                              first.report.max_rel_error, first.report.params_after, first.report.macs_after,
                              seconds, conv_channels(small)))
    return rows


def large_vs_small(data: ImageSplit, large: str, small: str, ratio: float, criterion: str, original: Recipe,
                   finetune: Recipe, seed: int = 0, progress: bool = True) -> dict:
    """A pruned ``large`` network against ``small`` trained as is, with accuracy and MACs of each."""
    example = data.test_x[:2]
    out = {}
    big = train_original(large, data, original, seed, progress)
    small_model = train_original(small, data, original, seed, progress)
    for name, model in ((large, big), (small, small_model)):
        macs, params = lrp.count_macs_params(model, example)
        out[name] = {"accuracy": accuracy(predict(model, data.test_x), data.test_y), "macs": macs, "params": params}
    rows, _ = prune_finetune_reconstruct(big, data, criterion, ratio, finetune, seed, ablations=False,
                                         progress=progress)
    out[f"{large} pruned {criterion} CR {ratio}"] = {"accuracy": rows[0].reconstructed_accuracy,
                                                       "macs": rows[0].macs, "params": rows[0].params}
    return out
