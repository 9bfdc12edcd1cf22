"""Lossless pruning inside MMEngine's Runner (``tools/train.py`` / ``tools/test.py``).

Enable it from any mmdet/mmseg config::

    custom_imports = dict(imports=['lrp_plugin.integrations.mmengine_hook'], allow_failed_imports=False)
    custom_hooks = [dict(type='LosslessPruningHook', criterion='l1', ratio=0.5)]

The hook lives in MMEngine's ROOT ``HOOKS`` registry, which every scope (mmdet, mmseg) falls
back to. ``LRPPruned`` (root ``MODELS``) rebuilds the stock architecture shrunk to a saved
channel spec, so the pruned checkpoint loads with strict shapes in ``Runner.test()`` and the
inference APIs. Importing this module also allow-lists, for ``torch.load(weights_only=True)``,
the few plain types MMEngine puts in its checkpoints, instead of turning weights-only off.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS, MODELS
from torch import nn

from .. import core as lrp
from ..adapters.base import Adapter, find_adapter
from ..core.criteria import check_ratio
from ..core.spec import SPEC_FORMAT
from ..errors import InvalidArgumentError, SpecMismatchError, UnknownModelError

ORDERS = ("finetune_then_reconstruct", "reconstruct_then_finetune")
META_KEY = "lrp"  # checkpoint['meta']['lrp']: masks (plain tensors), order, spec after reconstruction


def _numpy_safe_globals() -> list[Any]:
    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "uint8", "bool")]
    return [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar, *dtypes]


def allow_mmengine_checkpoints() -> None:
    """Allow-list (not disable) what MMEngine checkpoints hold besides tensors: its
    ``HistoryBuffer`` and numpy arrays/scalars. mmengine <= 0.10.7 calls ``torch.load``
    without ``weights_only``, which torch >= 2.6 treats as True. ``builtins.getattr`` (which
    HistoryBuffer's own pickling needs) is NOT allowed: it would allow arbitrary code; our
    hook writes HistoryBuffers without it instead (see ``_portable_message_hub``)."""
    from mmengine.logging import HistoryBuffer

    torch.serialization.add_safe_globals([HistoryBuffer, *_numpy_safe_globals()])


class _PortableHistoryBuffer:
    """Pickles as ``HistoryBuffer(log_history, count_history, max_length)`` with plain lists,
    so the checkpoint loads as a genuine HistoryBuffer under ``weights_only=True``."""

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer

        logs, counts = self.buffer.data
        return HistoryBuffer, ([float(v) for v in logs], [int(c) for c in counts], int(self.buffer.max_length))


def _portable_message_hub(checkpoint: dict) -> None:
    """Swap (in the checkpoint dict only, never in the live MessageHub) each HistoryBuffer
    for one that pickles without ``builtins.getattr``."""
    from mmengine.logging import HistoryBuffer

    hub = checkpoint.get("message_hub")
    if isinstance(hub, dict) and isinstance(hub.get("log_scalars"), dict):
        scalars = {k: _PortableHistoryBuffer(v) if isinstance(v, HistoryBuffer) else v
                   for k, v in hub["log_scalars"].items()}
        checkpoint["message_hub"] = {**hub, "log_scalars": scalars}


allow_mmengine_checkpoints()


def _register_scopes() -> None:
    """Make sure the mmdet/mmseg model classes are registered (adapters match on them)."""
    for pkg in ("mmdet", "mmseg"):
        try:
            __import__(f"{pkg}.utils", fromlist=["register_all_modules"]).register_all_modules(
                init_default_scope=False)
        except ImportError:
            continue


def _adapter_for(model: nn.Module) -> Adapter:
    _register_scopes()
    from ..adapters import mmdet_yolo, mmseg_fcn  # noqa: F401  (registers the adapters)

    adapter = find_adapter(model)
    if adapter is None:
        raise UnknownModelError(
            f"lrp_plugin has no adapter for {type(model).__module__}.{type(model).__name__}: "
            "LosslessPruningHook supports mmdet YOLOv3 and mmseg EncoderDecoder (FCN) models; for another "
            "model register one with lrp_plugin.adapters.register_adapter(Adapter(...)) in a module listed "
            "in custom_imports")
    return adapter


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


def compute_masks(model: nn.Module, adapter: Adapter, x: torch.Tensor, **kwargs: Any) -> lrp.ChannelMasks:
    """``lrp.compute_masks`` through the adapter's tensor-only forward (frozen stages included)."""
    return lrp.compute_masks(model, x, forward_fn=adapter.forward_fn, **kwargs)


def reconstruct(model: nn.Module, adapter: Adapter, x: torch.Tensor, **kwargs: Any) -> lrp.ReconstructionResult:
    """``lrp.reconstruct`` through the adapter; frozen stages stay frozen in the result."""
    return lrp.reconstruct(model, x, forward_fn=adapter.forward_fn, **kwargs)


def _remap_optimizer(optim_wrapper: Any, old: Mapping[str, nn.Parameter], model: nn.Module) -> None:
    """After a physical rebuild, point the optimizer at the new parameters (matched by name)."""
    if optim_wrapper is None:
        return
    new = dict(model.named_parameters())
    by_id = {id(p): name for name, p in old.items()}
    wrappers = optim_wrapper.values() if hasattr(optim_wrapper, "values") else [optim_wrapper]
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
    instead of computing them.
    """

    priority = "VERY_LOW"  # run after every other hook's after_train_iter (e.g. EMA), so masks win

    def __init__(self, criterion: str = "l1", ratio: float = 0.5, order: str = ORDERS[0],
                 input_size: int | tuple[int, int] | None = None, ignored_layers: list[str] | None = None,
                 ratio_dict: dict[str, float] | None = None, masks: str | None = None,
                 out_file: str = "pruned.pth", verify: bool = True) -> None:
        if order not in ORDERS:
            raise InvalidArgumentError(f"order={order!r}: use one of {ORDERS}")
        check_ratio(ratio)  # refuse 1.0 (an empty layer) here, not after the data is loaded
        self.criterion, self.ratio, self.order = criterion, ratio, order
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else input_size
        self.ignored_layers = list(ignored_layers or [])
        self.ratio_dict = ratio_dict
        self.masks_file = masks
        self.out_file = out_file
        self.verify = verify
        self.masks: lrp.ChannelMasks | None = None
        self.spec: dict | None = None  # set once the model is physically pruned
        self.report: Any = None
        self.pruned_path: Path | None = None

    # -- helpers ----------------------------------------------------------------------
    def _example(self, model: nn.Module, adapter: Adapter) -> torch.Tensor:
        x = adapter.example_inputs(model) if self.input_size is None else torch.randn(1, 3, *self.input_size)
        param = next(model.parameters(), None)
        return x.to(param.device) if param is not None else x

    @staticmethod
    def _trace_copy(model: nn.Module, adapter: Adapter) -> nn.Module:
        """SyncBN needs a process group even to trace: trace a reverted copy, same names."""
        if any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
            return adapter.prepare(copy.deepcopy(model))
        return model

    # -- training ---------------------------------------------------------------------
    def before_train(self, runner) -> None:
        model = _unwrap(runner.model)
        adapter = _adapter_for(model)
        x = self._example(model, adapter)
        if self.spec is not None:  # resumed after reconstruction: already shrunk in after_load_checkpoint
            return
        if self.masks is None:
            if self.masks_file:
                self.masks = lrp.ChannelMasks.load(self.masks_file)
            else:
                traced = self._trace_copy(model, adapter)
                self.masks = compute_masks(
                    traced, adapter, x, criterion=self.criterion, ratio=self.ratio,
                    ignored_layers=[*adapter.ignored_layers(model), *self.ignored_layers],
                    ratio_dict=self.ratio_dict)
        lrp.apply_masks(model, self.masks)
        runner.logger.info(f"LosslessPruningHook: {len(self.masks)} convs masked ({self.criterion}, CR {self.ratio}), "
                           f"masks held during training")
        if self.order == "reconstruct_then_finetune":
            self._reconstruct_in_place(runner, model, adapter, x)

    def _reconstruct_in_place(self, runner, model: nn.Module, adapter: Adapter, x: torch.Tensor) -> None:
        if is_model_wrapper(runner.model) and isinstance(runner.model, nn.parallel.DistributedDataParallel):
            raise InvalidArgumentError(
                "order='reconstruct_then_finetune' cannot rebuild a model already wrapped in DDP: run one "
                "single-process job with this order first (a few iterations), then fine-tune the pruned "
                "checkpoint in DDP with the written pruned config")
        old = dict(model.named_parameters())
        result = reconstruct(self._trace_copy(model, adapter), adapter, x, verify=self.verify, inplace=True)
        if result.model is not model:  # SyncBN outside DDP (it could not train anyway): train the reverted model
            runner.model = model = result.model
        self.report = result.report
        self.spec = lrp.channel_spec(model)
        _remap_optimizer(getattr(runner, "optim_wrapper", None), old, model)
        runner.logger.info(f"LosslessPruningHook: reconstructed before fine-tuning\n{result.report}")

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if self.spec is None and self.masks is not None:
            lrp.enforce_masks(_unwrap(runner.model))

    def after_train(self, runner) -> None:
        model = _unwrap(runner.model)
        adapter = _adapter_for(model)
        if self.spec is None:  # the paper's order: rebuild now
            x = self._example(model, adapter)
            result = reconstruct(self._trace_copy(model, adapter), adapter, x, verify=self.verify)
            pruned, self.report = result.model, result.report
        else:
            pruned = model
        if not is_main_process():  # every rank rebuilt (cheap, deterministic); one writes
            return
        self.pruned_path = write_pruned_checkpoint(
            pruned, Path(runner.work_dir) / self.out_file, base_cfg=runner.cfg.model,
            extra_meta={"report": self.report.to_dict() if self.report is not None else None,
                        "dataset_meta": _dataset_meta(runner, model)})
        write_pruned_config(runner.cfg, self.pruned_path)
        runner.logger.info(f"LosslessPruningHook: pruned checkpoint {self.pruned_path}\n{self.report}")

    # -- checkpoints ------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        _portable_message_hub(checkpoint)  # so resuming works with torch.load(weights_only=True)
        if self.masks is None:
            return
        meta = checkpoint.setdefault("meta", {})
        meta[META_KEY] = {"masks": self.masks.state_dict(), "order": self.order,
                          "spec_json": json.dumps(self.spec) if self.spec is not None else None}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = (checkpoint.get("meta") or {}).get(META_KEY)
        if not state:
            return
        self.masks = lrp.ChannelMasks.from_state_dict(state["masks"])
        if state.get("spec_json"):  # saved after reconstruction: shrink before the weights are loaded
            model = _unwrap(runner.model)
            old = dict(model.named_parameters())
            self.spec = json.loads(state["spec_json"])
            lrp.shrink_to_spec(model, self.spec, inplace=True)
            _remap_optimizer(getattr(runner, "optim_wrapper", None), old, model)


def _dataset_meta(runner, model: nn.Module) -> dict | None:
    """Class names for the inference APIs (``init_detector`` reads them from the checkpoint meta)."""
    meta = getattr(model, "dataset_meta", None)
    if meta:
        return dict(meta)
    try:
        return dict(runner.train_dataloader.dataset.metainfo)
    except Exception:  # noqa: BLE001 - no dataset, no classes: the checkpoint stays valid without them
        return None


# -- the pruned checkpoint and the test-time model ---------------------------------------
def write_pruned_checkpoint(model: nn.Module, path: str | Path, base_cfg: Any = None,
                            extra_meta: Mapping[str, Any] | None = None) -> Path:
    """An MMEngine-style checkpoint (``meta`` + ``state_dict``) whose meta holds the channel spec.

    Everything in it loads with ``torch.load(weights_only=True)``; ``path.spec.json`` is written
    beside it so the spec can be read without torch.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    adapter = find_adapter(model)
    # LRPPruned reverts SyncBN before shrinking: record the spec of the reverted model too
    spec = lrp.channel_spec(LosslessPruningHook._trace_copy(model, adapter) if adapter is not None else model)
    meta = {"lrp_spec_json": json.dumps(spec)}
    for key, value in (extra_meta or {}).items():
        if value is not None:
            meta[f"lrp_{key}" if key != "dataset_meta" else key] = json.loads(json.dumps(value, default=str))
    if base_cfg is not None:
        meta["lrp_base_model"] = json.dumps(base_cfg.to_dict() if hasattr(base_cfg, "to_dict") else dict(base_cfg))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"meta": meta, "state_dict": state}, path)
    path.with_name(path.name + ".spec.json").write_text(json.dumps(spec, indent=1))
    return path


