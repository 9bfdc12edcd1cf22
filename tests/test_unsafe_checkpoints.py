"""A file holding a pickled object (a tampered checkpoint) is refused, never unpickled, with our
advice (UnsafeCheckpointError), by every reader of pruned/masked checkpoints and specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from toy_models import ToyNet

import lrp_plugin as lrp
from lrp_plugin.core.spec import read_pruned


def _toy() -> ToyNet:
    torch.manual_seed(0)
    return ToyNet([("res", 8), ("cat", 4, 4)])


class Tampered:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _tampered(path: Path, payload: dict) -> Path:
    torch.save({**payload, "extra": Tampered(path.with_suffix(".ran"))}, path)
    return path


def _check_refused(call, path: Path) -> None:
    with pytest.raises(lrp.UnsafeCheckpointError) as info:
        call(path)
    message = str(info.value)
    assert str(path) in message and "could run code" in message
    assert "weights_only=False" not in message and "weights_only = False" not in message
    assert "it calls getattr" in message  # names what the file tried to call (Path.touch via getattr)
    assert not path.with_suffix(".ran").exists(), "the pickled object must never be unpickled"


def test_tampered_files_are_refused_by_every_reader(tmp_path):
    model = _toy().eval()
    pruned = lrp.save_pruned(model, tmp_path / "pruned.pth")
    good = torch.load(pruned, weights_only=True)
    _check_refused(read_pruned, _tampered(tmp_path / "pruned_bad.pth", good))
    _check_refused(lambda p: lrp.load_pruned(_toy(), p), tmp_path / "pruned_bad.pth")

    masks = lrp.compute_masks(model, torch.randn(1, 3, 32, 32), "l1", 0.5)
    lrp.apply_masks(model, masks)
    masked = torch.load(lrp.save_masked(model, tmp_path / "masked.pth"), weights_only=True)
    fresh = _toy()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    _check_refused(lambda p: lrp.load_masked(fresh, p), _tampered(tmp_path / "masked_bad.pth", masked))
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items()), "a refusal changes nothing"

    _check_refused(lrp.ChannelMasks.load, _tampered(tmp_path / "masks_bad.pt", masks.state_dict()))


def test_tampered_pruned_checkpoint_is_refused_by_lrp_pruned(tmp_path):
    from _extras import require

    require("mmengine")
    from lrp_plugin.integrations.mmengine import read_spec

    good = {"meta": {"lrp_spec_json": "{}"}, "state_dict": {}}
    _check_refused(read_spec, _tampered(tmp_path / "pruned.pth", good))


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_a_file_torch_cannot_read_is_a_spec_mismatch_not_a_pickle_error(tmp_path, content):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(lrp.SpecMismatchError, match="torch.load cannot read it") as info:
        lrp.load_pruned(_toy(), path)
    assert "weights_only=False" not in str(info.value) and path.read_bytes() == content
