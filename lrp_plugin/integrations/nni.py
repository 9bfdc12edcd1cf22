"""NNI 3.0 extension: L1/L2/FPGM pruners that mask BatchNorm too, and a lossless ModelSpeedup.

The pruners are NNI pruners (same constructor, config lists, wrappers, ``compress()``
returning ``(model, masks)``); the only change is that the BatchNorm after each selected
conv is added to the config with its gamma and beta masks *aligned* to the conv's filters,
so NNI's own wrappers hold them during NNI-driven fine-tuning (``TorchEvaluator``).

``LosslessSpeedup(model, dummy_input, masks).speedup_model()`` replaces NNI's
``ModelSpeedup`` (which fails on current torch): it turns NNI masks into
``ChannelMasks`` and runs ``lrp.reconstruct``. Masks from NNI's own pruners leave BN
alive; the report then says so and states the resulting output error.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

import torch
from nni.compression.base.config import default_config_schema, select_modules_by_config, trans_legacy_config_list
from nni.compression.base.wrapper import ModuleWrapper
from nni.compression.pruning import FPGMPruner as _NNIFPGMPruner
from nni.compression.pruning import L1NormPruner as _NNIL1NormPruner
from nni.compression.pruning import L2NormPruner as _NNIL2NormPruner
from torch import nn

from ..compat import nni_metric_shrink, nni_set_sparse_ratio
from ..configs import config_root, resolve_config
from ..core import ChannelMasks, ReconstructionResult, compute_masks, reconstruct
from ..core.criteria import criterion_name, get_criterion
from ..core.graph import probe_model
from ..core.selection import check_selection, check_target_macs
from ..errors import CallOrderError, InvalidArgumentError, MaskError

# Config keys our pruners honour; every other NNI key is refused by name, never ignored.
SUPPORTED_KEYS = {"op_types", "op_names", "op_names_re", "exclude_op_names", "exclude_op_types",
                  "exclude_op_names_re", "sparse_ratio", "target_names", "granularity"}
_LEGACY_KEYS = {"sparsity", "sparsity_per_layer", "exclude", "op_partial_names"}  # translated by NNI itself
_WEIGHT_SETTING_KEYS = {"sparse_ratio", "granularity"}
_BIAS_SETTING_KEYS = {"align"}
_DEFAULT_BIAS_ALIGN = {"module_name": None, "target_name": "weight", "dims": [0]}
CONFIG_DIR = config_root() / "nni"  # package data: found in a wheel install as in a checkout


class UnsupportedConfigError(InvalidArgumentError):
    """An NNI config key or value that these pruners do not implement."""


def load_config_list(name_or_path: str | Path) -> list[dict[str, Any]]:
    """A config list from a JSON file, or by name from the shipped ``lrp_plugin/configs/nni``
    (e.g. ``"resnet_cr0.5"``; ``lrp configs list`` prints them)."""
    path = Path(name_or_path)
    if path.is_file():
        text, source = path.read_text(), str(path)
    else:
        name = resolve_config(str(name_or_path), kind="nni")  # FileNotFoundError listing the shipped ones
        text, source = CONFIG_DIR.joinpath(name.split("/", 1)[1]).read_text(), name
    data = json.loads(text)
    config_list = data["config_list"] if isinstance(data, dict) else data
    if not isinstance(config_list, list):
        raise UnsupportedConfigError(f"{source} must hold a list of config dicts (or {{'config_list': [...]}})")
    return config_list


def _check_config_list(model: nn.Module, config_list: list[dict]) -> list[dict]:
    """NNI's own validation first (so NNI's errors stay NNI's), then refuse what we do not implement."""
    if not isinstance(config_list, list) or not config_list:
        raise UnsupportedConfigError("config_list must be a non-empty list of dicts, as for NNI's pruners")
    converted = trans_legacy_config_list(copy.deepcopy(config_list))
    schema = default_config_schema("pruning")
    for config in converted:
        schema.validate(config)  # raises schema.SchemaError, exactly as NNI's pruners do
    for index, config in enumerate(converted):
        settings = config.get("target_settings", {})
        unknown = set(config) - SUPPORTED_KEYS - _LEGACY_KEYS - {"target_settings"}
        for target, setting in settings.items():
            allowed = _WEIGHT_SETTING_KEYS if target == "weight" else _BIAS_SETTING_KEYS if target == "bias" else set()
            unknown |= {f"target_settings.{target}.{key}" for key in set(setting) - allowed}
            if target == "bias" and setting.get("align", _DEFAULT_BIAS_ALIGN) != _DEFAULT_BIAS_ALIGN:
                unknown.add("target_settings.bias.align (other than the default: aligned to the weight's filters)")
        if unknown:
            raise UnsupportedConfigError(
                f"config_list[{index}] uses {sorted(unknown)}, which lrp_plugin's pruners do not implement "
                f"(supported: {sorted(SUPPORTED_KEYS)} and legacy 'sparsity'); remove them or use NNI's pruner")
        weight = settings.get("weight", {})
        if weight.get("granularity", config.get("granularity", "default")) not in ("default", "out_channel"):
            raise UnsupportedConfigError(f"config_list[{index}]: granularity must be 'out_channel' (per filter)")
        if set(config.get("target_names", ["weight", "bias"])) - {"weight", "bias"}:
            raise UnsupportedConfigError(f"config_list[{index}]: target_names may only name 'weight' and 'bias'")
        selected, _, _ = select_modules_by_config(model, config)
        if not selected:
            continue  # e.g. the exclusion entries NNI makes from a legacy {'exclude': True}
        ratio = config.get("sparse_ratio", weight.get("sparse_ratio"))
        if ratio is None or not 0.0 <= float(ratio) < 1.0:
            raise UnsupportedConfigError(
                f"config_list[{index}] needs a sparse_ratio in [0, 1) (the fraction of filters masked per conv)")
        not_conv = sorted(n for n, m in selected.items() if not isinstance(m, nn.Conv2d))
        if not_conv:
            raise UnsupportedConfigError(
                f"config_list[{index}] selects {not_conv[:4]}, which are not Conv2d: these pruners mask conv filters "
                "and their BatchNorm; narrow op_types/op_names to Conv2d")
    return converted


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
        converted = _check_config_list(model, config_list)
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
            for config in converted:
                for conv in select_modules_by_config(model, config)[0]:
                    if conv in pairs:
                        self.norm_layers[conv] = pairs[conv]
            extra = [_aligned_bn_config(conv, bn) for conv, bn in sorted(self.norm_layers.items())]
        super().__init__(model, config_list + extra, evaluator, existed_wrappers)
        self.selection, self.target_macs, self._chosen = selection, target_macs, None
        if selection == "group" or target_macs is not None:  # lrp chooses the filters, NNI masks them
            if dummy_input is None:
                raise MaskError(f"{type(self).__name__}(selection={selection!r}, target_macs=...) traces the model: "
                                "pass dummy_input=...")
            ratios = {n: float(c.get("sparse_ratio", c.get("target_settings", {}).get("weight", {}).get(
                "sparse_ratio", 0.0))) for c in converted for n in select_modules_by_config(model, c)[0]}
            ignored = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in ratios]
            self._chosen = compute_masks(model, dummy_input, self.criterion, None if target_macs else 0.0, ignored,
                                         selection=selection, target_macs=target_macs,
                                         ratio_dict=None if target_macs else ratios)
            for name in ratios if target_macs is not None else ():
                nni_set_sparse_ratio(self, name, self._chosen.meta["ratio"])

    def _calculate_metrics(self, data):
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
                wrapper = self._module_wrappers[module_name]
                for target_name, mask in targets.items():
                    param = getattr(wrapper, target_name, None)
                    if param is not None:
                        param.mul_(mask.to(device=param.device, dtype=param.dtype))
        return model, masks

    def channel_masks(self) -> ChannelMasks:
        """The current NNI masks as lrp ChannelMasks (conv keep-masks, with their BN recorded)."""
        masks = masks_from_nni(self.get_masks())
        masks.norm_layers.update({c: b for c, b in self.norm_layers.items() if c in masks})
        masks.meta.update(criterion=self.criterion, source="nni")
        return masks


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


