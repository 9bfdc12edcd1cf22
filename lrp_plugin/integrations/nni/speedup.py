"""``LosslessSpeedup``: NNI's ``ModelSpeedup`` call, rebuilt losslessly against the NNI-masked model."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from ...compat import nni_is_wrapped
from ...core import ReconstructionResult, reconstruct
from ...core.graph import probe_model
from ...core.verify import default_tolerance, exact_arithmetic, model_outputs
from ...errors import CallOrderError, LosslessError, MaskError
from .masks import NNIMasks, apply_nni_masks, interpret_nni_masks, nni_masked_copy


class LosslessSpeedup:
    """Drop-in for ``nni.compression.speedup.ModelSpeedup(model, dummy_input, masks).speedup_model()``.

    Works on current torch, removes channels through Torch-Pruning's dependency graph with the
    paper's union merge, and verifies the result against the model with *all* the masks applied
    as NNI applies them (``weight * mask``). Conv-filter masks without BN masks (NNI's own norm
    pruners) and BN-only masks (``SlimPruner``) leave constants in the removed channels: they are
    folded into the consumers, so the result is exact without re-training. Masks it cannot
    reproduce (element-wise ones, masked output layers) are refused before anything is rebuilt.

    ``strict`` (default: True, except with ``fold_constants=False``, which shows the paper's
    Table 8 loss as a warning): a result that differs from the masked model raises LosslessError;
    ``strict=False`` returns it with a warning and ``report.lossless`` False.
    """

    def __init__(self, model: nn.Module, dummy_input: Any, masks: NNIMasks, *, merge: str = "union",
                 inplace: bool = True, fold_constants: bool = True, strict: bool | None = None):
        if nni_is_wrapped(model):
            raise MaskError("the model is still wrapped by an NNI pruner: call pruner.unwrap_model() first")
        self.model, self.dummy_input, self.nni_masks = model, dummy_input, masks
        self.merge, self.inplace, self.fold_constants = merge, inplace, fold_constants
        self.strict = fold_constants if strict is None else strict
        self.result: ReconstructionResult | None = None

    def speedup_model(self) -> nn.Module:
        plan = interpret_nni_masks(self.model, self.nni_masks, probe_model(self.model, self.dummy_input))
        reference = nni_masked_copy(self.model, self.nni_masks)
        work = self.model if self.inplace else copy.deepcopy(self.model)
        apply_nni_masks(work, self.nni_masks)  # NNI keeps masked weights alive under its wrappers
        folding = self.fold_constants and not plan.mask_bn
        self.result = reconstruct(work, self.dummy_input, masks=plan.masks, merge=self.merge, mask_bn=plan.mask_bn,
                                  strict=self.strict, fold_constants=self.fold_constants, inplace=self.inplace)
        report = self.result.report
        if plan.from_batchnorm:
            report.notes.append(
                f"{len(plan.from_batchnorm)} BatchNorm-only masks (network slimming, e.g. NNI's SlimPruner) were "
                "mapped to the filters of the conv feeding each BN; a masked BN channel emits its constant beta, "
                "folded into its consumers")
        if folding:
            report.notes.append(
                f"masks came without BatchNorm masks (e.g. NNI's own pruners): the constants the removed channels "
                f"still emitted were folded into their consumers ({report.constants_folded} channels folded, "
                f"{report.constant_channels_kept} kept for zero-padded consumers); max relative error "
                f"{report.max_rel_error:.3g}")
        elif not plan.mask_bn:
            report.notes.append(
                f"masks came without BatchNorm masks (e.g. NNI's own pruners) and fold_constants=False: removed "
                f"channels still emitted beta - gamma*mean/std, so the pruned model differs from the conv-masked "
                f"one by max relative error {report.max_rel_error:.3g} (the paper's Table 8)")
        self._check_against(reference)
        return self.result.model

    def _check_against(self, reference: nn.Module) -> None:
        """The verdict is against the model NNI masked, not only against our own masked copy."""
        report = self.result.report
        with exact_arithmetic(), torch.no_grad():
            expected = model_outputs(reference, self.dummy_input, None)
            got = model_outputs(self.result.model, self.dummy_input, None)
        rel = max(((e.double() - g.double()).abs().max() / e.double().abs().max().clamp_min(1e-30)).item()
                  for e, g in zip(expected, got) if e.is_floating_point() and e.numel())
        tolerance = report.tolerance if report.tolerance is not None else default_tolerance(expected[0].dtype)
        report.max_rel_error = max(report.max_rel_error or 0.0, rel)
        if rel <= tolerance:
            return
        report.lossless = False
        message = (f"the rebuilt model differs from the NNI-masked model by max relative error {rel:.3g} "
                   f"(> {tolerance:g})")
        if self.strict:
            raise LosslessError(f"{message}; pass strict=False to accept it", report)
        warnings.warn(f"{message}; returned anyway (strict=False)", stacklevel=3)

    @property
    def report(self):
        if self.result is None:
            raise CallOrderError("LosslessSpeedup.report is available after speedup_model(): call it first")
        return self.result.report
