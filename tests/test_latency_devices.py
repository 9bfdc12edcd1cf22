"""Latency tool, issue 19/21: backends as records (one place per backend, extendable from outside), devices and
precisions checked before any work (``--device cuda`` without CUDA is a typed error naming it), PyTorch on
the CPU in bf16 / channels_last through the same runner code a GPU uses, and source kinds registered
from outside the package. CUDA timing itself runs in tests/gpu/ (skipped without a GPU).

No wall-clock assertions: only completeness, the settings recorded, and the errors' types and messages.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from _extras import require

require("timm")
require("onnxruntime")

from test_latency import SMALL, sshd  # noqa: E402,F401  (sshd: the real loopback sshd fixture)

from lrp_plugin.errors import UsageError  # noqa: E402
from lrp_plugin.latency import CudaUnavailableError, cli  # noqa: E402
from lrp_plugin.latency.api import LatencyJob, run_job  # noqa: E402
from lrp_plugin.latency.backends import BACKENDS, Backend, check_backends, register_backend  # noqa: E402
from lrp_plugin.latency.errors import RemoteRuntimeError  # noqa: E402
from lrp_plugin.latency.runner import Timing, torch_callable  # noqa: E402
from lrp_plugin.latency.sources import (  # noqa: E402
    FALLBACK_SOURCE,
    SOURCE_KINDS,
    ModelEntry,
    SourceKind,
    register_source,
    source_kind,
)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


# ------------------------------------------------------------------------------------------------ no CUDA


@no_cuda
def test_device_cuda_without_cuda_is_a_typed_error_before_any_export(tmp_path, capsys):
    """The issue's command: a CudaUnavailableError naming CUDA, exit 2, before any model is built."""
    args = ["timm:resnet18", "--prune-ratio", "0.5", "--backend", "torch", "--device", "cuda", "--out", str(tmp_path)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--device cpu" in err
    assert "building" not in err and "exporting" not in err and not (tmp_path / "latency.json").exists()
    with pytest.raises(CudaUnavailableError, match="CUDA"):
        run_job(LatencyJob(["timm:resnet18"], prune_ratio=0.5, backends=["torch"], device="cuda", progress=False))


@no_cuda
def test_device_cuda_on_a_device_without_cuda_is_said_before_export(sshd, tmp_path, capsys):  # noqa: F811
    """Over SSH the device's torch is asked (one import) before anything is built or copied."""
    args = ["timm:resnet18", "--backend", "torchscript", "--device", "cuda", *sshd, "--remote-python",
            sys.executable, "--out", str(tmp_path), *SMALL]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available to" in err and "exporting" not in err
    job = cli.job_from_args(_parser().parse_args(args))
    from lrp_plugin.latency.remote import preflight

    with pytest.raises(RemoteRuntimeError, match="finds no GPU"):
        preflight(job.target, ["torchscript"], "cuda")


# ------------------------------------------------------------------------------------------------ records


@pytest.mark.parametrize("flags,needle", [
    (["--backend", "onnxruntime", "--device", "cuda"], "runs on cpu"),
    (["--backend", "ncnn", "--fp16"], "times fp32"),
    (["--backend", "onnxruntime", "--bf16"], "times fp32"),
    (["--backend", "torch", "--fp16"], "not fp16"),  # fp16 PyTorch on a CPU
    (["--backend", "torch", "--cuda-graphs"], "--device cuda"),
    (["--backend", "ort-cuda", "--device", "cpu"], "runs on cuda"),
])
def test_devices_and_precisions_are_checked_before_work(flags, needle, tmp_path, capsys):
    args = ["timm:resnet18", "--prune-ratio", "0.5", "--out", str(tmp_path), *SMALL, *flags]
    assert cli.main(args) == 2
    assert needle in capsys.readouterr().err
    job = cli.job_from_args(_parser().parse_args(args))
    with pytest.raises(UsageError):
        check_backends(job.validate().resolved_backends(), remote=False, device=job.device,
                       precision=job.precision, batch=job.batch)


def test_every_backend_is_one_record():
    """Whatever the host needs to know about a backend is in its record: no name is compared elsewhere."""
    import pathlib

    package = pathlib.Path(cli.__file__).parent
    for path in package.glob("*.py"):
        text = path.read_text()
        for name in BACKENDS:
            for pattern in (f'== "{name}"', f"== '{name}'", f'"{name}" in backends', f'if b == "{name}"'):
                assert pattern not in text, f"{path.name} compares a backend name: {pattern}"
    for b in BACKENDS.values():
        assert b.needs and b.hint and b.devices and (b.load is not None or b.own_loop)
        assert all(p in ("fp32", "fp16", "bf16") for ps in b.precisions.values() for p in ps)


def test_a_backend_registered_from_outside_is_exported_for_and_timed(tmp_path):
    """A new runtime is one register_backend call: here TorchScript frozen for inference
    (torch.jit.freeze), which reuses the torchscript export; run_job checks, exports and times it."""

    def load_frozen(backend, model, timing):
        path = model.get("torchscript")
        if not path:
            return None
        frozen = torch.jit.freeze(torch.jit.load(path, map_location="cpu").eval())
        return torch_callable(frozen, timing, "frozen")

    spec = register_backend(Backend("tests-torchscript-frozen", "torchscript", ("torch",), "pip install torch",
                                    load_frozen))
    try:
        result = run_job(LatencyJob(["timm:resnet18"], prune_ratio=0.5, backends=[spec.name], input_shape=[3, 64, 64],
                                    runs=3, warmup=1, threads=1, progress=False))
    finally:
        BACKENDS.pop(spec.name)
    block = result["backends"][spec.name]
    assert block["runs"] == 3 and len(block["models"]) == 2 and block["device"] == "cpu"
    with pytest.raises(ValueError, match="exists"):
        register_backend(BACKENDS["torch"])


def test_round_to_auto_comes_from_the_record_per_device_and_precision():
    job = LatencyJob(["timm:resnet18"], prune_ratio=0.5, round_to="auto", backends=["torch"], device="cuda",
                     fp16=True)
    assert job.validate().resolved_round_to() == BACKENDS["torch"].round_to_auto.get(("cuda", "fp16"), 1)
    job = LatencyJob(["timm:resnet18"], prune_ratio=0.5, round_to="auto", backends=["onnxruntime"])
    assert job.validate().resolved_round_to() == BACKENDS["onnxruntime"].round_to_auto[("cpu", "fp32")]


# ------------------------------------------------------------------------------------------------ PyTorch settings


def test_torch_and_torchscript_in_bf16_channels_last_on_the_cpu(tmp_path):
    """The GPU path's code on the CPU: the model and input converted in the runner, the settings recorded."""
    out = tmp_path / "bf16"
    args = ["timm:resnet18", "--prune-ratio", "0.5", "--backend", "torch", "torchscript", "--bf16", "--channels-last",
            "--out", str(out), *SMALL]
    assert cli.main(args) == 0
    result = json.loads((out / "latency.json").read_text())
    assert result["settings"]["precision"] == "bf16" and result["settings"]["channels_last"]
    for block in result["backends"].values():
        assert block["precision"] == "bf16" and block["device"] == "cpu" and block["channels_last"]
        assert block["runs"] == 5 and len(block["models"]) == 2
    rows = (out / "latency.csv").read_text().splitlines()
    assert rows[0].split(",")[7:9] == ["device", "precision"] and all(",cpu,bf16," in r for r in rows[1:])


def test_timing_a_module_leaves_the_callers_module_as_it_was():
    model = torch.nn.Conv2d(3, 4, 3)
    weight = model.weight
    call, info = torch_callable(__import__("copy").deepcopy(model), Timing(shape=[1, 3, 8, 8], threads=1,
                                                                           precision="bf16", channels_last=True),
                                "conv")
    assert call().dtype == torch.bfloat16 and info["precision"] == "bf16"
    assert model.weight is weight and weight.dtype == torch.float32 and weight.is_contiguous()


# ------------------------------------------------------------------------------------------------ sources


def test_a_source_kind_registered_from_a_test_module_is_found(tmp_path):
    """Issue 21: the catch-all 'saved-pruned' kind used to be registered last, so a later kind was never
    reached; it is now the explicit fallback and a registered kind wins."""

    def load_tiny(spec, req):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                    torch.nn.Flatten(), torch.nn.Linear(8, 2)).eval()
        return [ModelEntry(spec.split(":", 1)[1], spec, module=model)]

    kind = register_source(SourceKind("tests-hub", lambda s: s.startswith("hub:"), load_tiny, "hub:NAME"))
    try:
        assert source_kind("hub:tiny") is kind and source_kind("some/pruned.pt") is FALLBACK_SOURCE
        result = run_job(LatencyJob(["hub:tiny", "hub:tiny"], backends=["torch"], input_shape=[3, 16, 16], runs=3,
                                    warmup=0, threads=1, progress=False))
    finally:
        SOURCE_KINDS.pop(kind.name)
    assert list(result["models"]) == ["tiny", "tiny#2"] and result["models"]["tiny"]["source"] == "hub:tiny"
    assert source_kind("hub:tiny") is FALLBACK_SOURCE  # unregistered again: a file from lrp.save_pruned


def test_a_checkpoint_with_code_is_refused_by_the_cores_reader(tmp_path):
    """sources.py reads --checkpoint with the core's weights-only loader: the same UnsafeCheckpointError as
    lrp.load_pruned for a file that holds pickled code, which is never unpickled."""
    require("mmengine")
    import lrp_plugin as lrp
    from lrp_plugin.latency.sources import load_weights_into

    class Tampered:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "bad.pth"
    torch.save({"state_dict": {}, "extra": Tampered()}, path)
    with pytest.raises(lrp.UnsafeCheckpointError, match="could run code"):
        load_weights_into(torch.nn.Linear(2, 2), str(path))


def _parser():
    import argparse

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p
