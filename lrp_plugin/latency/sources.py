"""Turn model arguments into models to time: a registry of source kinds.

Kinds (first match wins, in this order): ``timm:NAME`` (+ its pruned counterpart),
``mmdet:CONFIG`` / ``mmseg:CONFIG`` (a stock config name or a config path, + ``--checkpoint``),
an ``.onnx`` file, an OpenMMLab ``.py`` config (the hook's ``pruned.py`` with ``pruned.pth``, or a
stock one), then any kind registered later; an argument no kind claims is read as a file from
``lrp.save_pruned`` (with ``--base timm:NAME``), the explicit ``FALLBACK_SOURCE``. A new kind is one
``register_source(SourceKind(...))`` call.

Detectors and segmenters are timed through their adapter's tensor-only forward (backbone + neck +
head, no post-processing), wrapped in a module whose outputs are a flat tuple of tensors, so
export, checking and MAC counting treat them like any CNN.

Why random weights are fine: latency depends on shapes, not on values; BatchNorm is randomized
so a pruned counterpart built in-process goes through the same verified reconstruction as a
trained model would.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..adapters.openmmlab import OPENMMLAB_SCOPES
from ..errors import LRPError
from ..extras import require
from .errors import InputShapeError, ModelSourceError


@dataclass
class ModelEntry:
    """One model to time. ``module`` is None for an ONNX file given as is."""

    name: str
    source: str
    module: nn.Module | None = None
    onnx_path: Path | None = None
    params: int | None = None
    macs: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceRequest:
    """What every source kind may need besides its own argument (the job's model settings)."""

    x: torch.Tensor
    base: str | None = None
    checkpoint: str | None = None
    prune_ratio: float | None = None
    criterion: str = "l1"
    round_to: int | None = None
    selection: str = "layer"  # compute_masks's: per-layer masks (the paper) or one per coupled group
    target_macs: float | None = None  # a MACs budget instead of prune_ratio (the ratio is searched)
    num_classes: int = 1000
    seed: int = 0
    quiet: bool = False
    references: dict[str, ModelEntry] = field(default_factory=dict)  # base models, timed first, built once
    masks: dict[tuple, Any] = field(default_factory=dict)  # (model, ratio, criterion) -> masks, reused by variants

    @property
    def prunes(self) -> bool:
        """A pruned counterpart is built (at a ratio or a MACs budget)."""
        return self.prune_ratio is not None or self.target_macs is not None

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)


@dataclass
class SourceKind:
    """A kind of model argument: ``matches(spec)`` picks it, ``load(spec, request)`` builds its entries."""

    name: str
    matches: Callable[[str], bool]
    load: Callable[[str, SourceRequest], list[ModelEntry]]
    describe: str


SOURCE_KINDS: dict[str, SourceKind] = {}


def register_source(kind: SourceKind, *, force: bool = False) -> SourceKind:
    """Add a source kind (tried after the ones before it, always before ``FALLBACK_SOURCE``); duplicate names
    are refused unless ``force``."""
    if kind.name in SOURCE_KINDS and not force:
        raise ModelSourceError(f"a model source kind named {kind.name!r} exists; pass force=True to replace it")
    SOURCE_KINDS[kind.name] = kind
    return kind


def create_timm(name: str, num_classes: int, seed: int) -> nn.Module:
    """A randomly initialised timm model in eval mode with randomized BatchNorm."""
    timm = require("timm", "timm", purpose=f"the model timm:{name}")
    from ..core.modules import randomize_batchnorm

    if name not in timm.list_models():
        raise ModelSourceError(f"timm has no model {name!r}: see timm.list_models() (e.g. timm:resnet50)")
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    return randomize_batchnorm(model, seed=seed).eval()


