"""The adapter registry: by name, duplicate-safe, built-in adapters found without import tricks."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from torch import nn

import lrp_plugin as lrp
from lrp_plugin.adapters import ADAPTERS, Adapter, get_adapter, register_adapter


def _adapter(name: str) -> Adapter:
    return Adapter(name=name, matches=lambda m: isinstance(m, nn.Identity), example_inputs=lambda m: None)


def test_duplicate_names_are_refused_unless_forced():
    first = register_adapter(_adapter("test-identity"))
    try:
        assert get_adapter("test-identity") is first
        with pytest.raises(lrp.InvalidArgumentError, match="force=True"):
            ADAPTERS.register(_adapter("test-identity"), module="somewhere.else")
        replacement = ADAPTERS.register(_adapter("test-identity"), force=True, module="somewhere.else")
        assert get_adapter("test-identity") is replacement
    finally:
        ADAPTERS._adapters.pop("test-identity", None)


def test_reimporting_a_declaring_module_does_not_duplicate():
    from lrp_plugin.adapters import timm_resnet

    before, adapter = ADAPTERS.names(), get_adapter("timm-resnet")
    importlib.reload(timm_resnet)
    assert ADAPTERS.names() == before and before.count("timm-resnet") == 1
    assert get_adapter("timm-resnet") is adapter is timm_resnet.TIMM_RESNET


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(lrp.UnknownModelError, match="timm-resnet"):
        get_adapter("no-such-adapter")


def test_find_adapter_imports_the_builtin_adapters_on_demand():
    """A fresh process that never imported an adapter module still finds mmdet's detector adapter for YOLOv3."""
    pytest.importorskip("mmdet")
    code = ("from lrp_plugin.adapters.base import find_adapter\n"
            "from lrp_plugin.adapters.openmmlab import build_in_scope, model_config\n"
            "cfg = model_config('mmdet', 'yolo/yolov3_d53_8xb8-ms-416-273e_coco.py')\n"
            "print(find_adapter(build_in_scope('mmdet', cfg)).name)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "mmdet-detector", out.stderr[-2000:]
