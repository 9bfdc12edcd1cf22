"""Issue 20's acceptance table: every model through the stock OpenMMLab tools with LosslessPruningHook.

For each model: stock ``tools/train.py`` (2 iterations on a synthetic COCO / segmentation set written
here, random weights, L1, CR 0.5, the stock custom_hooks kept) -> the hook's lossless rebuild ->
stock ``tools/test.py`` on the pruned config and checkpoint. Checked against the masked model (the
training config and its last checkpoint): the raw head outputs (max relative difference) and, for
detectors, the predictions both ``tools/test.py`` runs dump (boxes and scores, image by image).
FLOPs come from the stock ``analysis_tools/get_flops.py`` (detectors: on the 128x128 test images;
segmentors: 64x64). The harness is tests/mm_stock.py (the tests run two detectors and one segmentor).

    python benchmarks/openmmlab_models.py                 # all models (CPU: ~20-30 minutes)
    python benchmarks/openmmlab_models.py --models YOLOX-tiny --update   # replace those rows in the JSON

Prints the table and writes benchmarks/results/openmmlab_models.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the harness the tests use

import mm_stock  # noqa: E402
import torch  # noqa: E402


def measure(name: str, root: Path) -> dict:
    scope = mm_stock.MODELS[name][0]
    started = time.time()
    row = dict(model=name, scope=scope, stock_config=mm_stock.MODELS[name][1])
    try:
        run = mm_stock.train_and_test(name, root / name.replace(" ", "_"))
    except Exception as exc:  # noqa: BLE001 - a failing model is a row of the table, not the end of it
        return dict(row, ok=False, error=f"{type(exc).__name__}: {str(exc)[-600:]}", seconds=time.time() - started)
    row.update(ok=True, params_before=run.report["params_before"], params_after=run.report["params_after"],
               lossless=run.report["lossless"], hook_max_rel_error=run.report["max_rel_error"],
               macs_before=run.report.get("macs_before"), macs_after=run.report.get("macs_after"),
               test_py=run.test_error or "runs", raw_max_rel=mm_stock.raw_outputs_max_rel(run))
    if scope == "mmdet":
        try:
            masked = mm_stock.masked_predictions(run)
        except RuntimeError as exc:  # a bug of the stock model, then, not of the pruned one
            row["masked_test_py"] = mm_stock.last_error(str(exc))
        else:
            row["same_predictions"] = run.test_error is None and mm_stock.same_predictions(
                masked, run.work / "pruned.pkl")
    row["flops_before"] = mm_stock.get_flops(scope, run.config, run.work)
    row["flops_after"] = mm_stock.get_flops(scope, run.pruned_config, run.work)
    row["seconds"] = round(time.time() - started, 1)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | params before -> after | FLOPs before -> after (stock get_flops) | MACs (hook report) "
             "| test.py on the pruned output |", "|---|---|---|---|---|"]
    for r in rows:
        if not r["ok"]:
            lines.append(f"| {r['model']} | failed | | | {r['error'][:160]} |")
            continue
        checks = f"runs; raw outputs max rel {r['raw_max_rel']:.1e}"
        if r["test_py"] != "runs":
            checks = (f"fails: {r['test_py'][:90]}" + ("; so does the masked (stock) model's"
                                                      if r.get("masked_test_py") == r["test_py"] else "")
                      + f"; raw outputs (in-process) max rel {r['raw_max_rel']:.1e}")
        elif "same_predictions" in r:
            checks += f"; predictions {'equal' if r['same_predictions'] else 'DIFFER'} to the masked model's"
        flops = (f"{r['flops_before']} -> {r['flops_after']}" if not str(r["flops_before"]).startswith("error")
                 else f"get_flops.py fails on the stock config ({r['flops_before'][7:60]})")
        macs = (f"{r['macs_before'] / 1e9:.3f} G -> {r['macs_after'] / 1e9:.3f} G" if r.get("macs_before") else "")
        lines.append(f"| {r['model']} | {r['params_before'] / 1e6:.2f} M -> {r['params_after'] / 1e6:.2f} M "
                     f"({r['params_after'] / r['params_before']:.0%}) | {flops} | {macs} | {checks} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(mm_stock.MODELS), choices=list(mm_stock.MODELS))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "openmmlab_models.json"))
    parser.add_argument("--update", action="store_true", help="keep the other models' rows of an existing --out")
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lrp_mm_") as tmp:
        for name in args.models:
            rows.append(measure(name, Path(tmp)))
            print(f"{name}: {json.dumps(rows[-1], default=str)}", flush=True)
    if args.update and out.is_file():
        fresh = {r["model"]: r for r in rows}
        old = [r for r in json.loads(out.read_text())["rows"] if r["model"] not in fresh]
        rows = sorted(old + rows, key=lambda r: list(mm_stock.MODELS).index(r["model"]))
    print(table(rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    record = dict(command=" ".join(sys.argv), machine=platform.platform(), python=sys.version.split()[0],
                  torch=torch.__version__, rows=rows, table=table(rows))
    out.write_text(json.dumps(record, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
