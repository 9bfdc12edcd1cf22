"""tests/gpu/: the checks of tests/gpu/checks.py on a CUDA GPU. Without one every test here is collected
(so it cannot rot: imports and names are checked in CI) and skipped with the reason; on a GPU machine
``pytest tests/gpu`` runs them, and ``tools/gpu_check.py`` runs the same checks as one script."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # checks.py


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    reason = (f"no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is False): "
              "run on a GPU machine, or tools/gpu_check.py --device cpu for a dry run")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gpu)
            item.add_marker(pytest.mark.skip(reason=reason))
