"""The main job: the whole method on a real dataset that ships with scikit-learn (digits).

train a timm ResNet (CIFAR stem) -> for each criterion: mask conv + BN, fine-tune with the masks
held, reconstruct, compare the masked and the reconstructed model on every test image; the
paper's two ablations (intersection, BN not masked); CPU latency original vs pruned; a report
folder with JSON, a Markdown summary and plots.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .core.criteria import check_ratio, get_criterion
from .core.plan import check_round_to
from .core.selection import check_selection, check_target_macs
from .errors import InvalidArgumentError
from .studies import report as rep
from .studies.data import load_digits_split
from .studies.run import classification_results


def run_demo(model_name: str = "resnet18", ratio: float = 0.5, criteria: tuple[str, ...] = ("l1", "l2", "gm"),
             epochs: int = 8, finetune_epochs: int = 3, seed: int = 0, out_dir: str | Path = "runs/demo",
             progress: bool = True, latency_runs: int = 30, round_to: int | None = None, selection: str = "layer",
             target_macs: float | None = 0.25) -> dict[str, Any]:
    """Run the pipeline and write the report folder; returns every number it wrote.

    ``selection`` chooses the masks of the main rows; the first criterion also gets the selection
    rows: ``group`` at ``ratio`` and, at ``target_macs`` (None: skipped), ``layer``, ``group`` and
    Torch-Pruning's own group pruning, fine-tuned the same way.

    ``round_to=N`` keeps every pruned channel count a multiple of N (kept channels are zero or
    constant, so still lossless), which vector units and runtimes prefer."""
    ratio = check_ratio(ratio)
    check_selection(selection)
    target_macs = check_target_macs(target_macs)
    for criterion in criteria:
        get_criterion(criterion)
    if epochs < 1 or finetune_epochs < 1:
        raise InvalidArgumentError("epochs and finetune_epochs must be >= 1")
    check_round_to(round_to)
    start = time.perf_counter()
    torch.manual_seed(seed)
    data = load_digits_split(seed=seed)
    results, models = classification_results(model_name, data, ratio, criteria, epochs, finetune_epochs, seed,
                                              progress, round_to=round_to, selection=selection,
                                              target_macs=target_macs, compare_selection=True)
    results["latency"] = _latency(models, data.test_x[:1], latency_runs, progress) if latency_runs > 0 else None
    results["seconds"] = time.perf_counter() - start
    write_report(Path(out_dir), results)
    return results


def _latency(models, example, runs, progress) -> dict[str, Any]:
    from .latency.measure import time_interleaved

    return time_interleaved(models, example, runs=runs, warmup=5, threads=torch.get_num_threads(),
                            progress=progress)


def write_report(out: Path, results: dict[str, Any]) -> None:
    """report.json, summary.md and the plots, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rep.write_json(out / "report.json", results)
    union = {f"{r['criterion']} (union)": r["channels"] for r in results["rows"] if r["variant"] == "union"}
    rep.plot_channels(out / "channels_per_layer.png", results["original"]["channels"], union)
    points = [{"label": "original", "macs": results["original"]["macs"],
               "accuracy": results["original"]["accuracy"], "marker": "*"}]
    markers = {"union": "o", "intersection": "x", "bn_not_masked": "^", "bn_not_masked_folded": "v"}
    points += [{"label": f"{r['criterion']} {r['variant']}", "macs": r["macs"],
                "accuracy": r["reconstructed_accuracy"], "marker": markers.get(r["variant"], "s")}
               for r in results["rows"]]
    rep.plot_accuracy_vs_macs(out / "accuracy_vs_macs.png", points)
    if results["latency"]:
        from .latency.report import plot_png

        plot_png(out / "latency.png", {"backends": {results["latency"]["backend"]: results["latency"]},
                                       "models": {name: {"macs_ratio": ratio}
                                                  for name, ratio in _macs_ratios(results).items()}})
    (out / "summary.md").write_text(format_results(results, markdown=True))


def _macs_ratios(results: dict[str, Any]) -> dict[str, float]:
    """MACs of each union-reconstructed model over the original's, keyed like the latency models."""
    return {f"{r['criterion']} CR {results['ratio']}": r["macs"] / results["original"]["macs"]
            for r in results["rows"] if r["variant"] == "union"}


def format_results(results: dict[str, Any], markdown: bool = False) -> str:
    """The paper's tables in small (plain text for the terminal, or Markdown)."""
    base = results["original"]
    head = (f"{results['model']} on {results['dataset']} ({results['train_images']} train / "
            f"{results['test_images']} test images), CR {results['ratio']}, seed {results['seed']}: original "
            f"accuracy {base['accuracy']:.2%}, {base['params']:,} params, {base['macs']:,} MACs")
    headers = ["criterion", "variant", "masked acc", "rebuilt acc", "same predictions", "changed", "max rel err",
               "params", "MACs (ratio)"]
    rows = [[r["criterion"], r["variant"], "-" if r["masked_accuracy"] is None else f"{r['masked_accuracy']:.2%}",
             f"{r['reconstructed_accuracy']:.2%}", str(r["identical_predictions"]),
             "-" if r["changed_predictions"] is None else r["changed_predictions"],
             "-" if r["max_rel_error"] is None else f"{r['max_rel_error']:.1e}",
             f"{r['params']:,}", f"{r['macs']:,} ({r['macs'] / base['macs']:.1%})"] for r in results["rows"]]
    parts = [head, "", _table(headers, rows, markdown)]
    latency = results.get("latency")
    if latency:
        lat_headers = ["model", "median ms", "p90 ms", "MACs ratio", "latency ratio (median, p10-p90)"]
        macs_ratio = _macs_ratios(results)
        lat_rows = []
        for name, stats in latency["models"].items():
            ratio = latency["ratios"].get(name)
            lat_rows.append([name, f"{stats['median_ms']:.2f}", f"{stats['p90_ms']:.2f}",
                             f"{macs_ratio.get(name, 1.0):.1%}",
                             "-" if ratio is None else
                             f"{ratio['median']:.1%} ({ratio['p10']:.1%}-{ratio['p90']:.1%})"])
        parts += ["", f"CPU latency, PyTorch eager, batch 1, {latency['threads']} threads, {latency['runs']} "
                  "interleaved runs:", _table(lat_headers, lat_rows, markdown)]
    parts += ["", f"{results['seconds']:.0f} s in all"]
    return "\n".join(parts) + "\n"


def _table(headers: list[str], rows: list[list[Any]], markdown: bool) -> str:
    if markdown:
        return rep.markdown_table(headers, rows)
    widths = [max(len(str(x)) for x in [h] + [r[i] for r in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(f"{h:<{w}}" for h, w in zip(headers, widths))]
    lines += ["  ".join(f"{str(c):<{w}}" for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
