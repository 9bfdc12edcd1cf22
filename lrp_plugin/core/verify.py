"""The lossless check: the rebuilt model against the masked model, on real outputs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import LosslessError, TraceError
from .graph import NO_OUTPUT_MESSAGE, ForwardFn, flatten_tensors, preserved_state, run_forward
from .plan import GroupPlan
from .report import ReconstructionReport

_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def default_tolerance(dtype: torch.dtype) -> float:
    """Relative output error allowed for a lossless verdict in ``dtype``."""
    return _TOLERANCE.get(dtype, 1e-5)


def model_outputs(model: nn.Module, example_inputs: Any, forward_fn: ForwardFn | None) -> list[torch.Tensor]:
    """Every floating-point tensor the model returns; a TraceError if there is none to compare."""
    with preserved_state(model, grad=False):
        outputs = [t.detach().clone() for t in flatten_tensors(run_forward(model, example_inputs, forward_fn))]
    if not any(t.is_floating_point() and t.numel() for t in outputs):
        raise TraceError(NO_OUTPUT_MESSAGE.format(model=type(model).__name__))
    return outputs


@dataclass
class Check:
    """What ``verify`` compares: the reference (masked) model, its outputs, and how to run both."""

    reference: nn.Module
    ref_outputs: list[torch.Tensor]
    example_inputs: Any
    forward_fn: ForwardFn | None
    tolerance: float
    strict: bool
    mask_bn: bool


def verify(model: nn.Module, check: Check, plans: list[GroupPlan], report: ReconstructionReport) -> None:
    """Fill the report's error fields; raise LosslessError (or warn, not strict) past the tolerance."""
    outputs = model_outputs(model, check.example_inputs, check.forward_fn)
    ref_outputs = check.ref_outputs
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
    report.max_abs_error, report.max_rel_error, report.tolerance = abs_err, rel_err, check.tolerance
    report.lossless = rel_err <= check.tolerance
    if report.lossless:
        return
    worst, leak, consumer = worst_group(check, plans)
    report.worst_group = worst
    if report.merge == "intersection":
        fix = "use merge='union' (intersection removes channels some producer still uses)"
    elif not check.mask_bn:
        fix = "mask the BatchNorm with the conv (mask_bn=True) and fine-tune with it held, or fold_constants=True"
    else:
        fix = "some layer between producers and consumers turns zero channels non-zero (an unmasked norm or bias)"
    message = (f"reconstruction is not lossless: max relative output error {rel_err:.3g} > {check.tolerance:g} "
               f"(max |dy| {abs_err:.3g}); worst group rooted at {worst}: removed channels carry |x| up to "
               f"{leak:.3g} into {consumer}. Fix: {fix}; or pass strict=False to accept the loss.")
    if check.strict:
        raise LosslessError(message, report)
    warnings.warn(message, stacklevel=3)


def worst_group(check: Check, plans: list[GroupPlan]) -> tuple[str | None, float, str | None]:
    """The group whose removed channels carry the largest values into a consumer, in the masked model."""
    modules = dict(check.reference.named_modules())
    leaks: dict[tuple[int, str], float] = {}
    handles = []
    for index, plan in enumerate(plans):
        removed = set(plan.remove)
        if not removed:
            continue
        for member in plan.group.consumers:
            idxs = [i for i, r in zip(member.idxs, member.root_idxs) if r in removed]
            if member.name not in modules or not idxs:
                continue

            def hook(module, inputs, _index=index, _name=member.name, _idxs=idxs):
                x = inputs[0]
                dim = 1 if isinstance(module, nn.modules.conv._ConvNd) else x.dim() - 1
                value = x.detach().index_select(dim, torch.tensor(_idxs, device=x.device)).abs().max().item()
                leaks[(_index, _name)] = max(leaks.get((_index, _name), 0.0), value)

            handles.append(modules[member.name].register_forward_pre_hook(hook))
    try:
        model_outputs(check.reference, check.example_inputs, check.forward_fn)
    finally:
        for h in handles:
            h.remove()
    if not leaks:
        return None, 0.0, None
    (index, consumer), leak = max(leaks.items(), key=lambda kv: kv[1])
    return plans[index].record.root, leak, consumer
