"""The README's copy-paste examples run as written."""

import re
from pathlib import Path

import pytest
from _extras import require

README = Path(__file__).resolve().parents[1] / "README.md"


def _example(name: str) -> str:
    match = re.search(rf"<!-- example: {re.escape(name)} -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no example marked {name!r}"
    return match.group(1)


@pytest.mark.parametrize("name,needs", [("usage", ["timm"]), ("nni", ["timm", "nni"]),
                                        ("torch-pruning", ["timm"])])
def test_readme_example_runs(name, needs, tmp_path, monkeypatch):
    for module in needs:
        require(module)
    monkeypatch.chdir(tmp_path)  # examples may write files
    exec(compile(_example(name), f"README:{name}", "exec"), {})


def test_readme_adapter_example(tmp_path, monkeypatch):
    """README *Adapters*, as written: ``my_models.py`` is a file outside the package, imported by
    MMEngine through the config's ``custom_imports``; the hook prunes the model through a Runner
    with it, and the quick check runs as written."""
    require("mmengine")
    import sys

    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    from lrp_plugin.adapters import ADAPTERS, find_adapter

    (tmp_path / "my_models.py").write_text(_example("adapter-module"))
    (tmp_path / "cfg.py").write_text(_example("adapter-config"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cfg = Config.fromfile(tmp_path / "cfg.py")  # imports my_models, as tools/train.py does
        model_type = sys.modules["my_models"].TinySegNet
        assert find_adapter(model_type()).module == "my_models"  # registered from outside the package

        data = [dict(inputs=torch.randn(3, 32, 32), data_samples=torch.randint(0, 3, (32, 32))) for _ in range(4)]
        cfg.merge_from_dict(dict(
            work_dir=str(tmp_path / "work"),
            train_dataloader=dict(dataset=data, batch_size=2, sampler=dict(type="DefaultSampler", shuffle=False)),
            train_cfg=dict(type="IterBasedTrainLoop", max_iters=2),
            optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01, momentum=0.9))))
        cfg.train_dataloader.dataset = data  # a plain list: merge_from_dict would turn it into a dict
        runner = Runner.from_cfg(cfg)
        runner.train()
        hook = next(h for h in runner.hooks if type(h).__name__ == "LosslessPruningHook")
        assert hook.report.lossless and hook.report.params_after < hook.report.params_before
        assert (tmp_path / "work" / "pruned.pth").is_file()

        exec(compile(_example("adapter-check"), "README:adapter-check", "exec"), {})
    finally:
        ADAPTERS._adapters.pop("my-tiny-seg-net", None)
        sys.modules.pop("my_models", None)
