"""timm ECA nets: compute_masks time, skipped groups (and why), and the rebuild's error.

``ecaresnet50d`` (random weights, randomized BN statistics), L1, CR 0.5, BN masked. ECA gates each
channel by ``x * sigmoid(conv1d(mean(x))).expand_as(x)``: the expand only broadcasts over
positions, but the 1-D conv runs *across* channels (each gate reads its neighbours' means), so a
channel on that path cannot be removed without changing its neighbours' gates. Prints a table,
writes JSON.

    python benchmarks/eca_gates.py [--model ecaresnet50d] [--size 64] [--threads 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import re
import time
from pathlib import Path

import timm
import torch

import lrp_plugin as lrp
from lrp_plugin.testing import randomize_batchnorm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ecaresnet50d")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/eca_gates.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = randomize_batchnorm(timm.create_model(args.model, pretrained=False)).eval()
    x = torch.randn(1, 3, args.size, args.size)
    start = time.perf_counter()
    masks = lrp.compute_masks(model, x, "l1", 0.5)
    mask_s = time.perf_counter() - start
    skipped = masks.meta.get("skipped", {})
    reasons = collections.Counter(re.sub(r"\b(layer|stages?|blocks?)[.\w]*", "<layer>", r)[:120]
                                  for r in skipped.values())
    lrp.apply_masks(model, masks)
    start = time.perf_counter()
    result = lrp.reconstruct(model, x)
    rebuild_s = time.perf_counter() - start
    report = result.report
    row = {"model": args.model, "input": [1, 3, args.size, args.size], "threads": args.threads,
           "compute_masks_s": round(mask_s, 2), "masked_layers": len(masks), "skipped": len(skipped),
           "skipped_reasons": dict(reasons), "skipped_for_expand": sum("expand" in r for r in skipped.values()),
           "reconstruct_s": round(rebuild_s, 2), "lossless": report.lossless, "max_rel_error": report.max_rel_error,
           "params_before": report.params_before, "params_after": report.params_after}
    print("| model | compute_masks | masked | skipped (for an expand) | reconstruct | lossless, max rel | params |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {mask_s:.1f} s | {len(masks)} | {len(skipped)} ({row['skipped_for_expand']}) | "
          f"{rebuild_s:.1f} s | {report.lossless}, {report.max_rel_error:.2g} | "
          f"{report.params_before:,} -> {report.params_after:,} |")
    for reason, count in reasons.items():
        print(f"  skipped x{count}: {reason}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**row, "torch": torch.__version__, "timm": timm.__version__,
                               "machine": platform.machine()}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
