"""Latency tool, round 2: ncnn (pnnx-converted, checked, timed here and over SSH), the TensorRT parser on
real trtexec output, --round-to, and the usage/missing-extra error types.

No wall-clock assertions: only completeness, consistency and the errors' types and messages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _extras import require

require("timm")
require("onnxruntime")
require("ncnn")
require("pnnx")

from test_latency import SMALL, check_result, sshd  # noqa: E402,F401  (sshd: the real loopback sshd fixture)

from lrp_plugin.errors import MissingExtraError, UsageError  # noqa: E402
from lrp_plugin.latency import cli  # noqa: E402
from lrp_plugin.latency.api import LatencyJob, run_job  # noqa: E402
from lrp_plugin.latency.runner import RunnerError, parse_trtexec, trt_block  # noqa: E402

FIXTURES = Path(__file__).parent / "latency_fixtures"


# ------------------------------------------------------------------------------------------------ ncnn


def test_ncnn_conversion_matches_pytorch(tmp_path):
    import ncnn

    from lrp_plugin.latency.export import export_ncnn
    from lrp_plugin.latency.runner import ncnn_forward, ncnn_net
    from lrp_plugin.latency.sources import create_timm

    model = create_timm("resnet18", 10, seed=0)
    x = torch.randn(1, 3, 64, 64)
    check = export_ncnn(model, x, tmp_path, "r18")
    assert check["matches"] and check["max_abs_error"] <= check["atol"] + check["rtol"] * check["max_abs_output"]
    got = ncnn_forward(ncnn_net(check["param"], check["bin"], 1), x.numpy())  # independently of the check
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got[0]).reshape(1, 10), model(x), rtol=1e-2, atol=1e-2)
    assert check["ncnn"] and isinstance(ncnn.Net(), ncnn.Net)


def test_ncnn_local_with_round_to(tmp_path):
    out = tmp_path / "ncnn"
    code = cli.main(["timm:resnet18", "--prune-ratio", "0.5", "--round-to", "8", "--backend", "ncnn", "onnxruntime",
                     "--out", str(out), *SMALL])
    assert code == 0
    result = json.loads((out / "latency.json").read_text())
    check_result(result, ["ncnn", "onnxruntime"], runs=5)
    assert result["backends"]["ncnn"]["ncnn_threads"] == 1  # the thread count ncnn itself reports
    assert result["settings"]["round_to"] == 8
    pruned = list(result["models"])[1]
    assert pruned.endswith("-r8") and result["models"][pruned]["pruned_in_process"]["round_to"] == 8
    for info in result["models"].values():
        assert info["ncnn_check"]["matches"] and info["onnx_check"]["matches"]


def test_round_to_keeps_multiples_and_costs_macs():
    import lrp_plugin as lrp
    from lrp_plugin.latency.sources import create_timm, prune_in_process

    x = torch.randn(1, 3, 64, 64)
    model = create_timm("resnet18", 10, seed=0)
    plain = prune_in_process(model, x, 0.3, "l1")
    rounded = prune_in_process(model, x, 0.3, "l1", round_to=16)
    convs = [m.out_channels for m in rounded.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c % 16 == 0 for c in convs)
    assert any(m.out_channels % 16 for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    assert lrp.count_macs_params(rounded, x)[0] > lrp.count_macs_params(plain, x)[0]
    with torch.no_grad():  # lossless either way: the kept channels are zero
        torch.testing.assert_close(rounded(x), plain(x), rtol=1e-4, atol=1e-4)


def test_ncnn_over_ssh_has_the_local_shape(sshd, tmp_path):  # noqa: F811
    import sys

    local, remote = tmp_path / "local", tmp_path / "remote"
    args = ["timm:resnet18", "--prune-ratio", "0.5", "--backend", "ncnn", *SMALL]
    assert cli.main([*args, "--out", str(local)]) == 0
    assert cli.main([*args, *sshd, "--remote-python", sys.executable, "--out", str(remote)]) == 0
    loc, rem = (json.loads((d / "latency.json").read_text()) for d in (local, remote))
    check_result(rem, ["ncnn"], runs=5)
    assert rem["mode"] == "remote" and rem["backends"]["ncnn"]["ncnn_threads"] == 1
    assert set(rem["backends"]["ncnn"]) == set(loc["backends"]["ncnn"])
    assert rem["device"]["runtimes"]["ncnn"]


def test_ncnn_refuses_a_batch(tmp_path, capsys):
    args = ["timm:resnet18", "--backend", "ncnn", "--batch", "2", "--out", str(tmp_path), *SMALL]
    assert cli.main(args) == 2
    assert "--batch 1" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ TensorRT


def test_trtexec_parser_on_a_jetson_trt84_log():
    parsed = parse_trtexec((FIXTURES / "trtexec_jetson_xavier_trt84.log").read_text())
    assert parsed["tensorrt_version"] == "8.4.0" and parsed["throughput_qps"] == pytest.approx(41087.7)
    lat = parsed["metrics"]["Latency"]
    assert lat == {"min_ms": 0.387207, "max_ms": 0.447357, "mean_ms": 0.402238, "median_ms": 0.401947,
                   "p99_ms": 0.420288}  # 8.4 prints no 90/95% percentiles
    assert parsed["metrics"]["GPU Compute Time"]["median_ms"] == pytest.approx(0.388443)
    assert parsed["metrics"]["H2D Latency"]["median_ms"] == pytest.approx(0.00952148)  # not mistaken for Latency
    assert parsed["precision"] is None  # --loadEngine of an engine built elsewhere: unknown here


def test_trtexec_parser_on_a_trt10_log_and_the_result_block():
    small = parse_trtexec((FIXTURES / "trtexec_jetson_xavier_trt84.log").read_text())
    big = parse_trtexec((FIXTURES / "trtexec_trt10_percentiles.log").read_text())
    assert big["tensorrt_version"] == "10.2.0"
    assert big["metrics"]["Latency"]["p90_ms"] == pytest.approx(30.8303)
    assert big["metrics"]["Latency"]["p95_ms"] == pytest.approx(30.8396)
    block = trt_block({"big": {**big, "times_s": []}, "small": {**small, "times_s": []}}, shape=[1, 3, 8, 8],
                      warmup=2, reference="big")
    assert block["interleaved"] is False and block["tensorrt_version"] == "10.2.0"
    assert block["models"]["big"]["median_ms"] == pytest.approx(30.7585)
    assert block["ratios"]["small"]["median"] == pytest.approx(0.401947 / 30.7585)
    from lrp_plugin.latency.report import format_table, rows

    result = {"backends": {"tensorrt": block}, "models": {}, "settings": {}, "reference": "big"}
    assert len(rows(result)) == 2 and "tensorrt" in format_table(result)


def test_trtexec_parser_refuses_output_without_summary():
    with pytest.raises(ValueError, match="Performance summary"):
        parse_trtexec("&&&& FAILED TensorRT.trtexec [TensorRT v8601] # trtexec --onnx=m.onnx\n")


def test_tensorrt_without_trtexec_names_the_fix(tmp_path, capsys):
    import shutil

    if shutil.which("trtexec"):
        pytest.skip("this machine has trtexec")
    assert cli.main(["timm:resnet18", "--backend", "tensorrt", "--out", str(tmp_path), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "trtexec" in err and "--host" in err


def test_tensorrt_on_a_device_without_trtexec_names_the_fix(sshd, tmp_path, capsys):  # noqa: F811
    """The device is probed for trtexec (PATH and JetPack's place) before any model is built."""
    import shutil
    import sys

    if shutil.which("trtexec") or Path("/usr/src/tensorrt/bin/trtexec").exists():
        pytest.skip("this machine has trtexec")
    assert cli.main(["timm:resnet18", "--backend", "tensorrt", *sshd, "--remote-python", sys.executable,
                     "--out", str(tmp_path), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "has no trtexec" in err and "/usr/src/tensorrt/bin/trtexec" in err


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("flag,value,needle", [("--runs", "0", "--runs"), ("--warmup", "-1", "--warmup"),
                                               ("--threads", "0", "--threads"), ("--prune-ratio", "2", "[0, 1)"),
                                               ("--round-to", "0", "--round-to"), ("--batch", "0", "--batch")])
def test_bad_numbers_are_usage_errors(flag, value, needle, tmp_path, capsys):
    args = ["timm:resnet18", "--prune-ratio", "0.5", "--out", str(tmp_path), *SMALL, flag, value]
    assert cli.main(args) == 2
    assert needle in capsys.readouterr().err
    job = cli.job_from_args(cli_parser().parse_args(args))
    with pytest.raises(UsageError):  # the type, not InputShapeError / ModelSourceError
        job.validate()


def test_prune_ratio_range_is_the_cores():
    """The tool accepts exactly what lrp.compute_masks accepts: [0, 1) (it used to refuse 0)."""
    from lrp_plugin.core.criteria import check_ratio

    assert LatencyJob(["timm:resnet18"], prune_ratio=0.0).validate().prune_ratio == check_ratio(0.0)
    for bad in (1.0, -0.1):
        with pytest.raises(UsageError, match=r"\[0, 1\)"):
            LatencyJob(["timm:resnet18"], prune_ratio=bad).validate()


def test_round_to_auto_follows_the_first_backend():
    from lrp_plugin.latency.backends import BACKENDS

    job = LatencyJob(["timm:resnet18"], prune_ratio=0.5, round_to="auto", backends=["onnxruntime", "ncnn"])
    ort = BACKENDS["onnxruntime"].round_to_auto[("cpu", "fp32")]
    assert job.validate().resolved_round_to() == ort > 1  # the study found one that pays
    job.backends = ["ncnn", "onnxruntime"]
    assert job.resolved_round_to() == BACKENDS["ncnn"].round_to_auto.get(("cpu", "fp32"), 1)


def test_round_to_needs_a_prune_ratio():
    with pytest.raises(UsageError, match="--prune-ratio"):
        run_job(LatencyJob(["timm:resnet18"], round_to=8, progress=False))


def test_missing_runtime_here_is_a_missing_extra():
    from lrp_plugin.latency.measure import local_error

    err = local_error(RunnerError("module_missing", "ncnn is not importable"))
    assert isinstance(err, MissingExtraError) and isinstance(err, ImportError) and "lrp_plugin[latency]" in str(err)


def cli_parser():
    import argparse

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p
