"""The ``lrp`` command. Thin: parse, call the library, print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import LRPError


def _demo(args: argparse.Namespace) -> int:
    from .demo import format_results, run_demo

    results = run_demo(model_name=args.model, ratio=args.ratio, criteria=tuple(args.criterion), epochs=args.epochs,
                       finetune_epochs=args.finetune_epochs, seed=args.seed, out_dir=args.out,
                       progress=not args.quiet, latency_runs=args.latency_runs, round_to=args.round_to,
                       selection=args.selection, target_macs=args.target_macs or None)
    print(format_results(results))
    print(f"report folder: {args.out} (report.json, summary.md, *.png)")
    return 0


def _study(args: argparse.Namespace) -> int:
    from .studies import run

    common = dict(dataset=args.dataset, data_dir=args.data_dir, ratio=args.ratio, epochs=args.epochs,
                  finetune_epochs=args.finetune_epochs, seed=args.seed, out=Path(args.out), limit=args.limit,
                  progress=not args.quiet)
    if args.study == "classify":
        run.classify_study(model=args.model, criteria=args.criterion, selection=args.selection,
                           target_macs=args.target_macs, **common)
    elif args.study == "order":
        run.order_comparison(model=args.model, criterion=args.criterion[0], **common)
    else:
        run.large_vs_small_comparison(large=args.large, small=args.small, criterion=args.criterion[0], **common)
    return 0


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="train, prune (L1/L2/GM), fine-tune and reconstruct on sklearn digits")
    demo.add_argument("--model", default="resnet18", help="timm ResNet name (default resnet18)")
    demo.add_argument("--ratio", type=float, default=0.5, help="fraction of channels masked per conv (default 0.5)")
    demo.add_argument("--criterion", nargs="+", default=["l1", "l2", "gm"],
                      help="l1, l2 and/or gm (or names added with lrp.register_criterion)")
    demo.add_argument("--epochs", type=int, default=8, help="training epochs of the original model")
    demo.add_argument("--finetune-epochs", type=int, default=3, help="fine-tuning epochs with masks held")
    demo.add_argument("--latency-runs", type=int, default=30, help="timed runs per model (0: skip latency)")
    demo.add_argument("--round-to", type=int, default=None, metavar="N",
                      help="keep pruned channel counts at multiples of N (zero channels kept; still lossless)")
    demo.add_argument("--selection", default="layer", choices=("layer", "group"),
                      help="masks of the main rows: per layer (the paper) or one per coupled group")
    demo.add_argument("--target-macs", type=float, default=0.25,
                      help="MACs budget of the selection rows (layer, group, Torch-Pruning at equal MACs; "
                           "0: skip them)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="runs/demo", help="report folder (default runs/demo)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)


def _add_studies(sub) -> None:
    study = sub.add_parser("study", help="reproduce the paper's studies on your data (or the bundled digits)")
    kinds = study.add_subparsers(dest="study", required=True)
    for name, help_text in (("classify", "ResNet on CIFAR-10/digits: original, then L1/L2/GM with ablations"),
                            ("order", "prune->fine-tune->reconstruct vs prune->reconstruct->fine-tune (Fig. 6)"),
                            ("large-vs-small", "a pruned large ResNet against a small one trained as is")):
        p = kinds.add_parser(name, help=help_text)
        p.add_argument("--dataset", choices=["digits", "cifar10"], default="digits")
        p.add_argument("--data-dir", help="folder holding cifar-10-batches-py (torchvision format, no download)")
        p.add_argument("--ratio", type=float, default=0.5)
        p.add_argument("--criterion", nargs="+", default=["l1", "l2", "gm"] if name == "classify" else ["l1"])
        p.add_argument("--epochs", type=int, help="original training epochs (default: the paper's 200)")
        p.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs (default: the paper's 100)")
        p.add_argument("--limit", type=int, help="use only the first N train and test images (quick runs)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=f"runs/study-{name}")
        p.add_argument("--quiet", action="store_true")
        if name == "large-vs-small":
            p.add_argument("--large", default="resnet101")
            p.add_argument("--small", default="resnet50")
        else:
            p.add_argument("--model", default="resnet50", help="resnet18/34/50/101")
        if name == "classify":
            p.add_argument("--selection", default="layer", choices=("layer", "group"),
                           help="masks of the criterion rows: per layer (the paper) or one per coupled group")
            p.add_argument("--target-macs", type=float,
                           help="add the selection rows: group at --ratio; layer, group and Torch-Pruning's "
                                "MetaPruner + GroupMagnitudeImportance at this fraction of the MACs")
        p.set_defaults(func=_study)


def _add_latency(sub) -> None:
    from .latency.cli import add_latency_parser  # imports no runtime: onnxruntime etc. load when used

    add_latency_parser(sub)


def _configs(args: argparse.Namespace) -> int:
    from . import configs

    if args.action == "list":
        print("\n".join(str(configs.config_path(n)) if args.paths else n for n in configs.list_configs(args.kind)))
    elif args.action == "path":
        print(configs.config_path(args.name))
    else:
        written = configs.copy_configs(args.dest, args.kind, overwrite=args.overwrite)
        print(f"copied {len(written)} configs to {args.dest}")
    return 0


def _add_configs(sub) -> None:
    cfg = sub.add_parser("configs", help="the shipped NNI / mmdet / mmseg configs: list, path, copy")
    actions = cfg.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="print the shipped configs as KIND/FILE")
    listing.add_argument("--paths", action="store_true", help="print installed file paths instead")
    path = actions.add_parser("path", help="the installed path of one config (e.g. for tools/train.py)")
    path.add_argument("name", help="e.g. yolov3_d53_cr05_l1_voc, mmdet/yolov3_d53_cr05_l1_voc.py, resnet_cr0.5")
    copy = actions.add_parser("copy", help="copy them into DEST/nni, DEST/mmdet, DEST/mmseg (as `mim download`)")
    copy.add_argument("dest")
    copy.add_argument("--overwrite", action="store_true", help="replace files that differ")
    for p in (listing, copy):
        p.add_argument("--kind", choices=["nni", "mmdet", "mmseg"], help="only this kind")
    cfg.set_defaults(func=_configs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrp", description="Lossless reconstruction for channel pruning.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_studies(sub)
    _add_latency(sub)
    _add_configs(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LRPError, ImportError, FileNotFoundError, FileExistsError) as exc:
        print(f"lrp {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
