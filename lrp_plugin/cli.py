"""The ``lrp`` command. Thin: parse, call the library, print."""

from __future__ import annotations

import argparse
import sys

from .errors import LRPError


def _demo(args: argparse.Namespace) -> int:
    from .demo import format_results, run_demo

    def progress(message: str) -> None:
        print(f"\r  {message:<60}", end="", file=sys.stderr, flush=True)

    results = run_demo(model_name=args.model, ratio=args.ratio, criteria=tuple(args.criterion),
                       epochs=args.epochs, finetune_epochs=args.finetune_epochs, seed=args.seed,
                       out_dir=args.out, progress=None if args.quiet else progress)
    print(file=sys.stderr)
    print(format_results(results))
    print(f"report: {args.out}/report.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrp", description="Lossless reconstruction for channel pruning.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train, prune (L1/L2/GM), fine-tune and reconstruct on sklearn digits")
    demo.add_argument("--model", default="resnet18", help="timm ResNet name (default resnet18)")
    demo.add_argument("--ratio", type=float, default=0.5, help="fraction of channels masked per conv")
    demo.add_argument("--criterion", nargs="+", default=["l1", "l2", "gm"], help="l1, l2 and/or gm")
    demo.add_argument("--epochs", type=int, default=8, help="training epochs of the original model")
    demo.add_argument("--finetune-epochs", type=int, default=3, help="fine-tuning epochs with masks held")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="runs/demo", help="report folder")
    demo.add_argument("--quiet", action="store_true", help="no progress line")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LRPError, ImportError, FileNotFoundError) as exc:
        print(f"lrp {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
