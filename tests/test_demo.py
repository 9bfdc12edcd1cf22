"""The main job and the study tools in a reduced setting: real data, real training, exact reconstruction."""

import json
import struct

import pytest
from _extras import require

from lrp_plugin.cli import main


@pytest.fixture(autouse=True, scope="module")
def _needs_extras():
    for module in ("timm", "sklearn", "matplotlib", "tqdm"):
        require(module)


def _is_png(path):
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    return data[:8] == b"\x89PNG\r\n\x1a\n" and width > 100 and height > 100


def test_demo_pipeline_reduced(tmp_path, capsys):
    code = main(["demo", "--epochs", "1", "--finetune-epochs", "1", "--criterion", "l1", "gm",
                 "--latency-runs", "3", "--round-to", "4", "--target-macs", "0", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["test_images"] == 449 and report["train_images"] == 1348 and report["round_to"] == 4
    rows = {(r["criterion"], r["variant"]): r for r in report["rows"]}
    for criterion in ("l1", "gm"):
        union = rows[(criterion, "union")]
        assert union["identical_predictions"] and union["changed_predictions"] == 0
        assert union["masked_accuracy"] == union["reconstructed_accuracy"]
        assert union["max_rel_error"] < 1e-5 and union["macs"] < report["original"]["macs"]
        # the paper's ablations lose what union keeps
        assert rows[(criterion, "intersection")]["changed_predictions"] > 0
        assert rows[(criterion, "intersection")]["max_rel_error"] > 1e-3
        assert rows[(criterion, "bn_not_masked")]["max_rel_error"] > 1e-3
        folded = rows[(criterion, "bn_not_masked_folded")]  # ours: the same masks, rebuilt exactly
        assert folded["changed_predictions"] == 0 and folded["max_rel_error"] < 1e-5
    latency = report["latency"]
    assert set(latency["models"]) == {"original", "l1 CR 0.5", "gm CR 0.5"}
    for name in ("channels_per_layer.png", "accuracy_vs_macs.png", "latency.png"):
        assert _is_png(tmp_path / name), name
    summary = (tmp_path / "summary.md").read_text()
    assert "| l1 | union |" in summary and "bn_not_masked" in summary
    out = capsys.readouterr().out
    assert "intersection" in out and "latency" in out


@pytest.mark.parametrize("argv,message", [
    (["demo", "--ratio", "1.2"], "[0, 1)"),
    (["demo", "--model", "vgg16"], "unknown timm ResNet"),
    (["demo", "--criterion", "taylor"], "unknown criterion"),
    (["demo", "--target-macs", "1.5"], "target_macs"),
    (["study", "classify", "--target-macs", "-1"], "target_macs"),
    (["study", "classify", "--dataset", "cifar10"], "--data-dir"),
    (["study", "classify", "--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "cifar-10-batches-py"),
    (["study", "order", "--model", "vgg16"], "unknown model"),
    (["study", "large-vs-small", "--ratio", "-1"], "[0, 1)"),
])
def test_bad_input(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


QUICK = ["--limit", "256", "--epochs", "1", "--finetune-epochs", "1", "--quiet"]


def test_classify_study_reduced(tmp_path):
    assert main(["study", "classify", "--model", "resnet18", "--criterion", "l2", *QUICK, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["recipes"]["finetune"]["lr"] == 0.01 and report["recipes"]["original"]["lr"] == 0.1
    union = next(r for r in report["rows"] if r["variant"] == "union")
    assert union["identical_predictions"] and _is_png(tmp_path / "channels_per_layer.png")


def test_order_study_reduced(tmp_path):
    assert main(["study", "order", "--model", "resnet18", *QUICK, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "report.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["finetune_then_reconstruct", "reconstruct_then_finetune"]
    assert rows[0]["identical_predictions"] and rows[0]["macs"] == rows[1]["macs"]


def test_large_vs_small_study_reduced(tmp_path):
    argv = ["study", "large-vs-small", "--large", "resnet34", "--small", "resnet18", "--ratio", "0.5", *QUICK]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    models = json.loads((tmp_path / "report.json").read_text())["models"]
    assert set(models) == {"resnet34", "resnet18", "resnet34 pruned l1 CR 0.5"}
    assert models["resnet34 pruned l1 CR 0.5"]["macs"] < models["resnet34"]["macs"]
    assert _is_png(tmp_path / "accuracy_vs_macs.png")


def _write_tiny_cifar(root, per_batch=16):
    """A CIFAR-10 folder in torchvision's format (python pickles), with random images."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))


def test_classify_study_reads_a_local_cifar10_folder(tmp_path):
    _write_tiny_cifar(tmp_path / "data")
    argv = ["study", "classify", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--model", "resnet18",
            "--criterion", "l1", "--epochs", "1", "--finetune-epochs", "1", "--quiet", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dataset"] == "CIFAR-10" and report["recipes"]["original"]["batch_size"] == 128
    assert next(r for r in report["rows"] if r["variant"] == "union")["identical_predictions"]


def test_selection_rows_at_equal_macs_are_lossless_and_on_budget():
    """The demo's selection rows (issue 17) on a small slice: group at the CR, layer/group at a MACs budget
    held and rebuilt exactly, Torch-Pruning's group pruning at the same MACs."""
    import torch

    from lrp_plugin.studies.data import load_digits_split
    from lrp_plugin.studies.pipeline import build_classifier
    from lrp_plugin.studies.recipes import Recipe
    from lrp_plugin.studies.selection import selection_rows

    data = load_digits_split(seed=0).subset(64, 64)
    torch.manual_seed(0)
    net = build_classifier("resnet18", data.num_classes).eval()
    import lrp_plugin as lrp

    base = lrp.count_macs_params(net, data.test_x[:1])[0]
    rows = {r.variant: r for r in selection_rows(net, data, "l1", 0.5, 0.25, Recipe(1, 0.01, (), 5, batch_size=64),
                                                 progress=False)}
    assert set(rows) == {"group", "layer@macs0.25", "group@macs0.25", "tp_group@macs0.25"}
    for name in ("group", "layer@macs0.25", "group@macs0.25"):
        assert rows[name].changed_predictions == 0 and rows[name].max_rel_error < 1e-5
    for name in ("layer@macs0.25", "group@macs0.25", "tp_group@macs0.25"):
        assert abs(rows[name].macs / base - 0.25) < 0.01, (name, rows[name].macs / base)