def prune_in_process(model: nn.Module, x: torch.Tensor, ratio: float | None, criterion: str, *,
                     round_to: int | None = None, ignored_layers: list[str] | None = None, forward_fn: Any = None,
                     masks: Any = None, selection: str = "layer", target_macs: float | None = None) -> nn.Module:
    """compute_masks -> apply_masks -> reconstruct on a copy; the original stays untouched.

    ``masks`` (from an earlier call on the same model) skips compute_masks: variants that differ
    only in ``round_to`` then prune the very same channels.
    """
    from .. import core as lrp

    masked = copy.deepcopy(model)
    if masks is None:
        masks = lrp.compute_masks(masked, x, criterion=criterion, ratio=ratio, ignored_layers=ignored_layers,
                                  forward_fn=forward_fn, selection=selection, target_macs=target_macs,
                                  round_to=round_to)
    lrp.apply_masks(masked, masks)
    return lrp.reconstruct(masked, x, round_to=round_to, forward_fn=forward_fn).model.eval()


def _pruned_name(name: str, req: SourceRequest) -> str:
    suffix = f"-r{req.round_to}" if req.round_to and req.round_to > 1 else ""
    suffix += "-group" if req.selection == "group" else ""
    amount = f"macs{req.target_macs:g}" if req.target_macs is not None else f"cr{req.prune_ratio:g}"
    return f"{name}-{req.criterion}-{amount}{suffix}"


def _prune_entry(name: str, spec: str, model: nn.Module, req: SourceRequest, **adapter_kw: Any) -> ModelEntry:
    """The pruned counterpart of ``model`` at ``--prune-ratio`` (with ``--round-to``), as an entry."""
    req.log(f"pruning {name} in-process: {req.criterion}, {req.selection} selection, "
            + (f"target MACs {req.target_macs}" if req.target_macs is not None else f"ratio {req.prune_ratio}")
            + (f", round_to {req.round_to}" if req.round_to else "") + " (compute_masks, apply_masks, reconstruct)")
    try:
        pruned = prune_in_process(model, req.x, req.prune_ratio, req.criterion, round_to=req.round_to,
                                  selection=req.selection, target_macs=req.target_macs, **adapter_kw)
    except LRPError:  # already names the fix (e.g. UnsupportedLayerError, LosslessError)
        raise
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelSourceError(f"could not prune {spec} ({exc}); lrp prunes BatchNorm CNNs such as timm ResNets "
                               "and the adapted OpenMMLab models: give another model or a pruned file") from exc
    return ModelEntry(_pruned_name(name, req), f"{spec} pruned", module=pruned,
                      notes={"prune": {"ratio": req.prune_ratio, "criterion": req.criterion,
                                       "round_to": req.round_to, "selection": req.selection,
                                       "target_macs": req.target_macs}})


