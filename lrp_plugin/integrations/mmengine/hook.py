"""``LosslessPruningHook``: mask in ``before_train``, hold through training, rebuild losslessly after.

Registered in MMEngine's ROOT ``HOOKS`` registry, which every scope (mmdet, mmseg) falls back to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from mmengine.dist import broadcast_object_list, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import HOOKS
from torch import nn

from ... import core as lrp
from ...adapters.base import Adapter
from ...core.checks import check_layer_names, check_pruning_options
from ...core.dry_run import dry_run_rebuild
from ...core.report import ReconstructionReport
from ...core.selection import check_ratio_or_target, check_selection
from ...errors import CallOrderError, InvalidArgumentError
from .checkpoint_safety import allow_mmengine_checkpoints, portable_message_hub
from .ema import ema_models, restart_ema
from .export import write_pruned_checkpoint, write_pruned_config
from .models import adapter_for, trace_copy

ORDERS = ("finetune_then_reconstruct", "reconstruct_then_finetune")
META_KEY = "lrp"  # checkpoint['meta']['lrp']: masks (plain tensors), order, spec and report after reconstruction


def remap_optimizer(optim_wrapper: Any, old: Mapping[str, nn.Parameter], model: nn.Module) -> None:
    """After a physical rebuild, point the optimizer at the new parameters (matched by name).

    Only a built optimizer is remapped: in test mode, or before ``Runner.train`` builds it,
    ``runner.optim_wrapper`` is still a config, and the optimizer built later from the
    already shrunk model needs nothing.
    """
    if isinstance(optim_wrapper, OptimWrapperDict):
        wrappers = list(optim_wrapper.values())
    elif isinstance(optim_wrapper, OptimWrapper):
        wrappers = [optim_wrapper]
    else:
        return
    new = dict(model.named_parameters())
    by_id = {id(p): name for name, p in old.items()}
    for wrapper in wrappers:
        optimizer = wrapper.optimizer
        for group in optimizer.param_groups:
            group["params"] = [new[by_id[id(p)]] for p in group["params"] if id(p) in by_id]
        optimizer.state.clear()  # momentum of removed channels has no place in the smaller tensors


@HOOKS.register_module()
class LosslessPruningHook(Hook):
    """Mask by L1/L2/GM in ``before_train``, hold through training, rebuild losslessly after.

    ``order='finetune_then_reconstruct'`` (the paper) holds masks while training and writes
    the pruned checkpoint in ``after_train``; ``'reconstruct_then_finetune'`` (paper Fig. 6)
    rebuilds in ``before_train`` and fine-tunes the smaller model. ``input_size`` is the
    (H, W) of the tracing input (default: the adapter's), ``masks`` a saved mask file to use
    instead of computing them. ``selection`` (``"layer"``/``"group"``) and ``target_macs`` (a MACs
    budget instead of ``ratio``) are ``lrp.compute_masks``'s.
    """

    priority = "VERY_LOW"  # run after every other hook's after_train_iter (e.g. EMA), so masks win

    def __init__(self, criterion: str = "l1", ratio: float | None = None, order: str = ORDERS[0],
                 input_size: int | tuple[int, int] | None = None, ignored_layers: list[str] | None = None,
                 ratio_dict: dict[str, float] | None = None, masks: str | None = None,
                 out_file: str = "pruned.pth", verify: bool = True, selection: str = "layer",
                 target_macs: float | None = None) -> None:
        if order not in ORDERS:
            raise InvalidArgumentError(f"order={order!r}: use one of {ORDERS}")
        # criterion, selection, ratios, budget, ignored_layers checked here, not after the data is loaded
        ratio, self.target_macs = check_ratio_or_target(ratio, target_macs)
        self.selection = check_selection(selection)
        check_pruning_options(criterion, ratio, ratio_dict=ratio_dict, ignored_layers=ignored_layers)
        # the Runner builds hooks before it loads any checkpoint: resuming needs these types
        allow_mmengine_checkpoints()
        self.criterion, self.ratio, self.order = criterion, None if target_macs is not None else ratio, order
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else input_size
        self.ignored_layers = list(ignored_layers or [])
        self.ratio_dict = ratio_dict
        self.masks_file = masks
        self.out_file = out_file
        self.verify = verify
        self.masks: lrp.ChannelMasks | None = None
        self.spec: dict | None = None  # set once the model is physically pruned
        self.report: ReconstructionReport | None = None
        self.pruned_path: Path | None = None

    # -- helpers ----------------------------------------------------------------------
    def _example(self, model: nn.Module, adapter: Adapter) -> torch.Tensor:
        x = adapter.example_inputs(model) if self.input_size is None else torch.randn(1, 3, *self.input_size)
        param = next(model.parameters(), None)
        return x.to(param.device) if param is not None else x

    def _compute_masks(self, model: nn.Module, adapter: Adapter, x: torch.Tensor) -> lrp.ChannelMasks:
        if self.masks_file:
            return lrp.ChannelMasks.load(self.masks_file)
        masks = None
        if is_main_process():
            masks = lrp.compute_masks(
                trace_copy(model, adapter), x, criterion=self.criterion, ratio=self.ratio,
                ignored_layers=[*adapter.ignored_layers(model), *self.ignored_layers],
                ratio_dict=self.ratio_dict, forward_fn=adapter.forward_fn, selection=self.selection,
                target_macs=self.target_macs)
        if get_world_size() > 1:  # rank 0's masks on every rank, whatever each rank's tracing input was
            shared = [masks.state_dict() if masks is not None else None]
            broadcast_object_list(shared, src=0)
            masks = lrp.ChannelMasks.from_state_dict(shared[0])
        return masks

    # -- training ---------------------------------------------------------------------
    def before_run(self, runner) -> None:
        """The first moment the hook sees the model (before weights are loaded): check the layer names."""
        model = lrp.unwrap_model(runner.model)
        check_layer_names(model, [*self.ignored_layers, *(self.ratio_dict or {})], "LosslessPruningHook "
                          "ignored_layers/ratio_dict")

    def before_train(self, runner) -> None:
        model = lrp.unwrap_model(runner.model)
        adapter = adapter_for(model)
        if self.spec is not None:  # resumed after reconstruction: already shrunk in after_load_checkpoint
            return
        x = self._example(model, adapter)
        if self.masks is None:
            self.masks = self._compute_masks(model, adapter, x)
        lrp.apply_masks(model, self.masks)
        for ema in ema_models(runner):  # EMAHook copied the model before it was masked
            lrp.apply_masks(ema, self.masks, hold=False)
        if self.order == "finetune_then_reconstruct" and self.verify:  # fail now, not after the fine-tune
            dry_run_rebuild(trace_copy(model, adapter), x, forward_fn=adapter.forward_fn,
                            when="in LosslessPruningHook.before_train")
        runner.logger.info(f"LosslessPruningHook: {len(self.masks)} convs masked ({self.criterion}, {self.selection}, "
                           f"CR {self.masks.meta.get('ratio', self.ratio)}), "
                           f"masks held during training")
        if self.order == "reconstruct_then_finetune":
            self._reconstruct_in_place(runner, model, adapter, x)

    def _reconstruct_in_place(self, runner, model: nn.Module, adapter: Adapter, x: torch.Tensor) -> None:
        if runner.model is not model:  # DDP (or another wrapper) holds the old parameters and buckets
            raise InvalidArgumentError(
                "order='reconstruct_then_finetune' cannot rebuild a model already wrapped in DDP: run one "
                "single-process job with this order first (a few iterations), then fine-tune the pruned "
                "checkpoint in DDP with the written pruned config")
        old = dict(model.named_parameters())
        result = lrp.reconstruct(trace_copy(model, adapter), x, forward_fn=adapter.forward_fn, verify=self.verify,
                                 inplace=True)
        if result.model is not model:  # SyncBN outside DDP (it could not train anyway): train the reverted model
            runner.model = model = result.model
        self.report = result.report
        self.spec = lrp.channel_spec(model)
        remap_optimizer(getattr(runner, "optim_wrapper", None), old, model)
        restart_ema(runner, model)
        runner.logger.info(f"LosslessPruningHook: reconstructed before fine-tuning\n{result.report}")

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if self.spec is None and self.masks is not None:
            for model in (lrp.unwrap_model(runner.model), *ema_models(runner)):
                lrp.enforce_masks(model)

    def after_train(self, runner) -> None:
        if self.masks is None and self.spec is None:
            raise CallOrderError("LosslessPruningHook.after_train ran before before_train: there are no masks to "
                                 "rebuild from. Let the Runner call the hooks (runner.train()), or call "
                                 "before_train(runner) first")
        # with an EMAHook, its copy is what stock checkpoints save and tests run: rebuild that one
        model = next(iter(ema_models(runner)), lrp.unwrap_model(runner.model))
        if self.spec is None:  # the paper's order: rebuild now
            adapter = adapter_for(model)
            x = self._example(model, adapter)
            result = lrp.reconstruct(trace_copy(model, adapter), x, forward_fn=adapter.forward_fn,
                                     verify=self.verify)
            pruned, self.report = result.model, result.report
        else:
            pruned = model
        if not is_main_process():  # every rank rebuilt (cheap, deterministic); one writes
            return
        self.pruned_path = write_pruned_checkpoint(
            pruned, Path(runner.work_dir) / self.out_file, base_cfg=runner.cfg.model,
            extra_meta={"report": self.report.to_dict() if self.report is not None else None,
                        "dataset_meta": dataset_meta(runner, model)})
        write_pruned_config(runner.cfg, self.pruned_path)
        runner.logger.info(f"LosslessPruningHook: pruned checkpoint {self.pruned_path}\n{self.report}")

    # -- checkpoints ------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        portable_message_hub(checkpoint)  # so resuming works with torch.load(weights_only=True)
        if self.masks is None:
            return
        meta = checkpoint.setdefault("meta", {})
        meta[META_KEY] = {"masks": self.masks.state_dict(), "order": self.order,
                          "spec_json": json.dumps(self.spec) if self.spec is not None else None,
                          "report_json": json.dumps(self.report.to_dict()) if self.report is not None else None}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = (checkpoint.get("meta") or {}).get(META_KEY)
        if not state:
            return
        self.masks = lrp.ChannelMasks.from_state_dict(state["masks"])
        if state.get("report_json"):  # the reconstruction happened before this run: keep its report
            self.report = ReconstructionReport.from_dict(json.loads(state["report_json"]))
        if state.get("spec_json"):  # saved after reconstruction: shrink before the weights are loaded
            model = lrp.unwrap_model(runner.model)
            old = dict(model.named_parameters())
            self.spec = json.loads(state["spec_json"])
            lrp.shrink_to_spec(model, self.spec, inplace=True)
            remap_optimizer(getattr(runner, "optim_wrapper", None), old, model)


def dataset_meta(runner, model: nn.Module) -> dict | None:
    """Class names for the inference APIs (``init_detector`` reads them from the checkpoint meta)."""
    meta = getattr(model, "dataset_meta", None)
    if meta:
        return dict(meta)
    try:
        return dict(runner.train_dataloader.dataset.metainfo)
    except Exception:  # noqa: BLE001 - no dataset, no classes: the checkpoint stays valid without them
        return None
