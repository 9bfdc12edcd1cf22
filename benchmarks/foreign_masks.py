"""Masks from NNI 3.0's own pruners and ours, through LosslessSpeedup, against the NNI-masked model.

A resnet18 (timm, CIFAR stem) trained briefly on scikit-learn's digits (32x32), then masked by:
NNI SlimPruner (BN-only masks), NNI LevelPruner (element-wise), NNI L1NormPruner with and without
the classifier ``fc`` in its config, and lrp_plugin's L1NormPruner / FPGMPruner. Per row: what
``LosslessSpeedup(model, x, masks).speedup_model()`` returns (a smaller model or a typed refusal),
its report, and the rebuilt model against the model NNI masked (every mask multiplied into its
tensor): changed test predictions and max relative logit error. Prints a table, writes JSON.

    python benchmarks/foreign_masks.py [--epochs 3] [--out benchmarks/results/foreign_masks.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
import warnings
from pathlib import Path

import nni
import torch
import torch.nn.functional as F
from nni.compression import TorchEvaluator
from nni.compression.pruning import L1NormPruner as NNIL1NormPruner
from nni.compression.pruning import LevelPruner, SlimPruner

from lrp_plugin import LRPError
from lrp_plugin.adapters import create_resnet
from lrp_plugin.integrations.nni import FPGMPruner, L1NormPruner, LosslessSpeedup, load_config_list, nni_masked_copy
from lrp_plugin.studies.data import load_digits_split
from lrp_plugin.studies.recipes import Recipe
from lrp_plugin.studies.training import accuracy, predict, train


def _evaluator(data, dummy):
    def training_step(batch, model):
        return F.cross_entropy(model(batch[0]), batch[1])

    def training_func(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        model.train()
        for step in range(max_steps or 1):
            idx = torch.arange(step * 32, step * 32 + 32) % len(data.train_x)
            loss = training_step((data.train_x[idx], data.train_y[idx]), model)
            optimizers.zero_grad()
            loss.backward()
            optimizers.step()

    optimizer = nni.trace(torch.optim.SGD)(_evaluator.model.parameters(), lr=1e-3, momentum=0.9)
    return TorchEvaluator(training_func, optimizer, training_step, dummy_input=dummy)


def _masks(kind: str, model, data, dummy):
    if kind == "NNI SlimPruner (BN-only masks)":
        _evaluator.model = model
        pruner = SlimPruner(model, [{"op_types": ["BatchNorm2d"], "sparse_ratio": 0.3}], _evaluator(data, dummy),
                            training_steps=5)
    elif kind == "NNI LevelPruner (element-wise)":
        pruner = LevelPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    elif kind == "NNI L1NormPruner, fc in the config":
        pruner = NNIL1NormPruner(model, [{"op_types": ["Conv2d", "Linear"], "sparse_ratio": 0.5}])
    elif kind == "NNI L1NormPruner, convs only":
        pruner = NNIL1NormPruner(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    elif kind == "lrp L1NormPruner (resnet_cr0.5)":
        pruner = L1NormPruner(model, load_config_list("resnet_cr0.5"), dummy_input=dummy)
    else:
        pruner = FPGMPruner(model, load_config_list("resnet_cr0.5"), dummy_input=dummy)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return masks


KINDS = ["NNI SlimPruner (BN-only masks)", "NNI LevelPruner (element-wise)", "NNI L1NormPruner, fc in the config",
         "NNI L1NormPruner, convs only", "lrp L1NormPruner (resnet_cr0.5)", "lrp FPGMPruner (resnet_cr0.5)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/foreign_masks.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_digits_split()
    trained = create_resnet("resnet18", num_classes=10, cifar_stem=True)
    start = time.perf_counter()
    train(trained, data, Recipe(epochs=args.epochs, lr=0.05, milestones=(args.epochs - 1,), gamma_div=10),
          progress=False)
    trained.eval()
    acc = accuracy(predict(trained, data.test_x), data.test_y)
    print(f"resnet18 on digits: {args.epochs} epochs in {time.perf_counter() - start:.0f} s, "
          f"test accuracy {acc:.3f} ({len(data.test_y)} test images)")
    dummy = data.test_x[:2]
    rows = []
    for kind in KINDS:
        model = copy.deepcopy(trained)
        torch.manual_seed(0)
        masks = _masks(kind, model, data, dummy)
        model.eval()
        reference = nni_masked_copy(model, masks).eval()
        ref_pred = predict(reference, data.test_x)
        row = {"masks_from": kind, "masked_accuracy": accuracy(ref_pred, data.test_y)}
        speedup = LosslessSpeedup(model, dummy, masks, inplace=False)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pruned = speedup.speedup_model().eval()
        except LRPError as exc:
            row.update(returned=f"refused: {type(exc).__name__}", report=str(exc)[:160], changed="-",
                       rel_err="-", params="-")
        else:
            report = speedup.report
            with torch.no_grad():
                got, want = pruned(data.test_x), reference(data.test_x)
            rel = ((got - want).abs().max() / want.abs().max()).item()
            row.update(returned=f"rebuilt model ({report.params_before:,} -> {report.params_after:,} params)",
                       report=f"lossless={report.lossless}, max rel {report.max_rel_error:.2g}"
                              + (f", {len(caught)} warnings" if caught else ""),
                       changed=int((got.argmax(1) != ref_pred).sum()), rel_err=rel,
                       params=report.params_after, pruned_accuracy=accuracy(got.argmax(1), data.test_y))
        rows.append(row)
        print(f"| {kind} | {row['returned']} | {row['report']} | changed {row['changed']} of {len(data.test_y)}, "
              f"rel err {row['rel_err'] if isinstance(row['rel_err'], str) else format(row['rel_err'], '.2g')} |",
              flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"epochs": args.epochs, "test_accuracy": acc, "test_images": len(data.test_y),
                               "torch": torch.__version__, "nni": nni.__version__, "machine": platform.machine(),
                               "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