def masks_from_nni(nni_masks: Mapping[str, Mapping[str, torch.Tensor]], model: nn.Module | None = None) -> ChannelMasks:
    """NNI's ``{module: {'weight': mask, ...}}`` -> keep-masks over output channels of the convs/linears.

    A filter is kept when any entry of its weight mask is non-zero. BatchNorm entries are not
    channel producers and are left out (``LosslessSpeedup`` checks whether they were masked).
    """
    modules = dict(model.named_modules()) if model is not None else {}
    masks = ChannelMasks(meta={"source": "nni"})
    for name, targets in nni_masks.items():
        weight = targets.get("weight") if isinstance(targets, Mapping) else None
        if weight is None or weight.dim() < 2:
            continue  # BN (1-D) or bias-only entries
        if modules and name not in modules:
            raise MaskError(f"NNI masks name {name!r}, which is not a module of the model")
        masks[name] = weight.detach().reshape(weight.shape[0], -1).ne(0).any(dim=1).cpu()
    return masks


def _bn_masked(model: nn.Module, nni_masks: Mapping[str, Mapping[str, torch.Tensor]], masks: ChannelMasks,
               dummy_input: Any) -> bool:
    """True if every masked conv's BatchNorm has gamma and beta masked on the same channels."""
    pairs = probe_model(model, dummy_input).norm_after
    for conv, keep in masks.items():
        if bool(keep.all()) or conv not in pairs:
            continue
        entry = nni_masks.get(pairs[conv], {})
        for target in ("weight", "bias"):
            if target not in entry or not torch.equal(entry[target].ne(0).cpu(), keep):
                return False
    return True


