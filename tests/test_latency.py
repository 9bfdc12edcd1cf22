"""Latency tool: local timing (ONNX Runtime + PyTorch), remote timing over a REAL sshd on 127.0.0.1, bad input.

Never asserts wall-clock times: only that results are complete and consistent (ratios from the same
runs, exported ONNX matching PyTorch, remote shaped like local) and that failures exit non-zero with
a message naming the fix.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _extras import in_ci, require

require("timm")
require("onnx")
require("onnxruntime")

from lrp_plugin.latency import cli  # noqa: E402
from lrp_plugin.latency.api import LatencyJob, run_job  # noqa: E402
from lrp_plugin.latency.runner import ratio_stats, summarize  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "README.md"
SMALL = ["--input-shape", "3,64,64", "--runs", "5", "--warmup", "1", "--threads", "1", "--quiet", "--no-plot"]
STATS = {"mean_ms", "std_ms", "median_ms", "p10_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "throughput_per_s", "runs"}
RATIO = {"n", "mean", "std", "median", "p10", "p90", "p99", "min", "max", "of_medians"}


def check_result(result: dict, backends: list[str], runs: int) -> None:
    """Complete and consistent: every backend/model has stats; the ratio is the per-run one from the same runs."""
    assert result["schema"] == "lrp-latency/1"
    assert set(result["backends"]) == set(backends)
    ref = result["reference"]
    names = list(result["models"])
    assert names[0] == ref and len(names) == 2
    pruned = names[1]
    assert 0 < result["models"][pruned]["macs_ratio"] < 0.7  # CR 0.5 halves channels: ~1/4-1/2 of the MACs
    for b, block in result["backends"].items():
        assert block["threads"] == 1 and block["runs"] == runs
        assert set(block["models"]) == set(names)
        for stats in block["models"].values():
            assert STATS <= set(stats)
            assert stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
            assert stats["runs"] == runs
        assert set(block["ratios"]) == {pruned}
        r = block["ratios"][pruned]
        assert RATIO <= set(r) and r["n"] == runs
        t_ref, t_pruned = block["times_ms"][ref], block["times_ms"][pruned]
        assert len(t_ref) == len(t_pruned) == runs
        expected = summarize([a / b for a, b in zip(t_pruned, t_ref)])  # recomputed from the very same runs
        assert r["median"] == pytest.approx(expected["median"]) and r["std"] == pytest.approx(expected["std"])
        assert ratio_stats(block["times_ms"], ref)[pruned]["median"] == pytest.approx(r["median"])
    device = result["device"]
    assert device["cpu_count"] >= 1 and device["cpu_model"] and "runtimes" in device
    assert isinstance(result["warnings"], list)


# ------------------------------------------------------------------------------------------------ local


@pytest.fixture(scope="module")
def pruned_file(tmp_path_factory) -> Path:
    """resnet18 pruned at CR 0.5 (l1), saved with lrp.save_pruned: built once, used by several tests."""
    import lrp_plugin as lrp
    from lrp_plugin.latency.sources import create_timm, prune_in_process

    pruned = prune_in_process(create_timm("resnet18", 1000, seed=0), torch.randn(1, 3, 64, 64), 0.5, "l1")
    return lrp.save_pruned(pruned, tmp_path_factory.mktemp("pruned") / "r18.pt")


def docs_example(name: str) -> list[str]:
    """The command under ``<!-- example: NAME -->`` in README.md, as argv after ``python tools/latency.py``."""
    m = re.search(rf"<!-- example: {name} -->\n```bash\n(.+?)\n```", DOCS.read_text())
    assert m, f"README.md lost its {name} example"
    argv = shlex.split(m.group(1))
    assert argv[:2] == ["python", "tools/latency.py"]
    return argv[2:]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The README's local example, made small (later flags win in argparse), with the PNG."""
    out = tmp_path_factory.mktemp("local")
    code = cli.main([*docs_example("latency-local"), "--out", str(out), *SMALL[:-1]])
    return code, out


