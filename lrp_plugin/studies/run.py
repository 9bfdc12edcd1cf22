"""The three study commands: load data, pick the paper's recipe (or a reduced one), write a report."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import core as lrp
from ..adapters.timm_resnet import PAPER_RESNETS
from ..core.criteria import check_ratio, get_criterion
from ..core.selection import check_selection, check_target_macs
from ..errors import UnknownModelError
from . import report as rep
from .data import ImageSplit, load_split
from .pipeline import conv_channels, large_vs_small, order_study, prune_finetune_reconstruct, train_original
from .recipes import CLASSIFICATION_FINETUNE, CLASSIFICATION_ORIGINAL, Recipe
from .selection import selection_rows
from .training import accuracy, predict


def recipes_for(data: ImageSplit, epochs: int | None, finetune_epochs: int | None) -> tuple[Recipe, Recipe]:
    """The paper's recipes at full length, scaled when epochs are given; digits uses batches of 64."""
    original, finetune = CLASSIFICATION_ORIGINAL, CLASSIFICATION_FINETUNE
    if epochs:
        original = original.scaled(epochs)
    if finetune_epochs:
        finetune = finetune.scaled(finetune_epochs)
    if not data.augment:  # the small bundled dataset
        original, finetune = replace(original, batch_size=64), replace(finetune, batch_size=64)
    return original, finetune


def _check(models: list[str], ratio: float, criteria: list[str], selection: str = "layer",
           target_macs: float | None = None) -> None:
    check_ratio(ratio)
    check_selection(selection)
    check_target_macs(target_macs)
    for criterion in criteria:
        get_criterion(criterion)
    for name in models:
        if name not in PAPER_RESNETS:
            raise UnknownModelError(f"unknown model {name!r} for the studies: use one of {', '.join(PAPER_RESNETS)}")


def _data(dataset: str, data_dir: str | None, seed: int, limit: int | None) -> ImageSplit:
    data = load_split(dataset, data_dir, seed)
    return data.subset(limit, limit) if limit else data