class LosslessSpeedup:
    """Drop-in for ``nni.compression.speedup.ModelSpeedup(model, dummy_input, masks).speedup_model()``.

    Works on current torch, removes channels through Torch-Pruning's dependency graph with the
    paper's union merge, and verifies the result against the masked model. Masks from NNI's own
    pruners leave BN alive: the constants the removed channels still emit are folded into their
    consumers, so the result is exact without re-training (``fold_constants=False`` shows the
    paper's Table 8 loss instead, with a warning).
    """

    def __init__(self, model: nn.Module, dummy_input: Any, masks: Mapping[str, Mapping[str, torch.Tensor]],
                 *, merge: str = "union", inplace: bool = True, fold_constants: bool = True):
        if any(hasattr(m, "_nni_wrapper") or isinstance(m, ModuleWrapper) for m in model.modules()):
            raise MaskError("the model is still wrapped by an NNI pruner: call pruner.unwrap_model() first")
        self.model, self.dummy_input, self.nni_masks = model, dummy_input, masks
        self.merge, self.inplace, self.fold_constants = merge, inplace, fold_constants
        self.result: ReconstructionResult | None = None

    def speedup_model(self) -> nn.Module:
        masks = masks_from_nni(self.nni_masks, self.model)
        mask_bn = _bn_masked(self.model, self.nni_masks, masks, self.dummy_input)
        # NNI keeps masked weights alive under its wrappers; reconstruct zeroes them from the masks
        folding = self.fold_constants and not mask_bn
        self.result = reconstruct(self.model, self.dummy_input, masks=masks, merge=self.merge, mask_bn=mask_bn,
                                  strict=mask_bn or folding, fold_constants=self.fold_constants, inplace=self.inplace)
        report = self.result.report
        if folding:
            report.notes.append(
                f"masks came without BatchNorm masks (e.g. NNI's own pruners): the constants the removed channels "
                f"still emitted were folded into their consumers ({report.constants_folded} channels folded, "
                f"{report.constant_channels_kept} kept for zero-padded consumers); max relative error "
                f"{report.max_rel_error:.3g}")
        elif not mask_bn:
            report.notes.append(
                f"masks came without BatchNorm masks (e.g. NNI's own pruners) and fold_constants=False: removed "
                f"channels still emitted beta - gamma*mean/std, so the pruned model differs from the conv-masked "
                f"one by max relative error {report.max_rel_error:.3g} (the paper's Table 8)")
        return self.result.model

    @property
    def report(self):
        if self.result is None:
            raise CallOrderError("LosslessSpeedup.report is available after speedup_model(): call it first")
        return self.result.report