def write_pruned_config(cfg: Any, pruned_path: Path) -> Path:
    """``<pruned>.py``: the training config with its model wrapped in LRPPruned and the hook removed,
    ready for ``tools/test.py <pruned>.py <pruned>.pth``."""
    cfg = copy.deepcopy(cfg)
    base = cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model)
    cfg.model = dict(type="LRPPruned", base_type=base.pop("type"), lrp_spec=str(pruned_path), **base)
    cfg.custom_hooks = [h for h in cfg.get("custom_hooks", []) if h.get("type") != "LosslessPruningHook"]
    cfg.load_from = str(pruned_path)
    cfg.resume = False
    out = pruned_path.with_suffix(".py")
    cfg.dump(str(out))
    return out


def read_spec(spec: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A channel spec from a dict, a ``.spec.json`` file, or a pruned checkpoint's meta."""
    if isinstance(spec, Mapping):
        return dict(spec)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"pruned spec {str(path)!r} does not exist: pass the pruned checkpoint written by "
                                "LosslessPruningHook (or its .spec.json)")
    if path.suffix == ".json":
        return json.loads(path.read_text())
    payload = torch.load(path, map_location="cpu", weights_only=True)
    meta = payload.get("meta", {}) if isinstance(payload, dict) else {}
    if "lrp_spec_json" in meta:
        return json.loads(meta["lrp_spec_json"])
    if isinstance(payload, dict) and payload.get("format") == SPEC_FORMAT:  # lrp.save_pruned file
        return json.loads(payload["spec_json"])
    raise SpecMismatchError(f"{str(path)!r} holds no lrp channel spec: pass the checkpoint written by "
                            "LosslessPruningHook or lrp.save_pruned (or their .spec.json)")


