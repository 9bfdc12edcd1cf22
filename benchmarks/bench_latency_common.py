"""What the latency benchmarks share: building a model and its pruned variants once, exporting them
once, timing them interleaved at several thread counts, and writing JSON whole (or not at all)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from lrp_plugin.latency.api import RunSettings, time_entries
from lrp_plugin.latency.measure import measure_local, prepare_artifacts
from lrp_plugin.latency.sources import ModelEntry, SourceRequest, counterpart, load_models

YOLOV3_D53 = "mmdet:yolo/yolov3_d53_8xb8-ms-416-273e_coco.py"
MODELS = {"resnet50": ("timm:resnet50", [3, 224, 224]), "yolov3": (YOLOV3_D53, [3, 416, 416])}


def build_variants(spec: str, shape: list[int], variants: list[dict[str, Any]], *, criterion: str = "l1",
                   seed: int = 0) -> tuple[list[ModelEntry], torch.Tensor]:
    """The original (random weights, randomized BN) and one pruned counterpart per
    ``{"prune_ratio", "round_to", "selection", "target_macs"}`` (the last two optional)."""
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(seed))
    req = SourceRequest(x=x, criterion=criterion, seed=seed)
    original = load_models([spec], req)[0]
    entries = [original]
    for v in variants:
        req.prune_ratio, req.round_to = v.get("prune_ratio"), v.get("round_to")
        req.selection, req.target_macs = v.get("selection", "layer"), v.get("target_macs")
        entries.append(counterpart(original, req))
    return entries, x


def time_at_threads(entries: list[ModelEntry], x: torch.Tensor, backends: list[str], threads: list[int], *,
                    warmup: int, runs: int) -> dict[int, dict[str, Any]]:
    """Export once (checked against PyTorch), then one interleaved run per thread count."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="lrp-bench-") as tmp:
        job_models = prepare_artifacts(entries, backends, x, Path(tmp), threads=1)
        for t in threads:
            out[t] = measure_local(entries, job_models, backends, x, threads=t, warmup=warmup, runs=runs,
                                   time_budget_s=None)
    return out


def time_cells(entries: list[ModelEntry], shape: list[int], backends: list[str], cells: list[dict[str, Any]], *,
               warmup: int, runs: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """One interleaved run per cell (``{"device", "precision", "batch", "channels_last", "cuda_graphs"}``, the
    PyTorch settings of a GPU study); (cell, result) pairs."""
    out = []
    for cell in cells:
        x = torch.randn(cell.get("batch", 1), *shape, generator=torch.Generator().manual_seed(0))
        run = RunSettings(device=cell.get("device"), precision=cell.get("precision", "fp32"),
                          channels_last=cell.get("channels_last", False), cuda_graphs=cell.get("cuda_graphs", False))
        out.append((cell, time_entries(entries, backends, x, warmup=warmup, runs=runs, run=run, progress=False)))
    return out


def models_info(entries: list[ModelEntry]) -> dict[str, Any]:
    ref = entries[0]
    return {e.name: {"macs": e.macs, "params": e.params, "macs_ratio": e.macs / ref.macs,
                     "pruned": e.notes.get("prune"), "onnx_check": e.notes.get("onnx_check"),
                     "ncnn_check": e.notes.get("ncnn_check")} for e in entries}


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write to a temp file beside ``path``, then rename: a crash never leaves half a JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=1)
    os.replace(tmp, path)
    return path