def classification_results(model: str, data: ImageSplit, ratio: float, criteria: list[str] | tuple[str, ...],
                           epochs: int | None, finetune_epochs: int | None, seed: int, progress: bool = True,
                           round_to: int | None = None, selection: str = "layer", target_macs: float | None = None,
                           compare_selection: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train ``model``, then each criterion at ``ratio`` with the ablations (masks chosen by ``selection``);
    ``compare_selection`` adds the first criterion's ``group`` row and, at ``target_macs``, ``layer``/``group``
    and Torch-Pruning's group pruning (``studies.selection``).

    Returns (every number, the models): ``"original"`` and one union-reconstructed model per criterion.
    """
    original_recipe, finetune_recipe = recipes_for(data, epochs, finetune_epochs)
    net = train_original(model, data, original_recipe, seed, progress)
    macs, params = lrp.count_macs_params(net, data.test_x[:1])
    result: dict[str, Any] = {
        "model": model, "dataset": data.name, "ratio": ratio, "seed": seed, "round_to": round_to,
        "selection": selection, "target_macs": target_macs,
        "train_images": len(data.train_y),
        "test_images": len(data.test_y),
        "recipes": {"original": original_recipe.to_dict(), "finetune": finetune_recipe.to_dict()},
        "original": {"accuracy": accuracy(predict(net, data.test_x), data.test_y), "macs": macs, "params": params,
                     "channels": conv_channels(net)},
        "rows": []}
    models = {"original": net}
    for criterion in criteria:
        rows, pruned = prune_finetune_reconstruct(net, data, criterion, ratio, finetune_recipe, seed,
                                                  progress=progress, round_to=round_to, selection=selection)
        result["rows"] += [r.to_dict() for r in rows]
        models[f"{criterion} CR {ratio}"] = pruned
    if compare_selection:
        result["rows"] += [r.to_dict() for r in selection_rows(net, data, criteria[0], ratio, target_macs,
                                                               finetune_recipe, seed, progress)]
    return result, models


def classify_study(model: str, dataset: str, data_dir: str | None, ratio: float, criteria: list[str],
                   epochs: int | None, finetune_epochs: int | None, seed: int, out: Path, limit: int | None = None,
                   progress: bool = True, selection: str = "layer", target_macs: float | None = None
                   ) -> dict[str, Any]:
    """Paper Tables 2-3 for one ResNet: original, then each criterion at ``ratio`` (with ablations); with
    ``target_macs``, the selection rows (group at ``ratio``; layer, group and Torch-Pruning at that budget)."""
    _check([model], ratio, criteria, selection, target_macs)
    start = time.perf_counter()
    data = _data(dataset, data_dir, seed, limit)
    result, _ = classification_results(model, data, ratio, criteria, epochs, finetune_epochs, seed, progress,
                                       selection=selection, target_macs=target_macs,
                                       compare_selection=target_macs is not None)
    result = {"study": "classify", **result, "seconds": time.perf_counter() - start}
    base = result["original"]["macs"]
    _write(out, result, [[r["criterion"], r["variant"], f"{r['reconstructed_accuracy']:.2%}",
                          str(r["identical_predictions"]), "-" if r["changed_predictions"] is None
                          else r["changed_predictions"], f"{r['macs']:,} ({r['macs'] / base:.3f})", f"{r['params']:,}"]
                         for r in result["rows"]],
           ["criterion", "variant", "accuracy", "same predictions as masked", "changed", "MACs (ratio)", "params"])
    rep.plot_channels(out / "channels_per_layer.png", result["original"]["channels"],
                      {r["criterion"]: r["channels"] for r in result["rows"] if r["variant"] == "union"})
    return result


def order_comparison(model: str, dataset: str, data_dir: str | None, ratio: float, criterion: str,
                     epochs: int | None, finetune_epochs: int | None, seed: int, out: Path, limit: int | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Paper Fig. 6: prune -> fine-tune -> reconstruct against prune -> reconstruct -> fine-tune."""
    _check([model], ratio, [criterion])
    start = time.perf_counter()
    data = _data(dataset, data_dir, seed, limit)
    original_recipe, finetune_recipe = recipes_for(data, epochs, finetune_epochs)
    net = train_original(model, data, original_recipe, seed, progress)
    rows = order_study(net, data, criterion, ratio, finetune_recipe, seed, progress)
    result = {"study": "order", "model": model, "dataset": data.name, "ratio": ratio, "criterion": criterion,
              "seed": seed, "recipes": {"original": original_recipe.to_dict(), "finetune": finetune_recipe.to_dict()},
              "original_accuracy": accuracy(predict(net, data.test_x), data.test_y),
              "rows": [r.to_dict() for r in rows], "seconds": time.perf_counter() - start}
    _write(out, result, [[r["variant"], f"{r['reconstructed_accuracy']:.2%}", f"{r['finetune_seconds']:.1f}",
                          f"{r['macs']:,}"] for r in result["rows"]],
           ["order", "final accuracy", "fine-tuning seconds", "MACs"])
    return result


def large_vs_small_comparison(large: str, small: str, dataset: str, data_dir: str | None, ratio: float,
                              criterion: str, epochs: int | None, finetune_epochs: int | None, seed: int, out: Path,
                              limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Compress a large model or train a small one (e.g. ResNet101 at CR 0.4 against ResNet50)."""
    _check([large, small], ratio, [criterion])
    start = time.perf_counter()
    data = _data(dataset, data_dir, seed, limit)
    original_recipe, finetune_recipe = recipes_for(data, epochs, finetune_epochs)
    models = large_vs_small(data, large, small, ratio, criterion, original_recipe, finetune_recipe, seed, progress)
    result = {"study": "large_vs_small", "dataset": data.name, "ratio": ratio, "criterion": criterion, "seed": seed,
              "recipes": {"original": original_recipe.to_dict(), "finetune": finetune_recipe.to_dict()},
              "models": models, "seconds": time.perf_counter() - start}
    _write(out, result, [[name, f"{m['accuracy']:.2%}", f"{m['macs']:,}", f"{m['params']:,}"]
                         for name, m in models.items()], ["model", "accuracy", "MACs", "params"])
    rep.plot_accuracy_vs_macs(out / "accuracy_vs_macs.png",
                              [{"label": name, **m} for name, m in models.items()])
    return result


def _write(out: Path, result: dict[str, Any], rows: list[list[Any]], headers: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rep.write_json(out / "report.json", result)
    title = f"# {result['study']} study on {result['dataset']}\n\n"
    (out / "summary.md").write_text(title + rep.markdown_table(headers, rows) + "\n")
    print(rep.markdown_table(headers, rows))
    print(f"report: {out}")
