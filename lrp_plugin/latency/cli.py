"""``lrp latency`` / ``tools/latency.py``: time original and pruned models here or on a device over SSH."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import LRPError
from .errors import InputShapeError, ModelSourceError

EXAMPLES = """examples:
  lrp latency timm:resnet18 --prune-ratio 0.5 --input-shape 3,224,224 --backend onnxruntime torch
  lrp latency pruned.pt --base timm:resnet50 --host pi@raspberrypi.local --threads 4
  lrp latency timm:resnet50 --prune-ratio 0.5 --host nvidia@jetson --backend ort-cuda --remote-python python3
"""


def _shape(text: str) -> list[int]:
    try:
        dims = [int(d) for d in text.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        dims = []
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape: give C,H,W such as 3,224,224")
    return dims


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The latency flags (shared by ``lrp latency`` and ``tools/latency.py``)."""
    p.add_argument("models", nargs="+", help="timm:NAME, a pruned file from lrp.save_pruned (with --base), or a .onnx")
    p.add_argument("--base", help="base model of pruned files, e.g. timm:resnet18 (also timed, as the reference)")
    p.add_argument("--prune-ratio", type=float, help="with timm:NAME, also build and time its pruned counterpart")
    p.add_argument("--criterion", default="l1", choices=["l1", "l2", "gm"], help="criterion for --prune-ratio")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier size of timm models (default 1000)")
    p.add_argument("--input-shape", type=_shape, help="C,H,W of one sample (default 3,224,224; ONNX: its own)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--backend", nargs="+", default=None,
                   help="torch (eager, local only), torchscript, onnxruntime, ort-cuda, ort-tensorrt "
                        "(default: onnxruntime torch; remote default: onnxruntime)")
    p.add_argument("--threads", type=int, help="intra-op threads for torch and onnxruntime (default: all cores)")
    p.add_argument("--warmup", type=int, default=10, help="untimed rounds first (default 10)")
    p.add_argument("--runs", type=int, default=50,
                   help="timed interleaved rounds (default 50; the cap with --time-budget)")
    p.add_argument("--time-budget", type=float, help="stop timing a backend after this many seconds (>= 3 rounds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/latency", help="folder for latency.json/.csv/.png (default runs/latency)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    r = p.add_argument_group("remote (Raspberry Pi, Jetson, any SSH host)")
    r.add_argument("--host", help="user@device: run the timing there over SSH (uses your ~/.ssh/config)")
    r.add_argument("--port", type=int, help="SSH port")
    r.add_argument("--identity", help="SSH private key file (ssh -i)")
    r.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra ssh/scp -o option, repeatable (e.g. UserKnownHostsFile=~/.ssh/known_hosts_lab)")
    r.add_argument("--remote-python", default="python3", help="Python on the device (default python3)")


def add_latency_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``latency`` on an argparse subparsers object (``lrp latency ...``)."""
    p = subparsers.add_parser("latency", help="time original vs pruned models (locally or on a Pi/Jetson over SSH)",
                              description=__doc__, epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run_from_args)
    return p


def measure(models: list[str], *, base: str | None = None, prune_ratio: float | None = None, criterion: str = "l1",
            num_classes: int = 1000, input_shape: list[int] | None = None, batch: int = 1,
            backends: list[str] | None = None, threads: int | None = None, warmup: int = 10, runs: int = 50,
            time_budget_s: float | None = None, seed: int = 0, host: str | None = None, port: int | None = None,
            identity: str | None = None, ssh_options: list[str] | None = None, remote_python: str = "python3",
            progress: bool = True) -> dict[str, Any]:
    """Load, export (checked), time interleaved (here or on ``host``) and return the full result dict."""
    import os

    import torch

    from .backends import check_backends
    from .export import onnx_info
    from .measure import measure_local, prepare_artifacts
    from .sources import load_models

    if runs < 1 or warmup < 0 or batch < 1:
        raise InputShapeError("--runs must be >= 1, --warmup >= 0 and --batch >= 1")
    if prune_ratio is not None and not 0 < prune_ratio < 1:
        raise ModelSourceError(f"--prune-ratio {prune_ratio} is outside (0, 1): e.g. 0.5 masks half the channels")
    remote = host is not None
    backends = check_backends(list(backends or (["onnxruntime"] if remote else ["onnxruntime", "torch"])), remote)
    if input_shape is None:  # an ONNX-only run takes the file's own static shape
        onnx_specs = [m for m in models if m.lower().endswith(".onnx") and Path(m).is_file()]
        declared = onnx_info(Path(onnx_specs[0]))["input_shape"] if onnx_specs and len(onnx_specs) == len(models) \
            else []
        input_shape = [int(d) for d in declared[1:]] if declared and all(isinstance(d, int) and d > 0
                                                                          for d in declared) else [3, 224, 224]
    shape = [batch, *input_shape]
    target = None
    if remote:  # reachability, Python and runtimes first: no minutes of exporting before "host down"
        from .remote import SSHTarget, preflight

        target = SSHTarget(host=host, port=port, identity=identity, options=list(ssh_options or []),
                           python=remote_python)
        if progress:
            print(f"checking {host}: ssh, {remote_python}, runtimes for {', '.join(backends)}", file=sys.stderr)
        preflight(target, backends)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    entries = load_models(models, base=base, x=x, prune_ratio=prune_ratio, criterion=criterion,
                          num_classes=num_classes, seed=seed, quiet=not progress)
    if "torch" in backends and any(e.module is None for e in entries):
        raise ModelSourceError("an .onnx file cannot be timed with --backend torch: use --backend onnxruntime")
    ref = entries[0]
    threads_local = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="lrp-latency-") as tmp:
        job_models = prepare_artifacts(entries, backends, x, Path(tmp), progress=progress)
        if target is not None:
            from .remote import run_remote

            job = {"backends": backends, "input_shape": shape, "threads": threads, "warmup": warmup, "runs": runs,
                   "time_budget_s": time_budget_s, "reference": ref.name}
            result = run_remote(target, job_models, job, progress=progress, checked=True)
        else:
            result = measure_local(entries, job_models, backends, x, threads=threads_local, warmup=warmup, runs=runs,
                                   time_budget_s=time_budget_s, progress=progress)
    used_threads = next(iter(result["backends"].values()))["threads"]
    result.update(
        mode="remote" if remote else "local", host=host, reference=ref.name,
        settings={"input_shape": shape, "batch": batch, "threads": used_threads, "warmup": warmup, "runs": runs,
                  "time_budget_s": time_budget_s, "backends": backends, "seed": seed},
        models={e.name: {"source": e.source, "params": e.params, "macs": e.macs,
                         "macs_ratio": e.macs / ref.macs if e.macs and ref.macs else None,
                         "params_ratio": e.params / ref.params if e.params and ref.params else None,
                         "onnx_check": e.notes.get("onnx_check"), "pruned_in_process": e.notes.get("prune")}
                for e in entries})
    return result


def run_from_args(args: argparse.Namespace) -> int:
    """Run from parsed flags, print the table, write JSON/CSV/PNG."""
    from .report import format_table, write_all

    result = measure(args.models, base=args.base, prune_ratio=args.prune_ratio, criterion=args.criterion,
                     num_classes=args.num_classes, input_shape=args.input_shape, batch=args.batch,
                     backends=args.backend, threads=args.threads, warmup=args.warmup, runs=args.runs,
                     time_budget_s=args.time_budget, seed=args.seed, host=args.host, port=args.port,
                     identity=args.identity, ssh_options=args.ssh_option, remote_python=args.remote_python,
                     progress=not args.quiet)
    print(format_table(result))
    paths = write_all(Path(args.out), result, plot=not args.no_plot)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tools/latency.py``; errors print one line naming the fix and exit 2."""
    parser = argparse.ArgumentParser(prog="latency", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except (LRPError, ImportError) as exc:
        print(f"latency: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latency: interrupted", file=sys.stderr)
        return 130
