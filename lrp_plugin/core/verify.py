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
from .prune import removed_channel_values
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
    values = removed_channel_values(check.reference, plans, check.example_inputs, check.forward_fn)
    worst: tuple[str | None, float, str | None] = (None, 0.0, None)
    for plan in plans:
        for name, idxs in plan.removed_inputs():
            seen = [values[(name, i)] for i in idxs if (name, i) in values]
            leak = max((max(abs(v.low), abs(v.high)) for v in seen), default=0.0)
            if leak > worst[1]:
                worst = (plan.record.root, leak, name)
    return worst
