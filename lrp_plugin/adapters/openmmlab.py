"""What the OpenMMLab adapters share: stock configs, building a model in its scope, SyncBN.

mmdet/mmseg/mmengine are imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UnknownModelError
from ..extras import require


def stock_config_path(package: str, relpath: str) -> Path:
    """The config file shipped in an OpenMMLab wheel (``<pkg>/.mim/configs/<relpath>``)."""
    root = Path(importlib.import_module(package).__file__).parent / ".mim" / "configs"
    path = root / relpath
    if not path.is_file():
        raise UnknownModelError(f"{package} does not ship the config {relpath!r} (looked in {root}); "
                                f"pass a path to your own config instead")
    return path


def model_config(scope: str, config: str | Path | Any) -> Any:
    """A plain, editable copy of the ``model`` section of a config path, a stock config name,
    a loaded Config, or a model dict."""
    from mmengine.config import Config, ConfigDict

    if isinstance(config, (str, Path)):
        path = Path(config)
        config = Config.fromfile(path if path.is_file() else stock_config_path(scope, str(config)))
    model_cfg = config.model if hasattr(config, "model") else config
    return ConfigDict(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg))


OPENMMLAB_SCOPES = ("mmdet", "mmseg")  # the one list: adapters, builds, LRPPruned, latency, shipped configs


def register_scope(scope: str) -> None:
    """Register ``scope``'s model classes (adapters and builds match on them); MissingExtraError if absent."""
    require(f"{scope}.utils", scope).register_all_modules(init_default_scope=False)  # extras named as packages


def register_installed_scopes() -> None:
    """Register every installed OpenMMLab scope lrp_plugin has adapters for; absent ones are skipped."""
    for scope in OPENMMLAB_SCOPES:
        try:
            register_scope(scope)
        except ImportError:
            continue


def build_in_scope(scope: str, model_cfg: Any) -> nn.Module:
    """Build ``model_cfg`` with ``scope``'s registry (randomly initialised, eval mode)."""
    registry = require(f"{scope}.registry", scope)
    from mmengine.registry import DefaultScope

    register_scope(scope)
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.MODELS.build(model_cfg)
    return model.eval()


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """SyncBN -> mmengine's ``_BatchNormXd``, so one process on a CPU can trace the model."""
    from mmengine.model import revert_sync_batchnorm as revert

    return revert(model)