def check_forward(entry: ModelEntry, x: torch.Tensor) -> None:
    """Run the model once so a shape it rejects fails here, with the shape in the message."""
    try:
        with torch.no_grad():
            entry.module(x)
    except (RuntimeError, ValueError, AssertionError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InputShapeError(f"model {entry.name!r} rejects input shape {list(x.shape)}: {first}; fix "
                              "--input-shape (C,H,W) / --batch to what the model takes (e.g. 3,224,224)") from exc


def _existing_file(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelSourceError(f"model file {str(path)!r} does not exist: give a pruned file from lrp.save_pruned "
                               "(with --base timm:NAME), the hook's pruned.py (with --checkpoint pruned.pth), an "
                               ".onnx file, timm:NAME or mmdet:CONFIG / mmseg:CONFIG")
    return path


# ------------------------------------------------------------------------------------------- timm


def _timm_name(spec: str) -> str | None:
    return spec.split(":", 1)[1] if spec.startswith("timm:") else None


def load_timm(spec: str, req: SourceRequest) -> list[ModelEntry]:
    name = _timm_name(spec)
    req.log(f"building timm:{name} (random weights)")
    entry = ModelEntry(name, spec, module=create_timm(name, req.num_classes, req.seed))
    check_forward(entry, req.x)
    return [entry, counterpart(entry, req)] if req.prunes else [entry]


# ------------------------------------------------------------------------------------------- files


def load_onnx(spec: str, req: SourceRequest) -> list[ModelEntry]:
    path = _existing_file(spec)
    return [ModelEntry(path.stem, str(path), onnx_path=path)]


def load_saved_pruned(spec: str, req: SourceRequest) -> list[ModelEntry]:
    """A file from ``lrp.save_pruned``, loaded into ``--base timm:NAME`` (which is timed as the reference)."""
    from .. import core as lrp

    path = _existing_file(spec)
    if req.base is None or _timm_name(req.base) is None:
        raise ModelSourceError(f"{path.name} is a pruned file: also give its base model, e.g. "
                               "--base timm:resnet18 (the architecture it was pruned from)")
    base_model = create_timm(_timm_name(req.base), req.num_classes, req.seed)
    if req.base not in req.references:
        req.references[req.base] = ModelEntry(_timm_name(req.base), req.base, module=copy.deepcopy(base_model))
    req.log(f"loading pruned {path.name} into {req.base}")
    try:
        pruned = lrp.load_pruned(base_model, path).eval()
    except LRPError:  # SpecMismatchError / UnsafeCheckpointError name the fix
        raise
    except Exception as exc:  # torch.load raises UnpicklingError, RuntimeError, EOFError ... on a foreign file
        raise ModelSourceError(f"{str(path)!r} is not a pruned model file from lrp.save_pruned "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); give such a file "
                               "with --base, an .onnx file, or timm:NAME") from exc
    return [ModelEntry(path.stem, str(path), module=pruned)]


# ------------------------------------------------------------------------------------------- OpenMMLab


class TensorForward(nn.Module):
    """A detector/segmenter as a plain CNN: the adapter's tensor-only forward, outputs as a flat tuple."""

    def __init__(self, model: nn.Module, forward_fn: Callable[[nn.Module, torch.Tensor], Any]):
        super().__init__()
        self.model = model
        self.forward_fn = forward_fn

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from ..core.graph import flatten_tensors

        return tuple(flatten_tensors(self.forward_fn(self.model, x)))


def _scoped(spec: str) -> tuple[str | None, str]:
    """``mmdet:CONFIG`` -> ("mmdet", "CONFIG"); anything else -> (None, spec)."""
    head, _, rest = spec.partition(":")
    return (head, rest) if head in OPENMMLAB_SCOPES and rest else (None, spec)


def _read_config(spec: str) -> tuple[str, Any]:
    """(scope, Config) of ``mmdet:CONFIG`` / ``mmseg:CONFIG`` (stock name or path) or a config path."""
    scope, config = _scoped(spec)
    require("mmengine", scope or "mmdet", purpose=f"reading the config {config}")
    from mmengine.config import Config

    from ..adapters.openmmlab import stock_config_path

    path = Path(config).expanduser()
    try:
        if not path.is_file():
            if scope is None:
                _existing_file(config)
            require(scope, scope, purpose=f"the config {spec}")
            path = stock_config_path(scope, config)
        cfg = Config.fromfile(str(path))
    except LRPError:
        raise
    except Exception as exc:  # mmengine raises many types on a bad config file
        raise ModelSourceError(f"cannot read the config {spec!r} ({type(exc).__name__}: {str(exc)[:200]}); give "
                               "an mmdet/mmseg config file or a stock name such as "
                               "mmdet:yolo/yolov3_d53_8xb8-ms-416-273e_coco.py") from exc
    scope = scope or cfg.get("default_scope")
    if scope not in OPENMMLAB_SCOPES:
        raise ModelSourceError(f"{spec}: its default_scope is {scope!r}; the latency tool builds mmdet and mmseg "
                               "models (write mmdet:CONFIG or mmseg:CONFIG to say which)")
    if cfg.get("custom_imports"):  # e.g. the hook's pruned.py imports the module registering LRPPruned
        from mmengine.utils import import_modules_from_strings

        import_modules_from_strings(**cfg.custom_imports)
    return scope, cfg


def load_weights_into(model: nn.Module, checkpoint: str) -> None:
    """Strictly load an MMEngine checkpoint (``state_dict`` + ``meta``) or a bare state dict."""
    path = _existing_file(checkpoint)
    from ..core.checks import load_weights_only
    from ..integrations.mmengine_hook import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()  # plain types MMEngine puts in checkpoints; still weights_only
    # the core's reader: UnsafeCheckpointError for a file holding code, SpecMismatchError for one torch cannot read
    payload = load_weights_only(path, "checkpoint")
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise ModelSourceError(f"{str(path)!r} holds no state dict: give an MMEngine checkpoint (.pth)")
    try:
        model.load_state_dict(state, strict=True)
    except LRPError:
        raise
    except RuntimeError as exc:
        raise ModelSourceError(f"{path.name} does not fit the model of the config ({str(exc).splitlines()[0][:200]}"
                               "...); give the checkpoint written with this config") from exc


def _openmmlab_entry(name: str, spec: str, scope: str, model_cfg: Any, req: SourceRequest,
                     checkpoint: str | None) -> tuple[ModelEntry, Any]:
    """Build ``model_cfg`` in ``scope``, load ``checkpoint``, wrap its tensor-only forward; (entry, adapter)."""
    from ..adapters.base import find_adapter
    from ..adapters.openmmlab import build_in_scope
    from ..core.modules import randomize_batchnorm

    torch.manual_seed(req.seed)
    model = build_in_scope(scope, model_cfg)
    adapter = find_adapter(model)
    if adapter is None or adapter.forward_fn is None:
        raise ModelSourceError(f"{spec}: lrp_plugin has no adapter for {type(model).__name__}, so it does not know "
                               "its tensor-only forward; supported are mmdet YOLOv3 and mmseg EncoderDecoder (FCN), "
                               "or register an Adapter with lrp_plugin.adapters.register_adapter")
    model = adapter.prepare(model)
    if checkpoint is not None:
        load_weights_into(model, checkpoint)
    else:
        randomize_batchnorm(model, seed=req.seed)  # random weights: latency depends on shapes only
    entry = ModelEntry(name, spec, module=TensorForward(model.eval(), adapter.forward_fn).eval())
    check_forward(entry, req.x)
    return entry, adapter


def load_openmmlab(spec: str, req: SourceRequest) -> list[ModelEntry]:
    """``mmdet:CONFIG`` / ``mmseg:CONFIG`` (or a stock config file): the model, + its pruned counterpart."""
    scope, cfg = _read_config(spec)
    name = Path(_scoped(spec)[1]).stem
    req.log(f"building {name} ({scope}{', weights ' + req.checkpoint if req.checkpoint else ', random weights'})")
    entry, _ = _openmmlab_entry(name, spec, scope, copy.deepcopy(cfg.model), req, req.checkpoint)
    return [entry, counterpart(entry, req)] if req.prunes else [entry]


def _is_pruned_config(cfg: Any) -> bool:
    return cfg.get("model", {}).get("type") == "LRPPruned"


def load_pruned_config(spec: str, req: SourceRequest) -> list[ModelEntry]:
    """The hook's ``pruned.py`` (+ ``--checkpoint pruned.pth``); the reference is ``--base CONFIG`` or
    the stock model the pruned config wraps. A plain OpenMMLab config is treated like ``mmdet:CONFIG``."""
    path = _existing_file(spec)
    scope, cfg = _read_config(str(path))
    if not _is_pruned_config(cfg):
        return load_openmmlab(str(path), req)
    model_cfg = copy.deepcopy(cfg.model)
    checkpoint = req.checkpoint or cfg.get("load_from")
    if not checkpoint:
        raise ModelSourceError(f"{path.name} is a pruned config: give its checkpoint, e.g. --checkpoint "
                               f"{path.with_suffix('.pth')}")
    if not Path(str(model_cfg.get("lrp_spec", ""))).is_file():  # the work dir moved: the spec is in the .pth
        model_cfg["lrp_spec"] = str(checkpoint)
    ref_key = req.base or f"{path}#base"
    if ref_key not in req.references:
        if req.base is not None:
            ref_scope, ref_cfg = _read_config(req.base)
            ref_model, ref_name = copy.deepcopy(ref_cfg.model), Path(_scoped(req.base)[1]).stem
        else:  # the stock model LRPPruned shrinks
            ref_scope, ref_model = scope, {k: v for k, v in model_cfg.items() if k not in ("lrp_spec", "base_type")}
            ref_model["type"] = model_cfg.get("base_type")
            ref_name = f"{path.stem}-base"
        req.log(f"building the reference {ref_name} (random weights)")
        req.references[ref_key] = _openmmlab_entry(ref_name, req.base or f"{path} (base)", ref_scope, ref_model,
                                                   req, None)[0]
    req.log(f"building {path.name} with {Path(checkpoint).name}")
    entry, _ = _openmmlab_entry(path.stem, str(path), scope, model_cfg, req, str(checkpoint))
    return [entry]


register_source(SourceKind("timm", lambda s: s.startswith("timm:"), load_timm, "timm:NAME"))
register_source(SourceKind("openmmlab", lambda s: _scoped(s)[0] is not None, load_openmmlab,
                           "mmdet:CONFIG / mmseg:CONFIG (stock name or path; --checkpoint)"))
register_source(SourceKind("onnx", lambda s: s.lower().endswith(".onnx"), load_onnx, "an .onnx file"))
register_source(SourceKind("openmmlab-config", lambda s: s.lower().endswith(".py"), load_pruned_config,
                           "the hook's pruned.py (--checkpoint pruned.pth, optional --base CONFIG)"))
# not registered: the kind of every argument no registered kind claims, however many are added after
FALLBACK_SOURCE = SourceKind("saved-pruned", lambda s: True, load_saved_pruned,
                             "a file from lrp.save_pruned (--base timm:NAME)")


def source_kind(spec: str) -> SourceKind:
    """The first registered kind that claims ``spec``, else the fallback (a file from lrp.save_pruned)."""
    return next((k for k in SOURCE_KINDS.values() if k.matches(spec)), FALLBACK_SOURCE)


def counterpart(entry: ModelEntry, req: SourceRequest) -> ModelEntry:
    """The pruned counterpart of a built entry at ``req.prune_ratio`` / ``req.round_to`` (MACs counted);
    detectors and segmenters are pruned through their adapter (ignored layers, tensor-only forward)."""
    from ..adapters.base import find_adapter

    model, adapter = entry.module, None
    if isinstance(model, TensorForward):
        model = model.model
        adapter = find_adapter(model)
    kw = {} if adapter is None else {"ignored_layers": adapter.ignored_layers(model), "forward_fn": adapter.forward_fn}
    key = (entry.name, req.prune_ratio, req.criterion, req.selection, req.target_macs)
    if key not in req.masks:
        from .. import core as lrp

        req.masks[key] = lrp.compute_masks(model, req.x, criterion=req.criterion, ratio=req.prune_ratio,
                                           selection=req.selection, target_macs=req.target_macs, **kw)
    pruned = _prune_entry(entry.name, entry.source, model, req, masks=req.masks[key], **kw)
    if adapter is not None:
        pruned.module = TensorForward(pruned.module, adapter.forward_fn).eval()
    count(pruned, req.x)
    return pruned


def count(entry: ModelEntry, x: torch.Tensor) -> ModelEntry:
    """Check the forward on ``x`` and fill in MACs and params."""
    from .. import core as lrp

    check_forward(entry, x)
    macs, params = lrp.count_macs_params(entry.module, x)
    entry.macs, entry.params = int(macs), int(params)
    return entry


def load_models(specs: list[str], req: SourceRequest) -> list[ModelEntry]:
    """Resolve every argument with the first matching source kind; references (bases) come first."""
    entries: list[ModelEntry] = []
    for spec in specs:
        entries += source_kind(spec).load(spec, req)
    entries = [*req.references.values(), *entries]
    if not entries:
        raise ModelSourceError("no model given: e.g. timm:resnet18 --prune-ratio 0.5")
    seen: dict[str, int] = {}
    for e in entries:  # unique names: they are keys in the result
        if e.name in seen:
            seen[e.name] += 1
            e.name = f"{e.name}#{seen[e.name]}"
        else:
            seen[e.name] = 1
        if e.module is not None and e.macs is None:
            count(e, req.x)
    return entries
