"""Accuracy at equal MACs: layer vs group selection vs Torch-Pruning's own group pruning, on digits.

A timm ResNet with the CIFAR stem is trained on scikit-learn's digits (as in ``lrp demo``), then at
each MACs budget: ``layer`` and ``group`` masks (ratio searched by ``target_macs``) fine-tuned with
the masks held and rebuilt losslessly, and Torch-Pruning's ``MetaPruner`` +
``GroupMagnitudeImportance(p=1)`` (its ratio bisected to the same MACs) fine-tuned the same way.
Mean over ``--seeds``.

    python benchmarks/equal_macs.py [--targets 0.25 0.06] [--seeds 0 1 2] [--epochs 8] [--finetune-epochs 3]
        [--model resnet18] [--criterion l1] [--out benchmarks/results/equal_macs.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).parent))
from bench_latency_common import command, write_json  # noqa: E402

from lrp_plugin.studies.data import load_digits_split  # noqa: E402
from lrp_plugin.studies.pipeline import train_original  # noqa: E402
from lrp_plugin.studies.run import recipes_for  # noqa: E402
from lrp_plugin.studies.selection import selection_rows  # noqa: E402
from lrp_plugin.studies.training import accuracy, predict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.06])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--criterion", default="l1")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "equal_macs.json"))
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        data = load_digits_split(seed=seed)
        original, finetune = recipes_for(data, args.epochs, args.finetune_epochs)
        net = train_original(args.model, data, original, seed, progress=False)
        base = accuracy(predict(net, data.test_x), data.test_y)
        for target in args.targets:
            for r in selection_rows(net, data, args.criterion, None, target, finetune, seed, progress=False):
                row = {"seed": seed, "target_macs": target, "original_accuracy": base, **r.to_dict()}
                row.pop("channels")
                rows.append(row)
                print(f"seed {seed} MACs {target:g} {r.variant:<22} acc {r.reconstructed_accuracy:.2%} "
                      f"changed {r.changed_predictions}", flush=True)
    table = {}
    for r in rows:
        key = (r["target_macs"], r["variant"].split("@")[0])
        table.setdefault(key, []).append(r["reconstructed_accuracy"])
    print(f"\n{args.model} on digits, {len(args.seeds)} seed(s), {args.finetune_epochs} fine-tune epochs: "
          "mean test accuracy")
    print(f"{'MACs':>6} {'layer':>8} {'group':>8} {'TP group':>9}")
    summary = []
    for target in args.targets:
        accs = {v: mean(table[(target, v)]) for v in ("layer", "group", "tp_group")}
        summary.append({"target_macs": target, **accs})
        print(f"{target:>6g} {accs['layer']:>8.2%} {accs['group']:>8.2%} {accs['tp_group']:>9.2%}")
    path = write_json(Path(args.out), {"benchmark": "equal_macs", "command": command(), "summary": summary,
                                       "rows": rows, "settings": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