def _strict_shapes_hook(module: nn.Module, state_dict: dict, prefix: str, *_args: Any) -> None:
    """MMEngine loads checkpoints with strict=False and only warns on shape mismatch; a pruned
    model loaded that way would silently keep uninitialised weights. Refuse instead."""
    if prefix:
        return
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [f"{k}: checkpoint {list(state_dict[k].shape)} vs model {list(own[k].shape)}"
             for k in own if k in state_dict and hasattr(state_dict[k], "shape")
             and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise SpecMismatchError(
            "the checkpoint does not fit the pruned model (strict loading): "
            + "; ".join(filter(None, [f"missing {missing[:3]}" if missing else "",
                                      f"unexpected {unexpected[:3]}" if unexpected else "", *wrong[:3]]))
            + ". Load the checkpoint written together with this spec (the same pruned .pth).")


@MODELS.register_module(name="LRPPruned")
def build_pruned_model(lrp_spec: str | Path | Mapping[str, Any], base_type: str | None = None,
                       base: Mapping[str, Any] | None = None, **base_kwargs: Any) -> nn.Module:
    """The stock model shrunk to ``lrp_spec`` (weights uninitialised: load the pruned checkpoint).

    The base model is ``base`` (a model config) or ``dict(type=base_type, **base_kwargs)``: the
    flat form keeps ``cfg.model.backbone`` & co. where tools/test.py, get_flops.py and the
    inference APIs (``init_detector``, ``init_model``) look for them. Registered in the root
    MODELS registry, so it builds under any scope.
    """
    from mmengine.registry import DefaultScope

    _register_scopes()
    if base is None:
        if base_type is None:
            raise InvalidArgumentError("LRPPruned needs the stock model: base_type='YOLOV3' (plus the model's own "
                                       "keys) or base=dict(type=...); use the pruned .py config the hook wrote")
        base = dict(type=base_type, **base_kwargs)
    else:
        base = {**dict(base), **{k: v for k, v in base_kwargs.items() if v is not None}}
    scope = DefaultScope.get_current_instance()
    model = MODELS.build(base) if scope is not None else _build_with_guessed_scope(base)
    from ..adapters import mmdet_yolo, mmseg_fcn  # noqa: F401

    adapter = find_adapter(model)
    if adapter is not None:
        model = adapter.prepare(model)
    model = lrp.shrink_to_spec(model, read_spec(lrp_spec), inplace=True)
    model.register_load_state_dict_pre_hook(_strict_shapes_hook)
    return model


def _build_with_guessed_scope(base: dict) -> nn.Module:
    from mmengine.registry import DefaultScope

    for scope in ("mmdet", "mmseg"):
        with DefaultScope.overwrite_default_scope(scope):
            try:
                return MODELS.build(base)
            except KeyError:
                continue
    raise UnknownModelError(f"cannot build base model type {base.get('type')!r}: set default_scope in the config")
