"""Torch-Pruning 1.6 extension: the paper's importances and a pruner with a mask phase.

* ``L1Importance``, ``L2Importance``, ``GMImportance``: ``tp.importance.Importance``
  subclasses scoring each channel of a group by the paper's per-filter criterion on the raw
  weights of the group's producers (not BN gamma, not next-layer weights, not |W|^p).
* ``GroupCriterionImportance``: the score ``selection="group"`` uses (each coupled layer's criterion,
  producers by output filters and consumers by input slices, normalised by its mean, summed), for
  Torch-Pruning's own pruners (``tp.pruner.MetaPruner(..., importance=GroupCriterionImportance("l1"))``).
* ``LosslessPruner``: Torch-Pruning's pruner signature with two modes:
  ``soft`` (mask conv + BN, hold through fine-tuning, then ``.reconstruct()``; the paper's
  prune -> fine-tune -> reconstruct) and ``hard`` (prune -> reconstruct at once).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
import torch_pruning as tp
from torch import nn

from ..compat import group_graph
from ..core import CRITERIA, ChannelMasks, ReconstructionReport, apply_masks, compute_masks, get_masks, reconstruct
from ..core.criteria import check_ratio, criterion_name, get_criterion, is_importance
from ..core.dry_run import dry_run_rebuild
from ..core.graph import PRODUCER_TYPES, ForwardFn
from ..core.plan import check_round_to
from ..core.scores import combine
from ..core.selection import check_ratio_or_target, check_selection
from ..errors import CallOrderError, InvalidArgumentError, MaskError

MODES = ("soft", "hard")


class _CriterionImportance(tp.importance.Importance):
    """Per-channel group score: the best per-filter score any producer gives that channel.

    Each producer's scores are divided by their layer maximum so layers of different scale
    compare; taking the max mirrors the union merge (a channel some producer keeps is kept).
    """

    criterion = "l1"

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        score = get_criterion(self.criterion)
        root_channels = len(group[0].idxs)
        result = torch.zeros(root_channels, dtype=torch.float64)
        found = False
        for item in group:
            module = item.dep.target.module
            graph = group_graph(group)
            if not isinstance(module, PRODUCER_TYPES) or not graph.is_out_channel_pruning_fn(item.dep.handler):
                continue
            weight = module.weight.transpose(0, 1) if getattr(module, "transposed", False) else module.weight
            scores = score(weight)
            scores = scores / scores.max().clamp_min(torch.finfo(scores.dtype).tiny)
            idxs = torch.as_tensor(item.idxs, dtype=torch.long)
            roots = torch.as_tensor(item.root_idxs, dtype=torch.long)
            result[roots] = torch.maximum(result[roots], scores[idxs])
            found = True
        return result if found else None


class L1Importance(_CriterionImportance):
    """The paper's L1 criterion: L1 norm of each output filter."""

    criterion = "l1"


class L2Importance(_CriterionImportance):
    """The paper's L2 criterion: L2 norm of each output filter."""

    criterion = "l2"


class GMImportance(_CriterionImportance):
    """The paper's GM criterion (FPGM on raw weights): sum of distances to the layer's other filters."""

    criterion = "gm"


class GroupCriterionImportance(tp.importance.Importance):
    """``selection="group"``'s score as a Torch-Pruning importance: every conv/linear of the group
    scores its channels by the criterion (producers: output filters; consumers: input slices), each
    layer's scores divided by their mean, summed over the group."""

    def __init__(self, criterion: Any = "l1"):
        self.criterion = criterion
        self._score = get_criterion(criterion)

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        graph = group_graph(group)
        producers, consumers = [], []
        for item in group:
            module = item.dep.target.module
            if not isinstance(module, PRODUCER_TYPES):
                continue
            part = (module, list(item.idxs), list(item.root_idxs))
            if graph.is_out_channel_pruning_fn(item.dep.handler):
                producers.append(part)
            elif graph.is_in_channel_pruning_fn(item.dep.handler):
                consumers.append(part)
        if not producers and not consumers:
            return None
        return combine(self._score, len(group[0].idxs), producers, consumers)


def _criterion_of(importance: Any) -> Any:
    if isinstance(importance, str):
        return criterion_name(importance)  # the core's one table of registered names and aliases
    if isinstance(importance, _CriterionImportance):
        return importance.criterion
    if isinstance(importance, GroupCriterionImportance):
        return importance.criterion
    if is_importance(importance) or callable(importance):
        return importance  # scored on Torch-Pruning's group of each layer (or each coupled group)
    raise InvalidArgumentError(
        f"LosslessPruner needs a criterion name (lrp.CRITERIA: {', '.join(CRITERIA)}), a torch_pruning Importance "
        f"or a function of a weight, got {type(importance).__name__}")


