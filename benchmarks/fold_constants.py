"""BatchNorm not masked, rebuilt with and without folding the constants removed channels emit.

ResNet50 (timm, 224) and YOLOv3-D53 (mmdet, --yolo-size, default 256), random weights and
randomized BN statistics (non-zero beta), conv masks only (what NNI's own pruners give), CR 0.5,
L1/L2/GM. Per row: max relative output error without folding (the paper's Table 8 state) and
with it, the extra parameters folding keeps over the plain union rebuild, and how many channels
were folded / kept as representatives / kept as not constant. Prints a table, writes JSON.

    python benchmarks/fold_constants.py [--models resnet50 yolov3] [--yolo-size 256] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import torch

import lrp_plugin as lrp
from lrp_plugin.testing import randomize_batchnorm


def _model(name: str, yolo_size: int):
    torch.manual_seed(0)
    if name == "resnet50":
        from lrp_plugin.adapters import create_resnet

        model = create_resnet("resnet50", num_classes=1000).eval()
        return randomize_batchnorm(model), torch.randn(1, 3, 224, 224), None, []
    from lrp_plugin.adapters import find_adapter
    from lrp_plugin.adapters.mmdet_yolo import build_yolov3

    model = randomize_batchnorm(build_yolov3(num_classes=20))
    adapter = find_adapter(model)
    return model, torch.randn(1, 3, yolo_size, yolo_size), adapter.forward_fn, adapter.ignored_layers(model)


def run(models: list[str], criteria: list[str], yolo_size: int) -> list[dict]:
    rows = []
    for name in models:
        for criterion in criteria:
            model, x, forward_fn, ignored = _model(name, yolo_size)
            masks = lrp.compute_masks(model, x, criterion, 0.5, ignored_layers=ignored, forward_fn=forward_fn)
            lrp.apply_masks(model, masks, mask_bn=False)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the unfolded loss is what is measured
                plain = lrp.reconstruct(model, x, fold_constants=False, strict=False, forward_fn=forward_fn).report
            folded = lrp.reconstruct(model, x, forward_fn=forward_fn).report
            rows.append({
                "model": name, "criterion": criterion, "input": list(x.shape),
                "rel_err_without_folding": plain.max_rel_error, "rel_err_folded": folded.max_rel_error,
                "params_before": folded.params_before, "params_union": plain.params_after,
                "params_folded": folded.params_after, "extra_params": folded.params_after - plain.params_after,
                "groups": len(folded.groups), "constants_folded": folded.constants_folded,
                "constant_channels_kept": folded.constant_channels_kept,
                "not_constant_kept": folded.not_constant_kept, "seconds": time.perf_counter() - start})
            r = rows[-1]
            print(f"{name:9} {criterion:3} rel err {r['rel_err_without_folding']:.3g} -> {r['rel_err_folded']:.3g}  "
                  f"params {r['params_before']:,} -> {r['params_folded']:,} (union {r['params_union']:,}, "
                  f"+{r['extra_params']:,})  folded {r['constants_folded']}, representatives "
                  f"{r['constant_channels_kept']} of {r['groups']} groups, not constant {r['not_constant_kept']}",
                  flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "yolov3"], choices=["resnet50", "yolov3"])
    parser.add_argument("--criteria", nargs="+", default=["l1", "l2", "gm"])
    parser.add_argument("--yolo-size", type=int, default=256)
    parser.add_argument("--out", default="benchmarks/results/fold_constants.json")
    args = parser.parse_args()
    rows = run(args.models, args.criteria, args.yolo_size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                               "rows": rows}, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
