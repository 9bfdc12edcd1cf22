"""L1/L2/FPGM pruners that are NNI pruners, with the BatchNorm after each selected conv masked too."""

from __future__ import annotations

import copy
from typing import Any

import torch
from nni.compression.pruning import FPGMPruner as _NNIFPGMPruner
from nni.compression.pruning import L1NormPruner as _NNIL1NormPruner
from nni.compression.pruning import L2NormPruner as _NNIL2NormPruner
from torch import nn

from ...compat import nni_metric_shrink, nni_set_sparse_ratio, nni_wrapped_param
from ...core import ChannelMasks, compute_masks
from ...core.criteria import criterion_name, get_criterion
from ...core.graph import probe_model
from ...core.selection import check_selection, check_target_macs
from ...errors import MaskError
from .config_lists import check_config_list, selected_modules
from .masks import masks_from_nni


def _criterion_metric(criterion: str):
    score = get_criterion(criterion)

    def reduce_func(blocks: torch.Tensor) -> torch.Tensor:
        rows = blocks.reshape(-1, blocks.shape[-1])  # one row per output filter
        return score(rows).to(blocks.dtype).reshape(blocks.shape[:-1])

    return reduce_func


class _LosslessNormPruner:
    """Mixin over an NNI norm pruner: our per-filter criterion, BN masked with its conv."""

    criterion = "l1"

    def __init__(self, model: nn.Module, config_list: list[dict], evaluator=None, existed_wrappers=None, *,
                 dummy_input: Any = None, mask_bn: bool = True, selection: str = "layer",
                 target_macs: float | None = None, criterion: Any = None):
        selection, target_macs = check_selection(selection), check_target_macs(target_macs)
        self.criterion = self.criterion if criterion is None else criterion_name(criterion)  # a registered name
        converted = check_config_list(model, config_list)
        dummy_input = dummy_input if dummy_input is not None else getattr(evaluator, "dummy_input", None)
        self.mask_bn = mask_bn
        self.norm_layers: dict[str, str] = {}
        extra = []
        if mask_bn:
            if dummy_input is None:
                raise MaskError(
                    f"{type(self).__name__} masks the BatchNorm after each conv and needs to trace the model: pass "
                    "dummy_input=... (or a TorchEvaluator with dummy_input), or mask_bn=False")
            pairs = probe_model(model, dummy_input).norm_after
            for index, config in enumerate(converted):
                for conv in selected_modules(model, config, index):
                    if conv in pairs:
                        self.norm_layers[conv] = pairs[conv]
            extra = [_aligned_bn_config(conv, bn) for conv, bn in sorted(self.norm_layers.items())]
        chosen, ratios = None, {}
        if selection == "group" or target_macs is not None:  # lrp chooses the filters, NNI masks them
            if dummy_input is None:
                raise MaskError(f"{type(self).__name__}(selection={selection!r}, target_macs=...) traces the model: "
                                "pass dummy_input=...")
            ratios = {name: float(config.get("sparse_ratio", config.get("target_settings", {}).get(
                "weight", {}).get("sparse_ratio", 0.0)))
                for index, config in enumerate(converted) for name in selected_modules(model, config, index)}
            ignored = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in ratios]
            # chosen before NNI wraps the model: the MACs search counts a deep copy of the plain model
            chosen = compute_masks(model, dummy_input, self.criterion, None if target_macs else 0.0, ignored,
                                   selection=selection, target_macs=target_macs,
                                   ratio_dict=None if target_macs else ratios)
        super().__init__(model, config_list + extra, evaluator, existed_wrappers)
        self.selection, self.target_macs, self._chosen = selection, target_macs, chosen
        for name in ratios:  # NNI masks exactly as many filters as lrp chose (its lowest-ranked, below)
            nni_set_sparse_ratio(self, name, _masked_fraction(chosen.get(name)))

    def _calculate_metrics(self, data):  # NNI's hook for a pruner's per-target metric
        reduce_func = _criterion_metric(self.criterion)
        metrics: dict[str, dict[str, torch.Tensor]] = {}
        for module_name, module_data in data.items():
            for target_name, target_data in module_data.items():
                metric = nni_metric_shrink(self, module_name, target_name, target_data, reduce_func)
                keep = self._chosen.get(module_name) if self._chosen is not None else None
                if keep is not None and target_name == "weight":  # lrp's choice ranks first, then the score
                    shape = (-1,) + (1,) * (metric.dim() - 1)
                    metric = metric + keep.to(metric).reshape(shape) * (2 * metric.abs().max() + 1)
                metrics.setdefault(module_name, {})[target_name] = metric
        return metrics

    def compress(self, max_steps: int | None = None, max_epochs: int | None = None):
        """NNI's compress, then the masked entries are zeroed in the parameters themselves:
        a zero weight with a masked (zero) gradient stays exactly zero through SGD/Adam
        fine-tuning, so the unwrapped model is the masked model, not a model with stale values."""
        model, masks = super().compress(max_steps, max_epochs)
        with torch.no_grad():
            for module_name, targets in masks.items():
                for target_name, mask in targets.items():
                    param = nni_wrapped_param(self, module_name, target_name)
                    if param is not None:
                        param.mul_(mask.to(device=param.device, dtype=param.dtype))
        return model, masks

    def channel_masks(self) -> ChannelMasks:
        """The current NNI masks as lrp ChannelMasks (conv keep-masks, with their BN recorded)."""
        masks = masks_from_nni(self.get_masks())
        masks.norm_layers.update({c: b for c, b in self.norm_layers.items() if c in masks})
        masks.meta.update(criterion=self.criterion, source="nni")
        return masks


def _masked_fraction(keep: torch.Tensor | None) -> float:
    """The sparse_ratio for which NNI's ``int(n * ratio)`` masks exactly the channels ``keep`` masks."""
    if keep is None or bool(keep.all()):
        return 0.0
    return (int((~keep).sum()) + 0.5) / keep.numel()


def _aligned_bn_config(conv: str, bn: str) -> dict[str, Any]:
    align = {"align": {"module_name": conv, "target_name": "weight", "dims": [0]}}
    return {"op_names": [bn], "target_names": ["weight", "bias"],
            "target_settings": {"weight": copy.deepcopy(align), "bias": copy.deepcopy(align)}}


class L1NormPruner(_LosslessNormPruner, _NNIL1NormPruner):
    """NNI's L1NormPruner, with the BatchNorm after each masked conv masked too."""

    criterion = "l1"


class L2NormPruner(_LosslessNormPruner, _NNIL2NormPruner):
    """NNI's L2NormPruner, with the BatchNorm after each masked conv masked too."""

    criterion = "l2"


class FPGMPruner(_LosslessNormPruner, _NNIFPGMPruner):
    """Geometric-median pruner (the paper's GM on raw weights), BatchNorm masked too."""

    criterion = "gm"