class LosslessPruner:
    """A Torch-Pruning-style pruner with a mask phase and lossless reconstruction.

    ``pruning_ratio`` is the paper's compression ratio (fraction of filters masked in every
    prunable conv, default 0.5); ``target_macs`` a MACs budget instead (fraction of the original,
    the ratio is searched); ``selection`` ``"layer"`` (the paper) or ``"group"`` (one mask per
    coupled group, see ``lrp.compute_masks``); ``pruning_ratio_dict`` maps modules (or tuples of modules) to their own
    ratio; ``round_to`` keeps channel counts at multiples of N by keeping masked zero channels.
    Like Torch-Pruning's pruners, it changes ``model`` in place.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, importance: Any = "l1",
                 pruning_ratio: float | None = None,
                 ignored_layers: Iterable[nn.Module] | None = None,
                 pruning_ratio_dict: Mapping[Any, float] | None = None, round_to: int | None = None,
                 mode: str = "soft", mask_bn: bool = True, forward_fn: ForwardFn | None = None,
                 global_pruning: bool = False, selection: str = "layer", target_macs: float | None = None,
                 **unsupported: Any):
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be 'soft' (mask, fine-tune, reconstruct) or 'hard', got {mode!r}")
        if global_pruning:
            raise InvalidArgumentError("global_pruning is not supported: the paper masks the same ratio in every layer")
        if unsupported:
            raise InvalidArgumentError(f"LosslessPruner does not implement {sorted(unsupported)}; remove them")
        check_round_to(round_to)
        self.model, self.example_inputs, self.forward_fn = model, example_inputs, forward_fn
        self.criterion = _criterion_of(importance)
        self.selection = check_selection(selection)
        self.pruning_ratio, self.target_macs = check_ratio_or_target(pruning_ratio, target_macs)
        if target_macs is not None:
            self.pruning_ratio = None  # searched by compute_masks
        self.ignored_layers = list(ignored_layers or [])
        self.ratio_dict = self._ratio_dict(pruning_ratio_dict or {})
        self.round_to, self.mode, self.mask_bn = round_to, mode, mask_bn
        self.masks: ChannelMasks | None = None
        self.report: ReconstructionReport | None = None

    def _ratio_dict(self, pruning_ratio_dict: Mapping[Any, float]) -> dict[str, float]:
        names = {m: n for n, m in self.model.named_modules()}
        result = {}
        for key, ratio in pruning_ratio_dict.items():
            for module in key if isinstance(key, tuple) else (key,):
                for sub_name, sub in module.named_modules():
                    if sub not in names:
                        raise MaskError(f"pruning_ratio_dict key {type(module).__name__} is not part of the model")
                    if isinstance(sub, nn.Conv2d):
                        result[names[sub]] = check_ratio(ratio)
        return result

    def step(self) -> ChannelMasks | ReconstructionReport:
        """soft: compute and hold the masks (returns them); hard: prune now (returns the report)."""
        self.masks = compute_masks(self.model, self.example_inputs, criterion=self.criterion,
                                   ratio=self.pruning_ratio, ignored_layers=self.ignored_layers,
                                   ratio_dict=self.ratio_dict, forward_fn=self.forward_fn, selection=self.selection,
                                   target_macs=self.target_macs, round_to=self.round_to)
        if self.mode == "soft":
            apply_masks(self.model, self.masks, mask_bn=self.mask_bn)
            # refused now, with the layer to exclude, rather than after the fine-tune
            dry_run_rebuild(self.model, self.example_inputs, forward_fn=self.forward_fn, mask_bn=self.mask_bn,
                            round_to=self.round_to, when="in LosslessPruner.step (mode='soft')")
            return self.masks
        return self.reconstruct(masks=self.masks)

    def reconstruct(self, masks: ChannelMasks | None = None, verify: bool = True) -> ReconstructionReport:
        """Remove the masked channels in place (union merge), verified; returns the report."""
        masks = masks or get_masks(self.model)
        if masks is None:
            raise CallOrderError("nothing to reconstruct: call pruner.step() first")
        result = reconstruct(self.model, self.example_inputs, masks=masks, verify=verify, inplace=True,
                             mask_bn=self.mask_bn, round_to=self.round_to, forward_fn=self.forward_fn)
        self.report = result.report
        return self.report
