"""Which channels to mask: per layer (the paper) or per coupled group, at a ratio or a MACs budget.

``selection="layer"`` masks ``ratio`` of each conv's own filters by its criterion; the rebuild keeps
the union of coupled producers' channels (a residual stream stays almost whole). ``"group"`` scores
each coupled group once (``scores.group_scores``) and masks the *same* channels in all its
producers, so the union is that mask and the rebuild removes ``ratio`` of the stream too.
``target_macs`` bisects the uniform ratio on the MACs the rebuild would have (``macs.PlannedMacs``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, NamedTuple

import torch
from torch import nn

from ..errors import BudgetError, InvalidArgumentError, UnsupportedLayerError
from .criteria import Criterion, check_ratio, criterion_label, get_criterion, keep_mask_from_scores
from .graph import ForwardFn, trace_model
from .groups import ChannelGroup, GroupWalker
from .macs import PlannedMacs
from .masks import ChannelMasks, resolve_ignored
from .modules import module_names
from .norms import record_norms
from .scores import group_scores, layer_scores

SELECTIONS = ("layer", "group")
DEFAULT_RATIO = 0.5
MACS_TOLERANCE = 0.01  # target_macs is met within 1% (relative)
_MAX_RATIO = 0.999  # keep_mask_from_scores never masks a whole layer: this is the floor


def check_selection(selection: str) -> str:
    """``"layer"`` or ``"group"``; anything else is an InvalidArgumentError naming both."""
    if selection not in SELECTIONS:
        raise InvalidArgumentError(
            f"selection must be 'layer' (per-layer masks, the paper) or 'group' (one mask per coupled group), "
            f"got {selection!r}")
    return selection


def check_target_macs(target_macs: float | None) -> float | None:
    """A fraction of the original MACs in (0, 1], or None."""
    if target_macs is None:
        return None
    try:
        value = float(target_macs)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"target_macs must be a fraction of the original MACs, got {target_macs!r}") \
            from None
    if not 0.0 < value <= 1.0:
        raise InvalidArgumentError(
            f"target_macs must be in (0, 1] (the fraction of the original MACs to keep, e.g. 0.3), got {target_macs!r}")
    return value


def check_ratio_or_target(ratio: float | None, target_macs: float | None) -> tuple[float, float | None]:
    """The ratio (default 0.5) and the budget; giving both is an InvalidArgumentError."""
    target = check_target_macs(target_macs)
    if ratio is not None and target is not None:
        raise InvalidArgumentError(
            "give either ratio (the fraction of filters masked per layer) or target_macs (a MACs budget, for which "
            "the ratio is searched), not both")
    return check_ratio(DEFAULT_RATIO if ratio is None else ratio), target


def compute_masks(
    model: nn.Module,
    example_inputs: Any,
    criterion: str | Criterion = "l1",
    ratio: float | None = None,
    ignored_layers: Iterable[Any] | None = None,
    *,
    selection: str = "layer",
    target_macs: float | None = None,
    round_to: int | None = None,
    layer_types: tuple[type, ...] = (nn.Conv2d,),
    ratio_dict: Mapping[str, float] | None = None,
    forward_fn: ForwardFn | None = None,
) -> ChannelMasks:
    """Mask ``ratio`` (default 0.5) of the output channels of every prunable conv by ``criterion``.

    ``selection="layer"`` (the paper) scores each conv's filters on their own; ``"group"`` masks the
    same channels in every producer of a coupled group (residual streams shrink too), by the sum of
    each coupled layer's mean-normalised criterion (see ``lrp_plugin.core.scores``).
    ``target_macs=0.3`` instead searches the uniform ratio whose rebuild keeps 30% of the original
    MACs (within 1%; ``round_to`` is taken into account when given), recorded in ``masks.meta``;
    an unreachable budget raises BudgetError with the smallest reachable fraction.

    Layers whose outputs are model outputs (classifier, prediction convs) are found by tracing and
    never masked; ``ignored_layers`` adds more (with ``"group"``, their whole group stays unmasked).
    Layers whose channels cannot be removed losslessly are left unmasked and listed in
    ``masks.meta["skipped"]``; naming one in ``ratio_dict`` raises UnsupportedLayerError.
    ``ratio_dict`` overrides the ratio per module name. The model is not modified.
    """
    selection = check_selection(selection)
    ratio, target = check_ratio_or_target(ratio, target_macs)
    score = get_criterion(criterion)
    per_layer = {name: check_ratio(r) for name, r in (ratio_dict or {}).items()}
    ignored = resolve_ignored(model, ignored_layers)
    traced_model = trace_model(model, example_inputs, forward_fn)  # one traced forward: graph and probe
    probe, graph = traced_model.probe, traced_model.graph
    walker = GroupWalker(graph, model)
    names = module_names(model)
    traced = {names[m] for m in graph.module2node if isinstance(m, nn.Module) and m in names}
    # not used in the forward (untraced): nothing to gain, nothing to check
    candidates = [name for name, module in model.named_modules() if isinstance(module, layer_types)
                  and name not in ignored and name not in probe.output_layers and name in traced
                  and name not in probe.feeds_dead]
    groups, skipped = walker.groups_of(candidates)
    skipped.update({name: f"its channels also feed {dead}, whose output never reaches a model output"
                    for name, dead in probe.feeds_dead.items() if name not in ignored})
    explicit = sorted(set(skipped) & set(per_layer))
    if explicit:
        raise UnsupportedLayerError(
            f"ratio_dict asks to mask {explicit}, whose channels cannot be removed losslessly: "
            f"{skipped[explicit[0]]}. Remove them from ratio_dict or add them to ignored_layers "
            "(they are skipped otherwise)")
    modules = dict(model.named_modules())
    units = _units(selection, score, graph, groups, modules, set(candidates) - set(skipped), per_layer)

    def build(step: Step) -> ChannelMasks:
        masks = ChannelMasks(meta={"criterion": criterion_label(criterion), "ratio": step.ratio,
                                   "selection": selection, "norms_traced": True})
        for index, unit in enumerate(units):
            unit(masks, step.upper if index < step.rounded_up else step.ratio)
        return masks

    if target is None:
        step = Step(ratio)
    else:
        planner = PlannedMacs(model, example_inputs, forward_fn)
        step = _search_ratio(
            lambda s: planner.planned(groups, build(s), probe.output_layers, round_to) / planner.total,
            target, len(units))
    masks = build(step)
    if target is not None:
        masks.meta.update(target_macs=target, planned_macs_ratio=round(step.reached, 6))
        if step.rounded_up:
            masks.meta.update(ratio_upper=step.upper, rounded_up_units=step.rounded_up)
    record_norms(masks, probe.norm_after, groups, probe.output_layers)
    if skipped:
        masks.meta["skipped"] = skipped
    return masks


Unit = Callable[[ChannelMasks, float], None]


def _units(selection: str, score: Any, graph: Any, groups: list[ChannelGroup], modules: Mapping[str, nn.Module],
           allowed: set[str], per_layer: Mapping[str, float]) -> list[Unit]:
    """One mask-writer per layer (``layer``) or per eligible group (``group``), scores computed once."""
    units: list[Unit] = []
    if selection == "layer":
        for name in (n for n in modules if n in allowed):
            scores = layer_scores(modules[name], score, graph)

            def unit(masks, uniform, name=name, scores=scores):
                masks[name] = keep_mask_from_scores(scores, per_layer.get(name, uniform))
            units.append(unit)
        return units
    for group in groups:
        producers = [m for m in group.producers if m.name is not None]
        # an ignored, output or unprunable producer keeps the whole group: a shared mask cannot skip it
        if group.output_bound or not producers or any(m.name not in allowed for m in group.producers):
            continue
        scores = group_scores(group, score, graph)
        own = [per_layer[m.name] for m in producers if m.name in per_layer]

        def unit(masks, uniform, group=group, producers=producers, scores=scores, own=own):
            keep = keep_mask_from_scores(scores, max(own) if own else uniform)
            for member in producers:
                mask = masks[member.name] if member.name in masks else torch.ones(
                    _out_channels(modules[member.name]), dtype=torch.bool)
                mask[torch.as_tensor(member.idxs)] = keep[torch.as_tensor(member.root_idxs)]
                masks[member.name] = mask
        units.append(unit)
    return units


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else int(module.out_channels)


class Step(NamedTuple):
    """Where the MACs search stopped: ``ratio`` everywhere, except the first ``rounded_up`` units at
    ``upper``; ``reached`` is the planned MACs fraction."""

    ratio: float
    upper: float | None = None
    rounded_up: int = 0
    reached: float = 1.0


def _search_ratio(planned: Callable[[Step], float], target: float, n_units: int) -> Step:
    """The uniform ratio whose planned MACs fraction is closest to ``target`` (bisection: MACs fall as
    the ratio grows); BudgetError when even the floor stays above it.

    Channel counts are integers, so MACs fall in steps: where many layers drop a channel at the same
    ratio (every even width at 0.5) one step can jump over the 1% window. Then the ratios on both
    sides of the jump are kept and the number of units rounded up to the upper one is bisected."""
    smallest = planned(Step(_MAX_RATIO))
    if smallest > target * (1 + MACS_TOLERANCE):
        raise BudgetError(
            f"target_macs={target:g} cannot be reached: masking every prunable layer to its floor keeps "
            f"{smallest:.4f} of the original MACs (the smallest reachable fraction); raise target_macs to at least "
            f"{smallest:.4f}, or prune layers now ignored/skipped", smallest=smallest)
    close = target * MACS_TOLERANCE / 4
    low, high = 0.0, _MAX_RATIO
    best = (abs(smallest - target), Step(_MAX_RATIO, reached=smallest))
    for _ in range(40):
        mid = (low + high) / 2
        value = planned(Step(mid))
        best = min(best, (abs(value - target), Step(mid, reached=value)), key=lambda pair: pair[0])
        if abs(value - target) <= close or high - low < 1e-4:
            break
        if value > target:
            low = mid
        else:
            high = mid
    if best[0] <= close or high - low >= 1e-4:
        return best[1]
    fewest, most = 0, n_units  # MACs fall as more units take the upper ratio
    while most - fewest > 1:
        count = (fewest + most) // 2
        value = planned(Step(low, high, count))
        best = min(best, (abs(value - target), Step(low, high, count, value)), key=lambda pair: pair[0])
        if abs(value - target) <= close:
            break
        if value > target:
            fewest = count
        else:
            most = count
    return best[1]
