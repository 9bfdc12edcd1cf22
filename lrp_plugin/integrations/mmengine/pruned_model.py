"""``LRPPruned``: the stock OpenMMLab model shrunk to a saved channel spec (root ``MODELS``).

The pruned config written by the hook (``pruned.py``) uses it, so ``tools/test.py``,
``get_flops.py`` and the inference APIs build the pruned architecture and load the pruned
checkpoint with strict shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from mmengine.registry import MODELS, DefaultScope
from torch import nn

from ... import core as lrp
from ...adapters.base import find_adapter
from ...adapters.openmmlab import OPENMMLAB_SCOPES, register_installed_scopes
from ...core.checks import check_state_dict_fits, load_weights_only
from ...core.spec import SPEC_FORMAT
from ...errors import InvalidArgumentError, SpecMismatchError, UnknownModelError
from .checkpoint_safety import allow_mmengine_checkpoints

SPEC_META_KEY = "lrp_spec_json"  # checkpoint['meta'][SPEC_META_KEY]: the channel spec as JSON


def read_spec(spec: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A channel spec from a dict, a ``.spec.json`` file, or a pruned checkpoint's meta."""
    if isinstance(spec, Mapping):
        return dict(spec)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"pruned spec {str(path)!r} does not exist: pass the pruned checkpoint written by "
                                "LosslessPruningHook (or its .spec.json); a pruned.py written by the hook finds "
                                "pruned.pth beside itself, so keep the two together when moving them")
    if path.suffix == ".json":
        return json.loads(path.read_text())
    payload = load_weights_only(path, "pruned checkpoint")
    meta = payload.get("meta", {}) if isinstance(payload, dict) else {}
    if SPEC_META_KEY in meta:
        return json.loads(meta[SPEC_META_KEY])
    if isinstance(payload, dict) and payload.get("format") == SPEC_FORMAT:  # lrp.save_pruned file
        return json.loads(payload["spec_json"])
    raise SpecMismatchError(f"{str(path)!r} holds no lrp channel spec: pass the checkpoint written by "
                            "LosslessPruningHook or lrp.save_pruned (or their .spec.json)")


def strict_shapes_hook(module: nn.Module, state_dict: dict, prefix: str, *_args: Any) -> None:
    """MMEngine loads checkpoints with strict=False and only warns on shape mismatch; a pruned
    model loaded that way would silently keep uninitialised weights. Refuse instead."""
    if prefix:
        return
    try:
        check_state_dict_fits(module, state_dict, source="the checkpoint")
    except SpecMismatchError as exc:
        raise SpecMismatchError(f"{exc} For a pruned model (strict loading), load the checkpoint written together "
                                "with its spec (the same pruned .pth).") from None


@MODELS.register_module(name="LRPPruned")
def build_pruned_model(lrp_spec: str | Path | Mapping[str, Any], base_type: str | None = None,
                       base: Mapping[str, Any] | None = None, **base_kwargs: Any) -> nn.Module:
    """The stock model shrunk to ``lrp_spec`` (weights uninitialised: load the pruned checkpoint).

    The base model is ``base`` (a model config) or ``dict(type=base_type, **base_kwargs)``: the
    flat form keeps ``cfg.model.backbone`` & co. where tools/test.py, get_flops.py and the
    inference APIs (``init_detector``, ``init_model``) look for them. Registered in the root
    MODELS registry, so it builds under any scope.
    """
    allow_mmengine_checkpoints()  # the Runner loads the checkpoint after building the model
    register_installed_scopes()
    if base is None:
        if base_type is None:
            raise InvalidArgumentError("LRPPruned needs the stock model: base_type='YOLOV3' (plus the model's own "
                                       "keys) or base=dict(type=...); use the pruned .py config the hook wrote")
        base = dict(type=base_type, **base_kwargs)
    else:
        base = {**dict(base), **{k: v for k, v in base_kwargs.items() if v is not None}}
    spec = read_spec(lrp_spec)  # before the (large) base model is built: a missing file costs nothing
    scope = DefaultScope.get_current_instance()
    model = MODELS.build(base) if scope is not None else build_with_guessed_scope(base)
    adapter = find_adapter(model)
    if adapter is not None:
        model = adapter.prepare(model)
    model = lrp.shrink_to_spec(model, spec, inplace=True)
    model.register_load_state_dict_pre_hook(strict_shapes_hook)
    return model


def build_with_guessed_scope(base: dict) -> nn.Module:
    """Build under each OpenMMLab scope in turn (mmdet, then mmseg) when the config sets no ``default_scope``."""
    for scope in OPENMMLAB_SCOPES:
        with DefaultScope.overwrite_default_scope(scope):
            try:
                return MODELS.build(base)
            except KeyError:
                continue
    raise UnknownModelError(f"cannot build base model type {base.get('type')!r}: set default_scope in the config")
