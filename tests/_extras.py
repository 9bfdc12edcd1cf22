"""Optional extras in tests: skip locally when one is missing, fail under CI.

Use ``mmdet = require("mmdet")`` at the top of a test (or module) that needs an extra.
Locally a missing extra skips the test with the install hint; with ``CI=true`` (set by
``.ci/run``) it fails, so CI can never go green by silently skipping what it should test.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

# module -> extra of lrp_plugin that provides it (for the hint in the message)
EXTRA_OF = {
    "timm": "timm",
    "nni": "nni",
    "mmcv": "mmdet",
    "mmengine": "mmdet",
    "mmdet": "mmdet",
    "mmseg": "mmseg",
    "onnx": "latency",
    "onnxruntime": "latency",
    "onnxscript": "latency",
    "ncnn": "latency",
    "pnnx": "latency",
    "sklearn": "demo",
    "matplotlib": "demo",
}


def in_ci() -> bool:
    """True when running under CI (``CI`` set to a true-ish value, as CI services do)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def require(module: str) -> ModuleType:
    """Import ``module`` (e.g. ``"mmcv.ops"``); skip if missing, or fail when ``CI=true``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRA_OF.get(module.split(".")[0], "all")
        msg = (f"{module} is not importable ({exc}); "
               f"install the extra: pip install -e '.[{extra}]' (or run `make setup`)")
        if in_ci():
            pytest.fail(f"CI=true and an optional extra is missing: {msg}", pytrace=False)
        pytest.skip(msg, allow_module_level=True)  # works in a test and at module level