def test_local_result_is_complete_and_consistent(local_run):
    code, out = local_run
    assert code == 0
    result = json.loads((out / "latency.json").read_text())
    assert result["mode"] == "local" and result["settings"]["input_shape"] == [1, 3, 64, 64]
    check_result(result, ["onnxruntime", "torch"], runs=5)
    for info in result["models"].values():  # exported ONNX was checked against PyTorch before timing
        check = info["onnx_check"]
        assert check["matches"] and check["max_abs_error"] <= check["atol"] + check["rtol"] * check["max_abs_output"]
    rows = (out / "latency.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("backend,model,params,macs,macs_ratio")
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_onnx_export_matches_pytorch(tmp_path, pruned_file):
    import onnxruntime as ort

    import lrp_plugin as lrp
    from lrp_plugin.latency.export import export_onnx
    from lrp_plugin.latency.sources import create_timm

    x = torch.randn(2, 3, 64, 64)  # batch 2: not the shape it was pruned with
    pruned = lrp.load_pruned(create_timm("resnet18", 1000, seed=1), pruned_file).eval()
    check = export_onnx(pruned, x, tmp_path / "p.onnx")
    got = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), pruned(x), rtol=1e-3, atol=1e-4)
    assert check["matches"]


def test_pruned_file_and_onnx_file_inputs(tmp_path, pruned_file):
    """A file from lrp.save_pruned with --base, and an .onnx file, are accepted models; user files untouched."""
    from lrp_plugin.latency.sources import create_timm

    x = torch.randn(1, 3, 64, 64)
    path = pruned_file
    before = path.read_bytes()
    result = run_job(LatencyJob([str(path)], base="timm:resnet18", input_shape=[3, 64, 64], backends=["onnxruntime"],
                                threads=1, warmup=1, runs=3, progress=False))
    assert list(result["models"]) == ["resnet18", "r18"] and result["models"]["r18"]["macs_ratio"] < 0.7
    assert path.read_bytes() == before
    onnx_path = tmp_path / "export" / "m.onnx"
    onnx_path.parent.mkdir()
    from lrp_plugin.latency.export import export_onnx

    export_onnx(create_timm("resnet18", 1000, seed=0), x, onnx_path)
    res2 = run_job(LatencyJob([str(onnx_path), str(onnx_path)], backends=["onnxruntime"], threads=1, warmup=0,
                              runs=3, progress=False))
    assert res2["settings"]["input_shape"] == [1, 3, 64, 64]  # the file's own static shape
    assert list(res2["backends"]["onnxruntime"]["models"]) == ["m", "m#2"]


def test_time_interleaved_api_for_modules():
    from lrp_plugin.latency.measure import time_interleaved

    a, b = torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(3, 4, 3)
    before = torch.get_num_threads()
    res = time_interleaved({"a": a, "b": b}, torch.randn(1, 3, 16, 16), runs=4, warmup=1, threads=1,
                           progress=False)
    assert torch.get_num_threads() == before  # the caller's thread setting comes back
    assert res["threads"] == 1 and res["runs"] == 4 and set(res["ratios"]) == {"b"}
    assert {"median", "p10", "p90"} <= set(res["ratios"]["b"]) and "median_ms" in res["models"]["a"]


def test_interleave_rotates_order_and_honours_budget():
    from lrp_plugin.latency.runner import interleave

    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in ("a", "b", "c")}
    times = interleave(fns, warmup=1, runs=3, progress=None)
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]  # warm-up, then rotated rounds
    assert {n: len(t) for n, t in times.items()} == {"a": 3, "b": 3, "c": 3}
    capped = interleave(fns, warmup=0, runs=1000, time_budget_s=0.0)  # budget spent at once: the 3-round minimum
    assert {len(t) for t in capped.values()} == {3}


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_model_file(tmp_path, capsys):
    code = cli.main([str(tmp_path / "nope.pt"), "--base", "timm:resnet18", "--out", str(tmp_path), *SMALL])
    assert code != 0
    err = capsys.readouterr().err
    assert "does not exist" in err and "nope.pt" in err
    assert not (tmp_path / "latency.json").exists()


def test_pruned_file_without_base(tmp_path, capsys):
    f = tmp_path / "pruned.pt"
    f.write_bytes(b"x")
    assert cli.main([str(f), "--out", str(tmp_path), *SMALL]) != 0
    assert "--base timm:" in capsys.readouterr().err
    assert f.read_bytes() == b"x"


