"""Shared pytest set-up: report which optional ecosystems are installed.

Tests that need an extra call ``tests/_extras.require``: skipped locally if it is missing,
a failure under ``CI=true``.
"""

from __future__ import annotations

import importlib.metadata as md

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
