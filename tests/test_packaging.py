"""`import lrp_plugin` needs only the core (torch, torch-pruning): optional libraries stay lazy."""

import subprocess
import sys

OPTIONAL = ["timm", "nni", "mmcv", "mmengine", "mmdet", "mmseg", "onnx", "onnxruntime", "sklearn", "matplotlib"]


def test_import_without_optional_libraries():
    # a None entry in sys.modules makes `import name` raise ImportError, as if not installed
    code = (
        "import sys\n"
        f"for name in {OPTIONAL!r}: sys.modules[name] = None\n"
        "import lrp_plugin, lrp_plugin.adapters, lrp_plugin.cli, lrp_plugin.demo\n"
        "assert not any(sys.modules.get(n) for n in " + repr(OPTIONAL) + ")\n"
        "print(lrp_plugin.__version__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.1.0"


def test_missing_extra_gives_an_install_hint():
    code = (
        "import sys; sys.modules['timm'] = None\n"
        "from lrp_plugin.adapters import create_resnet\n"
        "try:\n    create_resnet('resnet18')\nexcept ImportError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'lrp_plugin[timm]'" in result.stdout, result.stderr
