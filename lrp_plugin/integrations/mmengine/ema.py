"""The EMA copies that MMEngine's ``EMAHook`` keeps (RTMDet, YOLOX and other stock configs use it).

The EMA copy is made in ``before_run``, before the pruning hook masks the model, and it is what
stock checkpoints save as ``state_dict`` and what validation and testing run. So the masks are
held on it too, and the pruned model is rebuilt from it; a rebuild before fine-tuning gives the
EMA a fresh copy of the smaller model (the old copy's shapes no longer match).
"""

from __future__ import annotations

from typing import Any

from mmengine.hooks import EMAHook
from mmengine.registry import MODELS
from torch import nn


def ema_hooks(runner: Any) -> list[EMAHook]:
    """The runner's EMA hooks that have built their copy (``before_run`` has run)."""
    return [h for h in getattr(runner, "hooks", []) if isinstance(h, EMAHook) and getattr(h, "ema_model", None)]


def ema_models(runner: Any) -> list[nn.Module]:
    """The EMA copies of the model (plain modules, same names as the model)."""
    return [h.ema_model.module for h in ema_hooks(runner)]


def restart_ema(runner: Any, model: nn.Module) -> None:
    """After an in-place rebuild: each EMA hook averages a fresh copy of ``model`` (what ``before_run`` does)."""
    for hook in ema_hooks(runner):
        hook.src_model = model
        hook.ema_model = MODELS.build(hook.ema_cfg, default_args=dict(model=model))
