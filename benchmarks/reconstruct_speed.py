"""Time lrp.reconstruct on timm resnet50/101 at 224x224, with and without verification.

Torch-Pruning's own pruner on the same groups is timed alongside, as the yardstick, interleaved
round by round with ours so that a shared machine's load hits both alike.
Prints a table and writes JSON (default benchmarks/results/reconstruct_speed.json).

    python benchmarks/reconstruct_speed.py [--repeat 3] [--out PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch_pruning as tp

import lrp_plugin as lrp
from lrp_plugin.adapters import create_resnet
from lrp_plugin.testing import randomize_batchnorm


def _time_interleaved(fns: dict, repeat: int) -> dict[str, list[float]]:
    """Each function once per round, round after round: on a shared machine a change in load hits
    all of them alike, so their ratio stays fair."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()  # the previous run's graphs and copies are freed outside the timed region
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def _tp_prune(model, x):
    """Torch-Pruning alone: magnitude pruner, 50% per group, no masks, no verification."""
    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.5, ignored_layers=[model.fc])
    pruner.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "reconstruct_speed.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in ("resnet50", "resnet101"):
        model = randomize_batchnorm(create_resnet(name))
        x = torch.randn(1, 3, 224, 224)
        masks = lrp.compute_masks(model, x, "l1", 0.5)
        lrp.apply_masks(model, masks)
        lrp.reconstruct(model, x, verify=True)  # warm-up: first calls pay one-off allocator/kernel set-up
        runs = _time_interleaved({"reconstruct": lambda: lrp.reconstruct(model, x, verify=False),
                                  "reconstruct_verify": lambda: lrp.reconstruct(model, x, verify=True),
                                  "torch_pruning": lambda: _tp_prune(create_resnet(name), x)}, args.repeat)
        plain, verified, tp_alone = runs["reconstruct"], runs["reconstruct_verify"], runs["torch_pruning"]
        groups = len(lrp.reconstruct(model, x, verify=False).report.groups)
        rows.append({"model": name, "input": [1, 3, 224, 224], "groups": groups,
                     "reconstruct_s_median": statistics.median(plain),
                     "reconstruct_verify_s_median": statistics.median(verified),
                     "torch_pruning_pruner_s_median": statistics.median(tp_alone),
                     "reconstruct_over_torch_pruning": statistics.median(plain) / statistics.median(tp_alone),
                     "load_average_1min": os.getloadavg()[0], "runs": runs})
    result = {"benchmark": "reconstruct_speed", "torch": torch.__version__, "torch_pruning": tp.__version__,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "threads": torch.get_num_threads(), "repeat": args.repeat, "results": rows}
    print(f"{'model':<10} {'groups':>6} {'reconstruct':>12} {'+verify':>9} {'TP pruner':>10} {'ratio':>6} {'load':>5}"
          "  (median s; ratio = reconstruct / TP pruner; load = 1-min load average)")
    for r in rows:
        print(f"{r['model']:<10} {r['groups']:>6} {r['reconstruct_s_median']:>12.3f} "
              f"{r['reconstruct_verify_s_median']:>9.3f} {r['torch_pruning_pruner_s_median']:>10.3f} "
              f"{r['reconstruct_over_torch_pruning']:>6.2f} {r['load_average_1min']:>5.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
