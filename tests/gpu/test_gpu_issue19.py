"""Issue 19 on a CUDA GPU (skipped without one): lossless verification under the GPU's default settings,
channels_last, AMP (bf16, fp16 + GradScaler), torch.compile, DDP over NCCL, MMEngine's AmpOptimWrapper,
and CUDA latency. The checks themselves live in checks.py (shared with tools/gpu_check.py)."""

from __future__ import annotations

import json

import pytest
from _extras import require

require("timm")

import checks  # noqa: E402

DEVICE = "cuda"


@pytest.mark.parametrize("name", sorted(set(checks.CHECKS) - {"bf16_training"}))
def test_check(name):
    checks.CHECKS[name](DEVICE)


def test_bf16_training_then_reconstruct_is_lossless_with_default_settings():
    """The acceptance case: timm resnet50, channels_last, SGD under bf16 autocast, reconstruct on the GPU
    with PyTorch's defaults (TF32 on for cuDNN convolutions): <= 1e-5, the caller's settings unchanged."""
    result = checks.check_bf16_training(DEVICE)
    assert result["max_rel_error"] <= checks.LOSSLESS and result["channels_last_kept"]


def test_mmengine_hook_with_amp_optim_wrapper(tmp_path):
    require("mmengine")
    checks.check_mmengine_amp(DEVICE, str(tmp_path / "work"))


def test_latency_on_cuda_end_to_end(tmp_path):
    """``lrp latency --device cuda``: torch and torchscript, fp16, channels_last, CUDA graphs, CUDA events."""
    from lrp_plugin.latency import cli

    code = cli.main(["timm:resnet18", "--prune-ratio", "0.5", "--backend", "torch", "torchscript", "--device", "cuda",
                     "--fp16", "--channels-last", "--cuda-graphs", "--input-shape", "3,128,128", "--runs", "10",
                     "--warmup", "3", "--quiet", "--no-plot", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "latency.json").read_text())
    for block in result["backends"].values():
        assert block["device"] == "cuda" and block["precision"] == "fp16" and block["cuda_graphs"]
        assert block["gpu"] and block["cudnn_benchmark"] is True
        assert all(s["median_ms"] > 0 for s in block["models"].values())
    assert result["settings"]["device"] == "cuda"
