"""The shipped configs (configs/ at the top, in the wheel as lrp_plugin/.mim/configs): listing,
paths, copying, and the mmdet/mmseg configs' paper schedules. The wheel itself is checked in test_wheel_install.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from _extras import require

from lrp_plugin.cli import main
from lrp_plugin.configs import config_path, copy_configs, list_configs, resolve_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_list_and_resolve_by_name():
    shipped = list_configs()
    assert "nni/resnet_cr0.5.json" in shipped and "mmdet/yolov3_d53_cr05_l1_voc.py" in shipped
    assert all(c.startswith("mmseg/") for c in list_configs("mmseg")) and len(list_configs("mmseg")) == 4
    for name in ("yolov3_d53_cr05_l1_voc", "yolov3_d53_cr05_l1_voc.py", "mmdet/yolov3_d53_cr05_l1_voc.py"):
        assert resolve_config(name) == "mmdet/yolov3_d53_cr05_l1_voc.py"
    assert config_path("resnet_cr0.5") == CONFIGS / "nni" / "resnet_cr0.5.json"
    with pytest.raises(FileNotFoundError, match="resnet_cr0.5.*lrp configs list"):
        config_path("resnet_cr0.55")
    with pytest.raises(FileNotFoundError, match="of kind nni"):
        resolve_config("yolov3_d53_cr05_l1_voc", kind="nni")


def test_copy_refuses_to_replace_a_changed_file(tmp_path):
    written = copy_configs(tmp_path, "mmdet")
    assert len(written) == len(list((CONFIGS / "mmdet").glob("*.py")))
    assert all(p.read_bytes() == (CONFIGS / "mmdet" / p.name).read_bytes() for p in written)
    assert copy_configs(tmp_path, "mmdet") == written  # same content again: nothing to refuse
    mine = tmp_path / "mmdet" / "yolov3_d53_cr05_l1_voc.py"
    mine.write_text("# my edits\n")
    with pytest.raises(FileExistsError, match="overwrite"):
        copy_configs(tmp_path)
    assert mine.read_text() == "# my edits\n", "a refusal changes nothing"
    assert not (tmp_path / "nni").exists(), "nothing copied when one file clashes"
    copy_configs(tmp_path, overwrite=True)
    assert mine.read_bytes() == (CONFIGS / "mmdet" / mine.name).read_bytes()
    assert not list(tmp_path.rglob(".*.tmp")) and not list(tmp_path.rglob(".*yolov3*"))  # no temp files left


def test_configs_command(tmp_path, capsys):
    assert main(["configs", "list", "--kind", "nni"]) == 0
    assert capsys.readouterr().out.split() == list_configs("nni")
    assert main(["configs", "path", "fcn_r101-d8_cr03_l1_voc12aug"]) == 0
    assert Path(capsys.readouterr().out.strip()) == CONFIGS / "mmseg" / "fcn_r101-d8_cr03_l1_voc12aug.py"
    assert main(["configs", "copy", str(tmp_path / "out")]) == 0
    assert f"copied {len(list_configs())} configs" in capsys.readouterr().out
    assert main(["configs", "path", "nope"]) == 2
    assert "no shipped config 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_shipped_configs_load_with_paper_schedules():
    require("mmengine")
    require("mmdet")
    require("mmseg")
    from mmengine.config import Config

    det = [config_path(n) for n in list_configs("mmdet") if n.startswith("mmdet/yolov3") and "_cr" in n]
    seg = [config_path(n) for n in list_configs("mmseg") if "_cr03_" in n]
    want = {(c, r) for c in ("l1", "l2", "gm") for r in (0.5, 0.9)}
    found = set()
    for path in det:
        cfg = Config.fromfile(path)
        (hook,) = cfg.custom_hooks
        assert hook["type"] == "LosslessPruningHook"
        assert cfg.custom_imports.imports == ["lrp_plugin.integrations.mmengine"]
        found.add((hook["criterion"], hook["ratio"]))
        assert cfg.model.bbox_head.num_classes == 20 and cfg.train_dataloader.batch_size == 16
        assert cfg.train_cfg.max_epochs == 100
        opt = cfg.optim_wrapper.optimizer
        assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ("SGD", 1e-4, 0.9, 5e-4)
        assert cfg.param_scheduler == [dict(type="CosineAnnealingLR", T_max=100, eta_min=1e-5, by_epoch=True,
                                            begin=0, end=100)]
    assert want <= found
    assert {Config.fromfile(p).custom_hooks[0]["criterion"] for p in seg} == {"l1", "l2", "gm"}
    for path in seg:
        cfg = Config.fromfile(path)
        assert cfg.custom_hooks[0]["ratio"] == 0.3 and cfg.model.backbone.depth == 101
        assert cfg.train_cfg.max_epochs == 50 and cfg.train_dataloader.batch_size == 16
        opt = cfg.optim_wrapper.optimizer
        assert (opt.lr, opt.momentum, opt.weight_decay) == (1e-3, 0.9, 1e-4)
        assert cfg.param_scheduler[0]["milestones"] == [25, 40] and cfg.param_scheduler[0]["gamma"] == 0.2


@pytest.mark.slow
@pytest.mark.parametrize(("name", "stock_hooks"), [("rtmdet_tiny_cr05_l1_coco", ["EMAHook", "PipelineSwitchHook"]),
                                                   ("yolox_tiny_cr05_l1_coco",
                                                    ["YOLOXModeSwitchHook", "SyncNormHook", "EMAHook"])])
def test_edge_detector_configs_keep_the_stock_hooks(name, stock_hooks):
    """The RTMDet/YOLOX configs add the hook to the stock custom_hooks instead of replacing them."""
    require("mmengine")
    require("mmdet")
    from mmengine.config import Config

    cfg = Config.fromfile(config_path(name))
    *stock, ours = cfg.custom_hooks
    assert [h["type"] for h in stock] == stock_hooks
    assert (ours["type"], ours["criterion"], ours["ratio"]) == ("LosslessPruningHook", "l1", 0.5)
    assert ours["selection"] == "group"  # the edge detectors' streams shrink too
    assert cfg.custom_imports.imports == ["lrp_plugin.integrations.mmengine"]
