"""``lrp latency`` / ``tools/latency.py``: time original and pruned models here or on a device over SSH."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..core.criteria import criterion_name
from ..core.selection import SELECTIONS
from ..errors import LRPError
from .api import LatencyJob, run_job
from .remote import SSHTarget

EXAMPLES = """examples:
  lrp latency timm:resnet18 --prune-ratio 0.5 --input-shape 3,224,224 --backend onnxruntime torch
  lrp latency pruned.pt --base timm:resnet50 --host pi@raspberrypi.local --threads 4 --backend ncnn
  lrp latency mmdet:yolo/yolov3_d53_8xb8-ms-416-273e_coco.py --prune-ratio 0.5 --round-to 8 --input-shape 3,416,416
  lrp latency WD/pruned.py --checkpoint WD/pruned.pth --base CONFIG.py --input-shape 3,416,416 --backend ncnn
  lrp latency timm:resnet50 --prune-ratio 0.5 --host nvidia@jetson --backend tensorrt --fp16
  lrp latency timm:resnet50 --prune-ratio 0.5 --round-to 8 --backend torch --device cuda --fp16 --channels-last
  lrp latency timm:resnet50 --prune-ratio 0.5 --host nvidia@jetson --backend torchscript --device cuda --fp16
"""


def _shape(text: str) -> list[int]:
    try:
        dims = [int(d) for d in text.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        dims = []
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape: give C,H,W such as 3,224,224")
    return dims


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a channel multiple: give an integer such as 8, or auto"
                                         ) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The latency flags (shared by ``lrp latency`` and ``tools/latency.py``)."""
    p.add_argument("models", nargs="+",
                   help="timm:NAME, mmdet:CONFIG, mmseg:CONFIG (stock name or path), the hook's pruned.py, "
                        "a pruned file from lrp.save_pruned (with --base), or a .onnx")
    p.add_argument("--base", help="reference of pruned models: timm:NAME for lrp.save_pruned files, an mmdet/mmseg "
                                  "config for the hook's pruned.py (default: the stock model it wraps)")
    p.add_argument("--checkpoint", help="weights for mmdet:/mmseg: configs, or the hook's pruned.pth for pruned.py")
    p.add_argument("--prune-ratio", type=float, help="with timm:NAME / mmdet: / mmseg:, also build and time its "
                                                     "pruned counterpart (0 <= ratio < 1)")
    p.add_argument("--round-to", type=_round_to,
                   help="keep pruned channel counts at multiples of N (lossless: the extra channels are zero); auto: "
                        "the multiple that paid on the first backend at this device and precision (round_to study)")
    p.add_argument("--criterion", default="l1", type=criterion_name,
                   help="criterion for --prune-ratio: l1, l2, gm (L1Norm, FPGM ...; lrp.register_criterion names)")
    p.add_argument("--selection", default="layer", choices=SELECTIONS,
                   help="layer: per-layer masks (the paper, default); group: one mask per coupled group (residual "
                        "streams shrink too, about Torch-Pruning's compression)")
    p.add_argument("--target-macs", type=float, help="build the pruned counterpart at this fraction of the original "
                                                     "MACs (the ratio is searched) instead of --prune-ratio")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier size of timm models (default 1000)")
    p.add_argument("--input-shape", type=_shape, help="C,H,W of one sample (default 3,224,224; ONNX: its own)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--backend", nargs="+", default=None,
                   help="torch (eager, local only), torchscript, onnxruntime, ort-cuda, ort-tensorrt, ncnn, tensorrt "
                        "(trtexec) (default: onnxruntime torch; remote default: onnxruntime)")
    p.add_argument("--threads", type=int, help="threads for torch, onnxruntime and ncnn (default: all cores)")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="where torch/torchscript run (default cpu); cuda: timed with CUDA events, cuDNN autotuned")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true",
                           help="tensorrt: FP16 engines (trtexec --fp16); torch/torchscript on CUDA: half precision")
    precision.add_argument("--bf16", action="store_true", help="torch/torchscript: bfloat16 model and input")
    p.add_argument("--channels-last", action="store_true",
                   help="torch/torchscript: model and input in channels_last memory format")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="torch/torchscript on CUDA: capture each forward once as a CUDA graph and replay it")
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


def job_from_args(args: argparse.Namespace) -> LatencyJob:
    """The flags as a LatencyJob (validated by ``run_job``)."""
    target = None
    if args.host:
        target = SSHTarget(host=args.host, port=args.port, identity=args.identity, options=list(args.ssh_option),
                           python=args.remote_python)
    return LatencyJob(models=args.models, base=args.base, checkpoint=args.checkpoint, prune_ratio=args.prune_ratio,
                      criterion=args.criterion, round_to=args.round_to, num_classes=args.num_classes,
                      selection=args.selection, target_macs=args.target_macs,
                      input_shape=args.input_shape, batch=args.batch, backends=args.backend, threads=args.threads,
                      warmup=args.warmup, runs=args.runs, time_budget_s=args.time_budget, seed=args.seed,
                      fp16=args.fp16, bf16=args.bf16, device=args.device, channels_last=args.channels_last,
                      cuda_graphs=args.cuda_graphs, target=target, progress=not args.quiet)


def run_from_args(args: argparse.Namespace) -> int:
    """Run from parsed flags, print the table, write JSON/CSV/PNG."""
    from .report import format_table, write_all

    result = run_job(job_from_args(args))
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
