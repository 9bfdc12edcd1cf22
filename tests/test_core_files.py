"""Files are written whole or not at all, with the process umask, and pruned models reload before
they are named (aliases included)."""

import os
import stat

import pytest
import torch
from torch import nn

import lrp_plugin as lrp
from lrp_plugin.core.files import atomic_path, write_text
from lrp_plugin.testing import randomize_batchnorm


def test_written_files_get_the_umask_not_private_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failing_block_leaves_the_old_file_and_no_temp(tmp_path):
    path = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


class SharedConvHead(nn.Module):
    """One conv shared by two levels under two names, each level with its own BN (RTMDet's
    ``share_conv=True``): ``state_dict()`` lists its weight twice, ``named_modules()`` once."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.levels = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
                                    for _ in range(2))
        self.levels[1][0] = self.levels[0][0]
        self.preds = nn.ModuleList(nn.Conv2d(8, 4, 1) for _ in range(2))

    def forward(self, x):
        y = self.stem(x)
        return tuple(pred(level(y)) for level, pred in zip(self.levels, self.preds))


def test_modules_shared_under_two_names_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = randomize_batchnorm(SharedConvHead())
    x = torch.randn(2, 3, 16, 16)
    lrp.apply_masks(model, lrp.compute_masks(model, x, "l1", 0.5))
    pruned = lrp.reconstruct(model, x).model
    assert pruned.stem[0].out_channels < 8
    path = lrp.save_pruned(pruned, tmp_path / "pruned.pth", base_model=SharedConvHead())
    loaded = lrp.load_pruned(SharedConvHead(), path).eval()
    assert loaded.levels[1][0] is loaded.levels[0][0]
    for a, b in zip(loaded(x), pruned.eval()(x)):
        torch.testing.assert_close(a, b)
