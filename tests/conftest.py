"""Shared pytest set-up: report which optional ecosystems are installed; fresh MMEngine visualizers.

Tests that need an extra call ``tests/_extras.require``: skipped locally if it is missing,
a failure under ``CI=true``.
"""

from __future__ import annotations

import importlib.metadata as md
import sys

import pytest
from _extras import in_ci

_DISTS = ("torch", "torchvision", "torch-pruning", "timm", "nni", "mmengine", "mmcv", "mmdet",
          "mmsegmentation", "onnx", "onnxruntime")


def pytest_report_header(config):
    found = []
    for dist in _DISTS:
        try:
            found.append(f"{dist}=={md.version(dist)}")
        except md.PackageNotFoundError:
            found.append(f"{dist} (missing)")
    mode = "CI=true: a missing extra fails" if in_ci() else "local: a missing extra skips"
    return [f"lrp_plugin stack ({mode}): " + ", ".join(found)]


@pytest.fixture(autouse=True)
def _fresh_mmengine_visualizers():
    """MMEngine keeps one process-wide visualizer per name ('visualizer' in the stock configs),
    bound to the first Runner's work dir; a later test's Runner would reuse it and write into a
    directory an earlier test moved or removed. ``tools/train.py`` runs one Runner per process."""
    yield
    visualization = sys.modules.get("mmengine.visualization")
    if visualization is None:
        return
    stack = [visualization.Visualizer]
    while stack:
        cls = stack.pop()
        cls._instance_dict.clear()
        stack.extend(cls.__subclasses__())
