"""Lossless reconstruction: remove masked channels physically (paper Figs. 2-4).

Five steps: (1) take the masked model as the reference; (2) find the coupled channel groups
of the masked producers (Torch-Pruning's graph, walked with a bound) and plan each group:
union (paper) or intersection (ablation) of the producers' keep-masks; (3) measure what the
removed channels carry at each consumer: zero (BN masked) needs nothing, a constant (BN alive,
or an activation with f(0) != 0) is folded into the consumer, anything else is kept;
(4) fold and remove; (5) verify the outputs against the reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import InvalidArgumentError, LosslessError, MaskError, UnsupportedLayerError
from .graph import ForwardFn, trace_model
from .groups import ChannelGroup, GroupWalker
from .hold import get_masks, held_mask_bn, masked_params, remove_masks, zero_masked
from .masks import ChannelMasks, validate_masks
from .metrics import count_params, counting_macs
from .modules import memory_formats, restore_memory_formats, unwrap_model
from .norms import record_norms
from .plan import check_round_to, finalize, plan_constants, plan_group
from .prune import apply_folds, prune_plan, recording_removed_values
from .report import ReconstructionReport
from .spec import ORIGINAL_SHAPES_ATTR, adopt_shapes, tensor_shapes
from .verify import Check, default_tolerance, exact_arithmetic, model_outputs
from .verify import verify as verify_outputs

MERGES = ("union", "intersection")

__all__ = ["MERGES", "ReconstructionResult", "default_tolerance", "reconstruct"]


@dataclass
class ReconstructionResult:
    model: nn.Module
    report: ReconstructionReport
    masks: ChannelMasks


def reconstruct(
    model: nn.Module,
    example_inputs: Any,
    masks: Mapping[str, Any] | None = None,
    merge: str = "union",
    verify: bool = True,
    inplace: bool = False,
    *,
    strict: bool = True,
    mask_bn: bool | None = None,
    fold_constants: bool = True,
    tolerance: float | None = None,
    round_to: int | None = None,
    forward_fn: ForwardFn | None = None,
) -> ReconstructionResult:
    """Build the physically smaller model that computes what the masked model computes.

    ``masks`` defaults to the masks held on ``model`` (``lrp.apply_masks``); explicit
    masks are applied to the copy first (conv, and BN unless ``mask_bn=False``).
    ``fold_constants`` folds the constant a removed channel still emits (BN not masked:
    ``beta - gamma*mean/std`` through the activation) into its consumers, so even masks
    without BN masks (NNI's own pruners) rebuild exactly; ``False`` reproduces the paper's
    Table 8 loss. With ``verify`` the outputs are compared on ``example_inputs``; above
    ``tolerance`` a LosslessError names the worst group (``strict=False``: a warning). The
    caller's model is left untouched unless ``inplace=True``. ``round_to=N`` keeps channel
    counts at multiples of N by keeping some masked (zero or constant) channels.
    """
    if merge not in MERGES:
        raise InvalidArgumentError(f"merge must be one of {MERGES}, got {merge!r}")
    round_to = check_round_to(round_to)
    target = unwrap_model(model)
    masks, mask_bn = _resolve_masks(target, masks, mask_bn)
    options = _Options(example_inputs, forward_fn, merge, verify, strict, mask_bn, fold_constants, tolerance,
                       round_to)
    with exact_arithmetic():  # reference and rebuilt model on the device's exact float32 (no TF32, no autocast)
        try:
            result = _rebuild(target, masks, options, cautious=False)
        except _RebuildFailed as failed:
            # the model's own code fixed a channel count (a split size, a custom layer's extra
            # parameters): rebuild once more with split and custom-layer channels kept whole
            result = _rebuild(target, masks, options, cautious=True)
            result.report.notes.append(
                f"split and custom-layer channels kept whole: the first rebuild failed ({failed})")
    if inplace:
        remove_masks(target)
        adopt_shapes(target, result.model)
        result.model = target
    return result


@dataclass
class _Options:
    example_inputs: Any
    forward_fn: ForwardFn | None
    merge: str
    verify: bool
    strict: bool
    mask_bn: bool
    fold_constants: bool
    tolerance: float | None
    round_to: int | None


class _RebuildFailed(Exception):
    """The rebuilt model failed to run or to match (internal: retried once, cautiously)."""


def _rebuild(target: nn.Module, masks: ChannelMasks, opt: _Options, *, cautious: bool) -> ReconstructionResult:
    # 1. the masked model (a copy) is the reference; one traced forward gives the graph, the
    # conv -> BN pairs, the output layers and the MACs
    masks = masks.copy()
    work = copy.deepcopy(target)
    remove_masks(work)
    x, forward_fn = opt.example_inputs, opt.forward_fn
    with counting_macs(work, x) as macs_before:
        traced = trace_model(work, x, forward_fn)
    probe = traced.probe
    walker = GroupWalker(traced.graph, work, cautious=cautious)
    # on the cautious attempt the groups it blocks are kept whole: skipped, not refused
    groups, skipped = _masked_groups(walker, work, masks, probe.output_layers, opt.strict and not cautious)
    if opt.mask_bn:
        record_norms(masks, probe.norm_after, groups, probe.output_layers)
    zero_masked(masked_params(work, masks, opt.mask_bn))
    dtype = next((p.dtype for p in work.parameters()), torch.float32)
    params_before = count_params(work)

    # 2. plan every group; 3. measure the removed channels (one forward of the masked model, which
    # also gives the reference outputs) and plan the constants
    plans = [plan_group(group, masks, probe.output_layers, opt.merge, opt.round_to) for group in groups]
    fold = opt.merge == "union" and opt.fold_constants
    check = None
    if fold or opt.verify:
        with recording_removed_values(work, plans if fold else []) as values:
            ref_outputs = model_outputs(work, x, forward_fn)
        if opt.verify:
            check = Check(reference=copy.deepcopy(work), ref_outputs=ref_outputs, example_inputs=x,
                          forward_fn=forward_fn, strict=opt.strict, mask_bn=opt.mask_bn,
                          tolerance=opt.tolerance if opt.tolerance is not None else default_tolerance(dtype))
        if fold:
            modules = dict(work.named_modules())
            for plan in plans:
                plan_constants(plan, values, modules)
    for plan in plans:
        finalize(plan, opt.round_to)
    retry = not cautious and (opt.mask_bn or opt.fold_constants) and opt.merge == "union"

    # 4. fold and remove
    original_shapes = tensor_shapes(work)
    formats = memory_formats(work)  # channels_last stays channels_last
    frozen = {n for n, p in work.named_parameters() if not p.requires_grad}
    apply_folds(work, plans, probe.norm_after)
    modules = dict(work.named_modules())
    for plan in plans:
        prune_plan(walker, plan, modules)
    setattr(work, ORIGINAL_SHAPES_ATTR, original_shapes)  # lets load_pruned check the base model
    for name, param in work.named_parameters():  # pruning makes new Parameters: keep frozen stages frozen
        param.requires_grad_(name not in frozen)
    restore_memory_formats(work, formats)

    # 5. run the rebuilt model once (its MACs, and the outputs to verify), report and verify
    try:
        with counting_macs(work, x) as macs_after:
            outputs = model_outputs(work, x, forward_fn)
    except Exception as exc:  # noqa: BLE001 - the model's own code refused the new channel counts
        if retry:
            raise _RebuildFailed(f"{type(exc).__name__}: {exc}") from exc
        raise LosslessError(f"the rebuilt model no longer runs ({type(exc).__name__}: {exc}): its code fixes "
                            "a channel count that pruning changed; exclude that layer (ignored_layers)") from exc
    report = ReconstructionReport(
        merge=opt.merge, dtype=str(dtype).replace("torch.", ""), params_before=params_before,
        params_after=count_params(work), macs_before=macs_before.macs, macs_after=macs_after.macs,
        verified=opt.verify,
        groups=[p.record for p in plans if any(v is not None for v in p.record.kept_by_producer.values())],
        skipped=skipped, selection=masks.meta.get("selection"), ratio=masks.meta.get("ratio"),
        target_macs=masks.meta.get("target_macs"))
    if not opt.mask_bn:
        folded = opt.fold_constants and opt.merge == "union"
        report.notes.append("BatchNorm was not masked: removed channels still emitted beta - gamma*mean/std"
                            + (" (folded into their consumers)" if folded else ""))
    report.notes.extend(sorted({p.record.note for p in plans if p.record.note}))
    if check is not None:
        try:
            verify_outputs(outputs, check, plans, report)
        except LosslessError as exc:
            if retry:
                raise _RebuildFailed(str(exc).split(";")[0]) from exc
            raise
    return ReconstructionResult(model=work, report=report, masks=masks)


def _resolve_masks(target: nn.Module, masks: Mapping[str, Any] | None, mask_bn: bool | None
                   ) -> tuple[ChannelMasks, bool]:
    held = get_masks(target)
    if masks is None:
        if held is None:
            raise MaskError("no masks: pass masks=... or call lrp.apply_masks(model, masks) first")
        masks = held
        mask_bn = held_mask_bn(target) if mask_bn is None else mask_bn
    return validate_masks(target, masks).copy(), True if mask_bn is None else mask_bn


def _masked_groups(walker: GroupWalker, model: nn.Module, masks: ChannelMasks, output_layers: set[str],
                   strict: bool) -> tuple[list[ChannelGroup], dict[str, str]]:
    """The group of every producer with masked channels, each once; blocked ones refused or skipped."""
    traced = {walker.names[m] for m in walker.graph.module2node if isinstance(m, nn.Module) and m in walker.names}
    unused = sorted(n for n, k in masks.items() if not bool(k.all()) and n not in traced and n not in output_layers)
    if unused:
        raise MaskError(
            f"masks name layers that the traced forward never uses: {unused[:5]}; remove them from the masks "
            "or pass example_inputs/forward_fn that run those layers")
    groups, skipped = walker.groups_of(n for n, keep in masks.items() if not bool(keep.all()))
    if skipped and strict:
        first = next(iter(skipped))
        raise UnsupportedLayerError(
            f"channels of {first} cannot be removed losslessly: {skipped[first]} (GroupNorm/LayerNorm/"
            f"InstanceNorm statistics, or an op that mixes channels). Exclude these layers from the masks "
            f"(ignored_layers in lrp.compute_masks skips them for you): {sorted(skipped)[:8]}; or pass "
            "strict=False to keep their channels and rebuild the rest")
    return groups, skipped
