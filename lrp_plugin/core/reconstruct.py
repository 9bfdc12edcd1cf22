"""Lossless reconstruction: remove masked channels physically (paper Figs. 2-4).

Coupled channels come from Torch-Pruning's DependencyGraph: every producer (conv or
linear) whose output meets others in a residual add shares one group, and concat
consumers see each part at its offset (``root_idxs``). Per group, the channels kept
are the union (paper) or intersection (ablation) of the producers' keep-masks.
A channel every producer masked is zero wherever it is read, so removing it changes
nothing; ``verify`` checks exactly that on the example inputs.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch_pruning as tp
from torch import nn

from ..errors import InvalidArgumentError, LosslessError, MaskError, UnsupportedLayerError
from .graph import (
    CROSS_CHANNEL_NORMS,
    PRODUCER_TYPES,
    ForwardFn,
    build_graph,
    flatten_tensors,
    module_names,
    preserved_state,
    probe_model,
    run_forward,
)
from .modules import unwrap_model
from .hold import masked_params, zero_masked, get_masks, held_mask_bn, remove_masks
from .masks import ChannelMasks, validate_masks
from .metrics import count_macs_params
from .report import GroupRecord, ReconstructionReport
from .spec import ORIGINAL_SHAPES_ATTR, tensor_shapes

MERGES = ("union", "intersection")
_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}


@dataclass
class ReconstructionResult:
    model: nn.Module
    report: ReconstructionReport
    masks: ChannelMasks


@dataclass
class _GroupPlan:
    group: Any  # tp Group with full root indices
    record: GroupRecord
    remove: list[int]  # root indices to remove
    consumers: list[tuple[str, list[int]]] = field(default_factory=list)  # (module, its in-channel idxs)


def default_tolerance(dtype: torch.dtype) -> float:
    """Relative output error allowed for a lossless verdict in ``dtype``."""
    return _TOLERANCE.get(dtype, 1e-5)


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
    tolerance: float | None = None,
    round_to: int | None = None,
    forward_fn: ForwardFn | None = None,
) -> ReconstructionResult:
    """Build the physically smaller model that computes what the masked model computes.

    ``masks`` defaults to the masks held on ``model`` (``lrp.apply_masks``); explicit
    masks are applied to the copy first (conv, and BN unless ``mask_bn=False``).
    With ``verify`` the outputs of the masked and the reconstructed model are compared
    on ``example_inputs``; above ``tolerance`` a LosslessError names the worst group
    (or, with ``strict=False``, a warning). The caller's model is left untouched
    unless ``inplace=True``. ``round_to=N`` keeps channel counts at multiples of N by
    keeping some masked (all-zero) channels.
    """
    if merge not in MERGES:
        raise InvalidArgumentError(f"merge must be one of {MERGES}, got {merge!r}")
    if round_to is not None and (not isinstance(round_to, int) or round_to < 1):
        raise InvalidArgumentError(f"round_to must be a positive int, got {round_to!r}")
    target = unwrap_model(model)
    held = get_masks(target)
    if masks is None:
        if held is None:
            raise MaskError("no masks: pass masks=... or call lrp.apply_masks(model, masks) first")
        masks = held
        mask_bn = held_mask_bn(target) if mask_bn is None else mask_bn
    mask_bn = True if mask_bn is None else mask_bn
    masks = validate_masks(target, masks).copy()

    work = target if inplace else copy.deepcopy(target)
    remove_masks(work)
    probe = probe_model(work, example_inputs, forward_fn)
    if mask_bn:
        for conv, bn in probe.norm_after.items():
            masks.norm_layers.setdefault(conv, bn)
    zero_masked(masked_params(work, masks, mask_bn))  # the masked model is the reference

    dtype = next((p.dtype for p in work.parameters()), torch.float32)
    reference = copy.deepcopy(work) if verify else None
    ref_outputs = _outputs(work, example_inputs, forward_fn) if verify else []
    macs_before, params_before = count_macs_params(work, example_inputs, forward_fn)

    original_shapes = tensor_shapes(work)
    frozen = {n for n, p in work.named_parameters() if not p.requires_grad}
    graph = build_graph(work, example_inputs, forward_fn)
    plans = _plan(graph, work, masks, probe.output_layers, merge, round_to)
    for plan in plans:  # every check passed: now change the model
        if plan.remove:
            plan.group.prune(idxs=plan.remove, record_history=False)
    setattr(work, ORIGINAL_SHAPES_ATTR, original_shapes)  # lets load_pruned check the base model
    for name, param in work.named_parameters():  # pruning makes new Parameters: keep frozen stages frozen
        param.requires_grad_(name not in frozen)

    macs_after, params_after = count_macs_params(work, example_inputs, forward_fn)
    report = ReconstructionReport(
        merge=merge, dtype=str(dtype).replace("torch.", ""), params_before=params_before,
        params_after=params_after, macs_before=macs_before, macs_after=macs_after, verified=verify,
        groups=[p.record for p in plans if p.record.kept_by_producer and any(
            v is not None for v in p.record.kept_by_producer.values())],
    )
    if not mask_bn:
        report.notes.append("BatchNorm was not masked: removed channels still emitted beta - gamma*mean/std")
    report.notes.extend(sorted({p.record.note for p in plans if p.record.note}))
    if verify:
        _verify(work, reference, ref_outputs, example_inputs, forward_fn, plans, report,
                tolerance if tolerance is not None else default_tolerance(dtype), strict, mask_bn)
    return ReconstructionResult(model=work, report=report, masks=masks)


def _outputs(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None) -> list[torch.Tensor]:
    with preserved_state(model, grad=False):
        return [t.detach().clone() for t in flatten_tensors(run_forward(model, example_inputs, forward_fn))]


def _plan(graph: tp.DependencyGraph, model: nn.Module, masks: ChannelMasks, output_layers: set[str],
          merge: str, round_to: int | None) -> list[_GroupPlan]:
    """Decide, per coupled group, which root channels go; raise before anything changes."""
    names = module_names(model)
    used = set()
    plans = []
    for group in graph.get_all_groups(root_module_types=PRODUCER_TYPES):
        channels = len(group[0].idxs)
        fixed = torch.zeros(channels, dtype=torch.bool)  # channels that must stay whatever the masks say
        votes: list[list[bool]] = [[] for _ in range(channels)]
        kept_by: dict[str, int | None] = {}
        members: list[str] = []
        norms: list[str] = []
        consumers: list[tuple[str, list[int]]] = []
        producer_roots: list[list[int]] = []  # each producer's share of the root channels
        note = ""
        for item in group:
            dep, module = item.dep, item.dep.target.module
            name = names.get(module) if isinstance(module, nn.Module) else None
            if name is not None and name not in members:
                members.append(name)
            if isinstance(module, CROSS_CHANNEL_NORMS):
                norms.append(name or type(module).__name__)
            if dep.target.type == tp.ops.OPTYPE.OUTPUT:
                fixed[:] = True
                note = "channels that are model outputs are kept"
            if graph.is_in_channel_pruning_fn(dep.handler) and isinstance(module, PRODUCER_TYPES):
                consumers.append((name, list(zip(item.idxs, item.root_idxs))))
            if not (graph.is_out_channel_pruning_fn(dep.handler) and isinstance(module, PRODUCER_TYPES)):
                continue
            producer_roots.append(list(item.root_idxs))
            keep = masks.get(name)
            if keep is None or name in output_layers:
                fixed[item.root_idxs] = True
                kept_by[name] = None
                if keep is not None and not bool(keep.all()):
                    note = f"{name} feeds a model output; its mask is not applied physically"
                continue
            used.add(name)
            kept_by[name] = int(keep.sum())
            for idx, root in zip(item.idxs, item.root_idxs):
                votes[root].append(bool(keep[idx]))
        merged = _merge(votes, fixed, merge)
        zero_kept = 0
        # never leave a layer with zero channels: a concat part or a whole group may be all masked
        for roots in producer_roots or [list(range(channels))]:
            if roots and not bool(merged[roots].any()):
                merged[roots[0]] = True
                zero_kept += 1
        zero_kept += _round_up(merged, round_to)
        remove = torch.nonzero(~merged).flatten().tolist()
        removed = set(remove)
        consumers = [(n, [i for i, root in pairs if root in removed]) for n, pairs in consumers]
        if remove and norms:
            raise UnsupportedLayerError(
                f"channels of {members[0]} are coupled through {norms} (GroupNorm/LayerNorm/InstanceNorm), "
                f"whose statistics span all channels: removal is not lossless. Exclude {members[0]} from the masks."
            )
        record = GroupRecord(root=members[0] if members else "?", members=members, channels_before=channels,
                             channels_after=int(merged.sum()), kept_by_producer=kept_by,
                             zero_channels_kept=zero_kept, note=note)
        plans.append(_GroupPlan(group=group, record=record, remove=remove, consumers=consumers))
    unused = sorted(set(n for n, k in masks.items() if not bool(k.all())) - used
                    - output_layers)
    if unused:
        raise MaskError(
            f"masks name layers that the traced forward never uses: {unused[:5]}; remove them from the masks "
            "or pass example_inputs/forward_fn that run those layers"
        )
    return plans


def _merge(votes: list[list[bool]], fixed: torch.Tensor, merge: str) -> torch.Tensor:
    combine = any if merge == "union" else all
    return torch.tensor([bool(f) or not v or combine(v) for v, f in zip(votes, fixed.tolist())], dtype=torch.bool)


def _round_up(keep: torch.Tensor, round_to: int | None) -> int:
    """Keep extra (masked, all-zero) channels until the count is a multiple of ``round_to``."""
    if not round_to or int(keep.sum()) % round_to == 0:
        return 0
    missing = round_to - int(keep.sum()) % round_to
    extra = torch.nonzero(~keep).flatten()[:missing]
    keep[extra] = True
    return int(extra.numel())


def _verify(model, reference, ref_outputs, example_inputs, forward_fn, plans, report, tolerance, strict, mask_bn):
    outputs = _outputs(model, example_inputs, forward_fn)
    if len(outputs) != len(ref_outputs) or any(a.shape != b.shape for a, b in zip(outputs, ref_outputs)):
        raise LosslessError(
            "the reconstructed model's outputs changed shape "
            f"({[tuple(t.shape) for t in ref_outputs]} -> {[tuple(t.shape) for t in outputs]}); "
            "a layer feeding a model output was pruned: add it to ignored_layers", report)
    abs_err, rel_err = 0.0, 0.0
    for ref, out in zip(ref_outputs, outputs):
        if ref.numel() == 0 or not ref.is_floating_point():
            continue
        diff = (ref.double() - out.double()).abs().max().item()
        scale = max(ref.double().abs().max().item(), torch.finfo(ref.dtype).tiny)
        abs_err, rel_err = max(abs_err, diff), max(rel_err, diff / scale)
    report.max_abs_error, report.max_rel_error, report.tolerance = abs_err, rel_err, tolerance
    report.lossless = rel_err <= tolerance
    if report.lossless:
        return
    worst, leak, consumer = _worst_group(reference, example_inputs, forward_fn, plans)
    report.worst_group = worst
    if report.merge == "intersection":
        fix = "use merge='union' (intersection removes channels some producer still uses)"
    elif not mask_bn:
        fix = "mask the BatchNorm with the conv (mask_bn=True) and fine-tune with it held"
    else:
        fix = "some layer between producers and consumers turns zero channels non-zero (an unmasked norm or bias)"
    message = (f"reconstruction is not lossless: max relative output error {rel_err:.3g} > {tolerance:g} "
               f"(max |dy| {abs_err:.3g}); worst group rooted at {worst}: removed channels carry |x| up to "
               f"{leak:.3g} into {consumer}. Fix: {fix}; or pass strict=False to accept the loss.")
    if strict:
        raise LosslessError(message, report)
    warnings.warn(message, stacklevel=3)


def _worst_group(reference, example_inputs, forward_fn, plans) -> tuple[str | None, float, str | None]:
    """The group whose removed channels carry the largest values into a consumer, in the masked model."""
    modules = dict(reference.named_modules())
    leaks: dict[tuple[int, str], float] = {}
    handles = []
    for index, plan in enumerate(plans):
        if not plan.remove:
            continue
        for name, idxs in plan.consumers:
            if name is None or name not in modules or not idxs:
                continue

            def hook(module, inputs, _index=index, _name=name, _idxs=idxs):
                x = inputs[0]
                dim = 1 if x.dim() > 2 or isinstance(module, nn.modules.conv._ConvNd) else -1
                value = x.detach().index_select(dim, torch.tensor(_idxs, device=x.device)).abs().max().item()
                leaks[(_index, _name)] = max(leaks.get((_index, _name), 0.0), value)

            handles.append(modules[name].register_forward_pre_hook(hook))
    try:
        _outputs(reference, example_inputs, forward_fn)
    finally:
        for h in handles:
            h.remove()
    if not leaks:
        return None, 0.0, None
    (index, consumer), leak = max(leaks.items(), key=lambda kv: kv[1])
    return plans[index].record.root, leak, consumer
