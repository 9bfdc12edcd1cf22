"""The lossless check: the rebuilt model against the masked model, on real outputs.

Both models run under the device's exact arithmetic (``exact_arithmetic``): GPUs trade float32
precision for speed by default (TF32 tensor cores in cuDNN convolutions), which makes two models
that compute the same function differ by ~1e-4 and would turn every GPU check into a false alarm.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

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


@dataclass(frozen=True)
class PrecisionSwitch:
    """One setting that lets a device round float32 work more coarsely, and its exact value."""

    name: str
    get: Callable[[], Any]
    set: Callable[[Any], None]
    exact: Any


def _attribute(owner: Any, attr: str, name: str, exact: Any) -> PrecisionSwitch:
    return PrecisionSwitch(name, lambda: getattr(owner, attr), lambda v: setattr(owner, attr, v), exact)


def precision_switches() -> list[PrecisionSwitch]:
    """The switches of this torch: the ``fp32_precision`` flags (torch >= 2.9; the legacy ``allow_tf32``
    flags are not touched there, since mixing the two APIs makes torch raise), else ``allow_tf32`` and the
    float32 matmul precision; and the reduced-precision reductions of fp16/bf16 matmuls."""
    backends = torch.backends
    switches = []
    if hasattr(getattr(backends.cudnn, "conv", None), "fp32_precision"):
        for path in ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn"):
            owner = backends
            for part in path.split("."):
                owner = getattr(owner, part, None)
            if owner is not None and hasattr(owner, "fp32_precision"):
                switches.append(_attribute(owner, "fp32_precision", f"torch.backends.{path}.fp32_precision", "ieee"))
    else:
        switches.append(_attribute(backends.cudnn, "allow_tf32", "torch.backends.cudnn.allow_tf32", False))
        switches.append(PrecisionSwitch("torch.get_float32_matmul_precision()", torch.get_float32_matmul_precision,
                                        torch.set_float32_matmul_precision, "highest"))
    for attr in ("allow_fp16_reduced_precision_reduction", "allow_bf16_reduced_precision_reduction"):
        if hasattr(backends.cuda.matmul, attr):
            switches.append(_attribute(backends.cuda.matmul, attr, f"torch.backends.cuda.matmul.{attr}", False))
    return switches


@dataclass
class ArithmeticState:
    """What ``exact_arithmetic`` found and changed: the caller's values of the switches it turned to exact."""

    changed: dict[str, Any]
    autocast_disabled: list[str]


@contextlib.contextmanager
def exact_arithmetic() -> Iterator[ArithmeticState]:
    """Run the block with TF32 and reduced-precision reductions off and autocast disabled; the caller's
    settings come back afterwards, also when the block raises."""
    state = ArithmeticState(changed={}, autocast_disabled=[])
    undo: list[tuple[PrecisionSwitch, Any]] = []
    with contextlib.ExitStack() as stack:
        try:
            for switch in precision_switches():
                try:
                    before = switch.get()
                    if before != switch.exact:
                        switch.set(switch.exact)
                        undo.append((switch, before))
                        state.changed[switch.name] = before
                except (RuntimeError, ValueError, TypeError, AttributeError):
                    continue  # a flag this torch build cannot read or set: leave it as the caller had it
            for device in ("cuda", "cpu"):
                if _autocast_enabled(device):
                    stack.enter_context(torch.autocast(device_type=device, enabled=False))
                    state.autocast_disabled.append(device)
            yield state
        finally:
            for switch, before in reversed(undo):
                switch.set(before)


def _autocast_enabled(device: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device))
    except TypeError:  # torch < 2.4: no device argument (cuda), and a separate query for the CPU
        return bool(torch.is_autocast_enabled() if device == "cuda" else torch.is_autocast_cpu_enabled())


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


def verify(outputs: list[torch.Tensor], check: Check, plans: list[GroupPlan], report: ReconstructionReport) -> None:
    """Compare the rebuilt model's ``outputs`` (``model_outputs``) with the reference's; fill the report's
    error fields; raise LosslessError (or warn, not strict) past the tolerance."""
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
    head = (f"reconstruction is not lossless: max relative output error {rel_err:.3g} > {check.tolerance:g} "
            f"(max |dy| {abs_err:.3g})")
    if worst is None:
        message = (f"{head}, yet no removed channel carries any value into a consumer, so the difference is "
                   f"arithmetic, not a lost channel: {arithmetic_setting(check.reference)}. Fix: pass a tolerance "
                   f"above {rel_err:.2g} (tolerance=...), or verify a float32/float64 copy; or strict=False.")
    else:
        if report.merge == "intersection":
            fix = "use merge='union' (intersection removes channels some producer still uses)"
        elif not check.mask_bn:
            fix = "mask the BatchNorm with the conv (mask_bn=True) and fine-tune with it held, or fold_constants=True"
        else:
            fix = "some layer between producers and consumers turns zero channels non-zero (an unmasked norm or bias)"
        message = (f"{head}; worst group rooted at {worst}: removed channels carry |x| up to {leak:.3g} into "
                   f"{consumer}. Fix: {fix}; or pass strict=False to accept the loss.")
    if check.strict:
        raise LosslessError(message, report)
    warnings.warn(message, stacklevel=3)


def arithmetic_setting(model: nn.Module) -> str:
    """The settings that make two equal models compute different numbers on this device, in words."""
    param = next(model.parameters(), None)
    dtype = str(param.dtype if param is not None else torch.float32).replace("torch.", "")
    device = param.device.type if param is not None else "cpu"
    parts = [f"the model computes in {dtype} on {device}"]
    if dtype in ("float16", "bfloat16"):
        parts.append(f"{dtype} keeps {torch.finfo(param.dtype).eps:.1g} relative precision per operation, and the "
                     "two models' different channel counts change the order of their sums")
    parts.append("TF32 and reduced-precision reductions were off and autocast disabled during the check")
    if device == "cuda":
        cudnn = torch.backends.cudnn
        parts.append(f"cudnn.benchmark={cudnn.benchmark}, cudnn.deterministic={cudnn.deterministic}: cuDNN picks "
                     "its algorithm per layer shape, so the rebuilt layers may sum in another order")
    return "; ".join(parts)


def worst_group(check: Check, plans: list[GroupPlan]) -> tuple[str | None, float, str | None]:
    """The group whose removed channels carry the largest values into a consumer, in the masked model;
    (None, 0.0, None) when every removed channel is exactly zero (or folded) at every consumer."""
    values = removed_channel_values(check.reference, plans, check.example_inputs, check.forward_fn)
    worst: tuple[str | None, float, str | None] = (None, 0.0, None)
    for plan in plans:
        folded = {(fold.consumer, fold.idx) for fold in plan.folds}  # constants the rebuild carries exactly
        for name, idxs in plan.removed_inputs():
            seen = [values[(name, i)] for i in idxs if (name, i) in values and (name, i) not in folded]
            leak = max((max(abs(v.low), abs(v.high)) for v in seen), default=0.0)
            if leak > worst[1]:
                worst = (plan.record.root, leak, name)
    return worst