def test_not_a_pruned_file(tmp_path, capsys):
    f = tmp_path / "garbage.pt"
    f.write_bytes(b"not a checkpoint")
    assert cli.main([str(f), "--base", "timm:resnet18", "--out", str(tmp_path), *SMALL]) != 0
    assert "is not a pruned model file" in capsys.readouterr().err
    assert f.read_bytes() == b"not a checkpoint"


def test_input_shape_the_model_rejects(tmp_path, capsys):
    args = ["timm:resnet18", "--out", str(tmp_path), *SMALL]
    args[args.index("3,64,64")] = "5,64,64"  # resnet18's stem takes 3 channels
    assert cli.main(args) != 0
    err = capsys.readouterr().err
    assert "rejects input shape [1, 5, 64, 64]" in err and "--input-shape" in err


def test_onnx_file_rejects_shape(tmp_path, capsys):
    from lrp_plugin.latency.export import export_onnx

    path = tmp_path / "fixed.onnx"
    export_onnx(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 2)),
                torch.randn(1, 3, 16, 16), path)
    assert cli.main([str(path), "--input-shape", "3,32,32", "--backend", "onnxruntime", "--out", str(tmp_path),
                     "--runs", "2", "--quiet", "--no-plot"]) != 0
    assert "rejects input shape [1, 3, 32, 32]" in capsys.readouterr().err


def test_bad_shape_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["timm:resnet18", "--input-shape", "three"])
    assert exc.value.code != 0 and "C,H,W" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_host(tmp_path, capsys):
    port = _free_port()  # closed: nothing listens there
    code = cli.main(["timm:resnet18", "--prune-ratio", "0.5", "--backend", "onnxruntime", "--host", "root@127.0.0.1",
                     "--port", str(port), "--ssh-option", "StrictHostKeyChecking=yes", "--out", str(tmp_path), *SMALL])
    assert code != 0
    err = capsys.readouterr().err
    assert f"cannot reach root@127.0.0.1:{port}" in err and "Connection refused" in err


# ------------------------------------------------------------------------------------------------ remote (real sshd)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A private sshd on 127.0.0.1 with its own host and user keys, and a known_hosts holding the host key."""
    if not os.path.exists("/usr/sbin/sshd"):
        msg = "/usr/sbin/sshd is missing: run tools/install_system_deps.sh (installs openssh-server)"
        if in_ci():
            pytest.fail(f"CI=true: {msg}", pytrace=False)
        pytest.skip(msg)
    if os.geteuid() != 0:
        pytest.skip("the private sshd needs root (it logs in as the current user with its own config)")
    if shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        pytest.fail("ssh / ssh-keygen missing: apt-get install openssh-client", pytrace=False)
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nStrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication no\n"
        "Subsystem sftp internal-sftp\n")
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-f", str(d / "sshd_config"), "-D", "-e"], stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {(d / 'sshd.log').read_text()}", pytrace=False)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    user = os.environ.get("USER") or "root"
    flags = ["--host", f"{user}@127.0.0.1", "--port", str(port), "--identity", str(d / "user_key"),
             "--ssh-option", f"UserKnownHostsFile={d / 'known_hosts'}", "--ssh-option", "StrictHostKeyChecking=yes"]
    yield flags
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def _shape(obj):  # the key structure, without values
    return {k: _shape(v) for k, v in obj.items()} if isinstance(obj, dict) else type(obj).__name__


def test_remote_docs_example_has_the_local_shape(sshd, local_run, tmp_path):
    """The README's Raspberry Pi example, pointed at the private sshd (later flags win), shaped like local."""
    out = tmp_path / "remote"
    code = cli.main([*docs_example("latency-remote"), *sshd, "--remote-python", sys.executable, "--out", str(out),
                     *SMALL])
    assert code == 0
    remote = json.loads((out / "latency.json").read_text())
    local = json.loads((local_run[1] / "latency.json").read_text())
    assert remote["mode"] == "remote" and remote["host"].endswith("@127.0.0.1")
    check_result(remote, ["onnxruntime"], runs=5)
    assert set(remote) == set(local) and set(remote["settings"]) == set(local["settings"])
    assert _shape(remote["backends"]["onnxruntime"]) == _shape(local["backends"]["onnxruntime"])
    assert _shape(remote["models"]) == _shape(local["models"]) and set(remote["device"]) == set(local["device"])


