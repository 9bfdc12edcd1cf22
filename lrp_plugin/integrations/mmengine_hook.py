"""Backward-compatible name of :mod:`lrp_plugin.integrations.mmengine`.

Configs written before the split list ``custom_imports=['lrp_plugin.integrations.mmengine_hook']``;
importing this module registers the same hook and model type. New configs use
``lrp_plugin.integrations.mmengine``.
"""

from .mmengine import *  # noqa: F403  (the same public names: LosslessPruningHook, build_pruned_model ...)
from .mmengine import __all__  # noqa: F401
