"""export.py: the pruned checkpoint + config the hook writes, used where the work dir moved to."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from _extras import require
from mm_runner import SIZE, max_rel, pruning_hook, tensor_out, yolo_config

require("mmengine")


def test_moved_work_dir_small_model(tmp_path):
    """The same on the small model (seconds): Runner.test on the moved pruned.py computes what
    the trained masked model computed, with the weights of the moved pruned.pth."""
    from mm_toy import toy_config
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = toy_config(tmp_path / "work")
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = pruning_hook(runner)
    work = Path(cfg.work_dir)
    assert str(work) not in (work / "pruned.py").read_text()
    moved = tmp_path / "copied" / "to" / "jetson"
    shutil.copytree(work, moved)
    shutil.rmtree(work)
    test_cfg = Config.fromfile(moved / "pruned.py")
    assert test_cfg.model.lrp_spec == test_cfg.load_from == str(moved / "pruned.pth")
    test_cfg.work_dir = str(tmp_path / "test")
    tester = Runner.from_cfg(test_cfg)
    assert set(tester.test()) == {"accuracy"}
    assert sum(p.numel() for p in tester.model.parameters()) == hook.report.params_after
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(tester.model.eval().logits(x), runner.model.eval().logits(x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_pruned_config_survives_moving_the_work_dir(tmp_path):
    """Train one iteration, move the work dir elsewhere, run Runner.test (tools/test.py's path)
    on the moved pruned.py: it finds pruned.pth beside itself, not at the old absolute path."""
    require("mmcv.ops")
    require("mmdet")
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = yolo_config(tmp_path)
    cfg.train_cfg.max_iters = 1
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = pruning_hook(runner)
    work = Path(cfg.work_dir)
    assert str(work) not in (work / "pruned.py").read_text(), "no absolute path to the work dir"

    moved = tmp_path / "elsewhere" / "run1"
    moved.parent.mkdir()
    shutil.move(work, moved)
    assert not work.exists()
    test_cfg = Config.fromfile(moved / "pruned.py")
    assert test_cfg.model.lrp_spec == test_cfg.load_from == str(moved / "pruned.pth")
    test_cfg.work_dir = str(tmp_path / "test")
    # tools/test.py is a fresh process; in this one the training run's visualizer (the stock
    # config names it 'visualizer', a process-wide instance) still writes into the old work dir
    test_cfg.visualizer.name = "after-the-move"
    tester = Runner.from_cfg(test_cfg)
    metrics = tester.test()
    assert isinstance(metrics, dict)  # random weights: CocoMetric may find no detection to score
    state = torch.load(moved / "pruned.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in tester.model.state_dict().items())
    assert sum(p.numel() for p in tester.model.parameters()) == hook.report.params_after
    x = torch.randn(1, 3, SIZE, SIZE)
    assert max_rel(tensor_out(runner.model, x), tensor_out(tester.model, x)) < 1e-5


def test_failed_write_leaves_no_file(tmp_path):
    """A checkpoint that cannot be put in place leaves neither a half file nor a temp file."""
    from lrp_plugin.integrations.mmengine import write_pruned_checkpoint

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    (tmp_path / "pruned.pth").mkdir()  # the rename onto it fails after the temp file was written
    with pytest.raises(OSError):
        write_pruned_checkpoint(model, tmp_path / "pruned.pth")
    assert [p.name for p in tmp_path.iterdir()] == ["pruned.pth"] and not any((tmp_path / "pruned.pth").iterdir())
    (tmp_path / "pruned.pth").rmdir()
    path = write_pruned_checkpoint(model, tmp_path / "pruned.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned.pth", "pruned.pth.spec.json"]
    assert torch.load(path, weights_only=True)["meta"]["lrp_spec_json"]
