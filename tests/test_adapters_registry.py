"""The adapter registry: by name, duplicate-safe, built-in adapters found without import tricks."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from torch import nn

import lrp_plugin as lrp
from lrp_plugin.adapters import ADAPTERS, Adapter, find_adapter, get_adapter, register_adapter


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


def test_an_adapter_from_a_module_outside_the_package_is_found(tmp_path, monkeypatch):
    """Issue 21: a user's module registers an adapter; find_adapter finds it, and it wins over an
    earlier registered adapter for the same models (newest first)."""
    (tmp_path / "acme_adapters.py").write_text(
        "from torch import nn\n"
        "from lrp_plugin.adapters import Adapter, register_adapter\n"
        "ACME = register_adapter(Adapter(name='acme-identity', matches=lambda m: isinstance(m, nn.Identity),\n"
        "                                example_inputs=lambda m: None))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    older = register_adapter(_adapter("test-older-identity"))
    try:
        acme = importlib.import_module("acme_adapters").ACME
        assert acme.module == "acme_adapters"
        assert find_adapter(nn.Identity()) is acme is get_adapter("acme-identity")
        assert older is not acme
    finally:
        ADAPTERS._adapters.pop("acme-identity", None)
        ADAPTERS._adapters.pop("test-older-identity", None)
        sys.modules.pop("acme_adapters", None)


def test_same_last_module_name_is_not_the_same_declaration(tmp_path, monkeypatch):
    """Issue 21: ``acme.timm_resnet`` declaring ``timm-resnet`` used to get the built-in back
    silently (identity was the last part of the module name); now it is refused by full path."""
    package = tmp_path / "acme"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "timm_resnet.py").write_text(
        "from torch import nn\n"
        "from lrp_plugin.adapters import Adapter, register_adapter\n"
        "MINE = register_adapter(Adapter(name='timm-resnet', matches=lambda m: False,\n"
        "                                example_inputs=lambda m: None))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    builtin = get_adapter("timm-resnet")
    try:
        with pytest.raises(lrp.InvalidArgumentError, match="already registered.*lrp_plugin.adapters.timm_resnet"):
            importlib.import_module("acme.timm_resnet")
        assert get_adapter("timm-resnet") is builtin
    finally:
        for name in ("acme.timm_resnet", "acme"):
            sys.modules.pop(name, None)
