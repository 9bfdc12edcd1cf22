"""The main job in a reduced setting: real data, real training, exact reconstruction."""

import json

import pytest
from _extras import require

from lrp_plugin.cli import main


@pytest.fixture(autouse=True, scope="module")
def _needs_extras():
    require("timm")
    require("sklearn")


def test_demo_pipeline_reduced(tmp_path, capsys):
    code = main(["demo", "--epochs", "1", "--finetune-epochs", "1", "--criterion", "l1", "gm",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["test_images"] == 449 and report["train_images"] == 1348
    for criterion in ("l1", "gm"):
        rows = report["criteria"][criterion]
        union = rows["union"]
        assert union["identical_predictions"] and union["masked_accuracy"] == union["reconstructed_accuracy"]
        assert union["max_rel_error"] < 1e-5 and union["params"] < report["original"]["params"]
        # the paper's ablations lose what union keeps
        assert rows["intersection"]["max_rel_error"] > 1e-3 and rows["intersection"]["changed_predictions"] > 0
        assert rows["bn_not_masked"]["max_rel_error"] > 1e-3
    out = capsys.readouterr().out
    assert "union" in out and "intersection" in out and "bn_not_masked" in out


@pytest.mark.parametrize("argv,message", [
    (["demo", "--ratio", "1.2"], "[0, 1)"),
    (["demo", "--model", "vgg16"], "unknown timm ResNet"),
    (["demo", "--criterion", "taylor"], "unknown criterion"),
])
def test_demo_bad_input(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
