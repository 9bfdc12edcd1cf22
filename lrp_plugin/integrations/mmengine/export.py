"""Writing the pruned model for OpenMMLab's tools: ``pruned.pth`` (MMEngine checkpoint whose meta
holds the channel spec), ``pruned.pth.spec.json`` and ``pruned.py`` (the config that rebuilds it).

Every file is written whole or not at all (``core.files``); the checkpoint is loaded back before it is named.
``pruned.py`` names the checkpoint relative to itself (``{{ fileDirname }}``, which mmengine
substitutes when it reads the config), so the work dir can be copied or moved as a whole.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ... import core as lrp
from ...adapters.base import find_adapter
from ...core.checks import load_weights_only
from ...core.files import atomic_path, write_text
from ...core.spec import check_loads
from .models import trace_copy
from .pruned_model import SPEC_META_KEY

HOOK_TYPE = "LosslessPruningHook"
CONFIG_DIR_VAR = "{{ fileDirname }}"  # mmengine's predefined variable: the folder of the config file


def write_pruned_checkpoint(model: nn.Module, path: str | Path, base_cfg: Any = None,
                            extra_meta: Mapping[str, Any] | None = None) -> Path:
    """An MMEngine-style checkpoint (``meta`` + ``state_dict``) whose meta holds the channel spec.

    Everything in it loads with ``torch.load(weights_only=True)``; ``path.spec.json`` is written
    beside it so the spec can be read without torch.
    """
    path = Path(path)
    # LRPPruned reverts SyncBN before shrinking: record the spec of the reverted model too
    reverted = trace_copy(model, find_adapter(model))
    spec = lrp.channel_spec(reverted)
    meta = {SPEC_META_KEY: json.dumps(spec)}
    for key, value in (extra_meta or {}).items():
        if value is not None:
            meta[f"lrp_{key}" if key != "dataset_meta" else key] = json.loads(json.dumps(value, default=str))
    if base_cfg is not None:
        meta["lrp_base_model"] = json.dumps(base_cfg.to_dict() if hasattr(base_cfg, "to_dict") else dict(base_cfg))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"meta": meta, "state_dict": state}, tmp)
        written = load_weights_only(tmp, "pruned checkpoint")  # what tools/test.py will read, before it is named
        check_loads(reverted, json.loads(written["meta"][SPEC_META_KEY]), written["state_dict"], source=str(path))
    write_text(path.with_name(path.name + ".spec.json"), json.dumps(spec, indent=1))
    return path


def write_pruned_config(cfg: Any, pruned_path: Path) -> Path:
    """``<pruned>.py`` beside ``pruned_path``: the training config with its model wrapped in
    LRPPruned and the hook removed, ready for ``tools/test.py <pruned>.py <pruned>.pth``.

    The checkpoint is named relative to the config's own folder, so both can move together;
    the training ``work_dir`` is left out for the same reason (set it, or let tools/test.py).
    """
    pruned_path = Path(pruned_path)
    beside = f"{CONFIG_DIR_VAR}/{pruned_path.name}"
    cfg = copy.deepcopy(cfg)
    base = cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model)
    cfg.model = dict(type="LRPPruned", base_type=base.pop("type"), lrp_spec=beside, **base)
    cfg.custom_hooks = [h for h in cfg.get("custom_hooks", []) if h.get("type") != HOOK_TYPE]
    cfg.load_from = beside
    cfg.resume = False
    cfg.pop("work_dir", None)  # tools/test.py picks ./work_dirs/pruned; the training one may not exist here
    out = pruned_path.with_suffix(".py")
    return write_text(out, cfg.pretty_text)
