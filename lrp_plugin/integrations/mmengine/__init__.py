"""Lossless pruning inside MMEngine's Runner (``tools/train.py`` / ``tools/test.py``).

Enable it from any mmdet/mmseg config::

    custom_imports = dict(imports=['lrp_plugin.integrations.mmengine'], allow_failed_imports=False)
    custom_hooks = [dict(type='LosslessPruningHook', criterion='l1', ratio=0.5)]

Importing this package registers ``LosslessPruningHook`` (root ``HOOKS``, see ``hook.py``) and
``LRPPruned`` (root ``MODELS``, see ``pruned_model.py``); ``export.py`` writes the pruned
checkpoint and config; ``checkpoint_safety.py`` makes MMEngine checkpoints loadable with
``torch.load(weights_only=True)`` when the hook or LRPPruned is built (not on import).
"""

from ...extras import require

# before the submodules import mmengine, so a missing extra names its install command
require("mmengine", "mmdet", purpose="the MMEngine integration (LosslessPruningHook, LRPPruned)")

from .checkpoint_safety import allow_mmengine_checkpoints, portable_message_hub  # noqa: E402
from .export import write_pruned_checkpoint, write_pruned_config  # noqa: E402
from .hook import META_KEY, ORDERS, LosslessPruningHook  # noqa: E402
from .pruned_model import build_pruned_model, read_spec  # noqa: E402

__all__ = ["META_KEY", "ORDERS", "LosslessPruningHook", "allow_mmengine_checkpoints", "build_pruned_model",
           "portable_message_hub", "read_spec", "write_pruned_checkpoint", "write_pruned_config"]
