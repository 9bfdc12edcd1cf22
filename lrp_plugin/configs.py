"""The configs shipped with lrp_plugin: NNI config lists (``nni/*.json``) and mmdet/mmseg
configs that inherit the stock OpenMMLab ones (``mmdet/*.py``, ``mmseg/*.py``).

Their one source is ``configs/`` at the top of the repository. As OpenMMLab does
(``mmdet/.mim/configs``), the wheel carries a copy in ``lrp_plugin/.mim/configs`` (``setup.py``
copies it at build time); a checkout reads ``configs/`` itself. Read with ``importlib.resources``.
An OpenMMLab user copies them next to the checkout (``lrp configs copy DEST``, like ``mim
download``) or passes their installed path to ``tools/train.py`` (``lrp configs path NAME``).
"""

from __future__ import annotations

import os
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from .adapters.openmmlab import OPENMMLAB_SCOPES
from .core.files import write_bytes

KINDS = ("nni", *OPENMMLAB_SCOPES)
SUFFIXES = {"nni": ".json", **{scope: ".py" for scope in OPENMMLAB_SCOPES}}
INSTALLED = (".mim", "configs")  # inside the installed package, as in OpenMMLab wheels
CHECKOUT = Path(__file__).resolve().parents[1] / "configs"  # the source: configs/ at the repository's top


def config_root() -> Traversable:
    """The folder holding ``nni/``, ``mmdet/`` and ``mmseg/``: the installed copy, else the checkout's."""
    installed = files("lrp_plugin").joinpath(*INSTALLED)
    if installed.is_dir():
        return installed
    if CHECKOUT.is_dir():
        return CHECKOUT
    raise FileNotFoundError(f"lrp_plugin's configs are missing: neither {installed} (a wheel install) nor "
                            f"{CHECKOUT} (a checkout) exists; reinstall lrp_plugin from its wheel")


def list_configs(kind: str | None = None) -> list[str]:
    """Shipped configs as ``'<kind>/<file>'`` (e.g. ``'mmdet/yolov3_d53_cr05_l1_voc.py'``), sorted."""
    kinds = KINDS if kind is None else (_check_kind(kind),)
    return sorted(f"{k}/{entry.name}" for k in kinds for entry in (config_root() / k).iterdir()
                  if entry.is_file() and entry.name.endswith(SUFFIXES[k]))


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise FileNotFoundError(f"no config kind {kind!r}: use one of {list(KINDS)}")
    return kind


def resolve_config(name: str, kind: str | None = None) -> str:
    """``'<kind>/<file>'`` for a full name, a file name, or a stem (``'resnet_cr0.5'``,
    ``'yolov3_d53_cr05_l1_voc'``); FileNotFoundError listing the shipped ones otherwise."""
    shipped = list_configs(kind)
    name = name.replace(os.sep, "/")
    for candidate in shipped:
        file = candidate.split("/", 1)[1]
        if name in (candidate, file, file.rsplit(".", 1)[0], candidate.rsplit(".", 1)[0]):
            return candidate
    raise FileNotFoundError(f"no shipped config {name!r}{f' of kind {kind}' if kind else ''}: "
                            f"one of {[c.split('/', 1)[1].rsplit('.', 1)[0] for c in shipped]} "
                            "(`lrp configs list` prints them)")


def config_path(name: str, kind: str | None = None) -> Path:
    """The file system path of a shipped config, e.g. for ``tools/train.py $(lrp configs path NAME)``.

    mmdet/mmseg configs inherit their neighbours (``_base_ = './..._finetune.py'``), so they are
    used in place; a zipped install has no such path: ``copy_configs`` them instead.
    """
    resource = config_root().joinpath(*resolve_config(name, kind).split("/"))
    if not isinstance(resource, Path):
        raise FileNotFoundError(f"lrp_plugin is installed without plain files ({resource}): "
                                "copy the configs out with `lrp configs copy DEST` and use those")
    return resource


def copy_configs(dest: str | Path, kind: str | None = None, *, overwrite: bool = False) -> list[Path]:
    """Copy the shipped configs into ``dest/<kind>/`` (as ``mim download`` does for OpenMMLab's).

    Refuses to replace a different existing file unless ``overwrite``; each file is written to a
    temporary name and renamed, so an interrupted copy leaves no half file.
    """
    dest = Path(dest)
    names = list_configs(kind)
    clashes = [n for n in names if (dest / n).exists()
               and (dest / n).read_bytes() != config_root().joinpath(*n.split("/")).read_bytes()]
    if clashes and not overwrite:
        raise FileExistsError(f"{len(clashes)} config(s) in {dest} differ from the shipped ones (e.g. {clashes[0]}): "
                              "pass overwrite=True (--overwrite) or choose another folder")
    written = []
    for name in names:
        written.append(write_bytes(dest / name, config_root().joinpath(*name.split("/")).read_bytes()))
    return written
