"""Time lrp.reconstruct on timm resnet50/101 at 224x224, with and without verification.

Torch-Pruning's own pruner on the same groups is timed alongside, as the yardstick.
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


def _time(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        gc.collect()  # the previous run's graphs and copies are freed outside the timed region
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
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
        plain = _time(lambda: lrp.reconstruct(model, x, verify=False), args.repeat)
        verified = _time(lambda: lrp.reconstruct(model, x, verify=True), args.repeat)
        tp_alone = _time(lambda: _tp_prune(create_resnet(name), x), args.repeat)
        groups = len(lrp.reconstruct(model, x, verify=False).report.groups)
        rows.append({"model": name, "input": [1, 3, 224, 224], "groups": groups,
                     "reconstruct_s_median": statistics.median(plain),
                     "reconstruct_verify_s_median": statistics.median(verified),
                     "torch_pruning_pruner_s_median": statistics.median(tp_alone),
                     "runs": {"reconstruct": plain, "reconstruct_verify": verified, "torch_pruning": tp_alone}})
    result = {"benchmark": "reconstruct_speed", "torch": torch.__version__, "torch_pruning": tp.__version__,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "threads": torch.get_num_threads(), "repeat": args.repeat, "results": rows}
    print(f"{'model':<10} {'groups':>6} {'reconstruct':>12} {'+verify':>9} {'TP pruner':>10}  (median s)")
    for r in rows:
        print(f"{r['model']:<10} {r['groups']:>6} {r['reconstruct_s_median']:>12.3f} "
              f"{r['reconstruct_verify_s_median']:>9.3f} {r['torch_pruning_pruner_s_median']:>10.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