def test_remote_torchscript_with_pruned_file(sshd, local_run, pruned_file, tmp_path):
    out = tmp_path / "remote"
    code = cli.main([str(pruned_file), "--base", "timm:resnet18", "--backend", "onnxruntime", "torchscript", *sshd,
                     "--remote-python", sys.executable, "--out", str(out), *SMALL])
    assert code == 0
    remote = json.loads((out / "latency.json").read_text())
    local = json.loads((local_run[1] / "latency.json").read_text())
    check_result(remote, ["onnxruntime", "torchscript"], runs=5)

    def shape(obj):  # the key structure, without values
        return {k: shape(v) for k, v in obj.items()} if isinstance(obj, dict) else type(obj).__name__

    assert set(remote) == set(local)
    for key in ("models", "ratios"):  # per-model stats and ratio blocks: same keys and types
        assert ([shape(v) for v in remote["backends"]["onnxruntime"][key].values()]
                == [shape(v) for v in local["backends"]["onnxruntime"][key].values()])
    assert set(remote["backends"]["onnxruntime"]) == set(local["backends"]["onnxruntime"])
    assert set(remote["device"]) == set(local["device"]) and set(remote["settings"]) == set(local["settings"])
    assert [set(v) for v in remote["models"].values()] == [set(v) for v in local["models"].values()]


def test_remote_missing_runtime(sshd, tmp_path, capsys):
    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        pytest.skip("/usr/bin/python3 is missing on this machine")
    has_ort = subprocess.run([python, "-c", "import onnxruntime"], capture_output=True).returncode == 0
    if has_ort:
        pytest.skip(f"{python} has onnxruntime; no Python without it to test with")
    code = cli.main(["timm:resnet18", "--backend", "onnxruntime", *sshd, "--remote-python", python,
                     "--out", str(tmp_path), *SMALL])
    assert code != 0
    err = capsys.readouterr().err
    assert "lacks" in err and "onnxruntime" in err and "pip install" in err


def test_remote_missing_python(sshd, tmp_path, capsys):
    code = cli.main(["timm:resnet18", "--backend", "onnxruntime", *sshd, "--remote-python", "/nonexistent/python3",
                     "--out", str(tmp_path), *SMALL])
    assert code != 0
    assert "'/nonexistent/python3' is not found" in capsys.readouterr().err


def test_remote_unknown_host_key_is_refused(sshd, tmp_path, capsys):
    """Host keys are checked: with a known_hosts that lacks the key, ssh refuses and we say so."""
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    flags = [f if not f.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={empty}" for f in sshd]
    code = cli.main(["timm:resnet18", "--backend", "onnxruntime", *flags, "--remote-python", sys.executable,
                     "--out", str(tmp_path), *SMALL])
    assert code != 0
    err = capsys.readouterr().err
    assert "cannot reach" in err and "Host key verification failed" in err


def test_remote_word_quotes_user_paths():
    from lrp_plugin.latency.remote import remote_word

    assert remote_word("/opt/my env/python; rm -rf /") == "'/opt/my env/python; rm -rf /'"
    assert remote_word("~/venv/bin/python") == '"$HOME"/venv/bin/python'
    assert remote_word("~/a b/$(x)") == "\"$HOME\"/'a b/$(x)'"


def test_remote_refuses_eager_torch(sshd, tmp_path, capsys):
    assert cli.main(["timm:resnet18", "--backend", "torch", *sshd, "--out", str(tmp_path), *SMALL]) != 0
    assert "torchscript" in capsys.readouterr().err


def test_lrp_cli_has_latency_subcommand(tmp_path):
    from lrp_plugin.cli import build_parser

    args = build_parser().parse_args(["latency", "timm:resnet18", "--input-shape", "3,32,32", "--threads", "2"])
    assert args.func is cli.run_from_args and args.input_shape == [3, 32, 32] and args.threads == 2

