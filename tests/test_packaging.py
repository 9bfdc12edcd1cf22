"""`import lrp_plugin` needs only the core (torch, torch-pruning): optional libraries stay lazy."""

import subprocess
import sys

import pytest

OPTIONAL = ["timm", "nni", "mmcv", "mmengine", "mmdet", "mmseg", "onnx", "onnxruntime", "ncnn", "pnnx", "sklearn",
            "matplotlib"]


# every module a user imports before reaching for an extra: none may import an optional library
ENTRY_MODULES = ["lrp_plugin", "lrp_plugin.adapters", "lrp_plugin.cli", "lrp_plugin.demo", "lrp_plugin.integrations",
                 "lrp_plugin.latency", "lrp_plugin.latency.cli", "lrp_plugin.configs"]


@pytest.mark.parametrize("blocked", [True, False], ids=["extras-missing", "extras-installed"])
def test_entry_modules_import_no_optional_library(blocked):
    """The one lazy-import check: with the extras missing (a None in sys.modules makes ``import``
    fail) the entry modules still import; with them installed, importing loads none of them."""
    block = f"for name in {OPTIONAL!r}: sys.modules[name] = None\n" if blocked else ""
    code = (  # torch_pruning itself imports timm when it is there: only what we add counts
        "import importlib, sys\n" + block
        + "import torch_pruning\n"
        + f"before = {{n for n in {OPTIONAL!r} if sys.modules.get(n)}}\n"
        + f"for module in {ENTRY_MODULES!r}: importlib.import_module(module)\n"
        + f"loaded = [n for n in {OPTIONAL!r} if sys.modules.get(n) and n not in before]\n"
        + "assert not loaded, loaded\n"
        + "import lrp_plugin; print(lrp_plugin.__version__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.1.0"


def test_missing_extra_gives_an_install_hint():
    code = (
        "import sys; sys.modules['timm'] = None\n"
        "from lrp_plugin.adapters import create_resnet\n"
        "from lrp_plugin import MissingExtraError\n"
        "try:\n    create_resnet('resnet18')\nexcept MissingExtraError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'lrp_plugin[timm]'" in result.stdout, result.stderr
