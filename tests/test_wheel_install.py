"""The built wheel, installed into a fresh venv and used from outside the repository.

The wheel is built from a copy of the sources (no build/ or egg-info left in the checkout)
and installed into a new venv that sees this environment's site-packages only through a
``.pth`` line (torch, nni, mmengine ... are reused, not downloaded); lrp_plugin itself must
come from the wheel. Checked: the configs are package data, an NNI list loads by name, a
shipped YOLOv3 config loads with ``mmengine.Config.fromfile``, ``lrp --help`` runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from _extras import require

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import json, sys
import lrp_plugin
from lrp_plugin.configs import config_path, config_root, list_configs
from lrp_plugin.integrations.nni import load_config_list
from mmengine.config import Config

assert lrp_plugin.__file__.startswith(sys.prefix), lrp_plugin.__file__  # the wheel, not the checkout
config_list = load_config_list("resnet_cr0.5")
cfg = Config.fromfile(str(config_path("yolov3_d53_cr05_l1_voc")))
print(json.dumps(dict(file=lrp_plugin.__file__, root=str(config_root()), configs=list_configs(),
                      config_list=config_list, hook=cfg.custom_hooks[0], num_classes=cfg.model.bbox_head.num_classes,
                      imports=cfg.custom_imports.imports)))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the freshly built wheel installed; returns its bin/ folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ("lrp_plugin", "configs"):  # configs/ at the top is what the wheel ships
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(dist), str(src)], check=True, cwd=tmp)
    (wheel,) = dist.glob("lrp_plugin-*.whl")

    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # this environment's site dirs (and those its own .pth files add), never a source checkout
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
                          *(p for p in sys.path if p.endswith("site-packages"))])
    (site / "reuse_test_env.pth").write_text("\n".join(ours) + "\n")  # appended after the venv's own
    # --ignore-installed: never uninstall the editable lrp_plugin this environment has
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    "--ignore-installed", str(wheel)], check=True, cwd=tmp)
    return env_dir / "bin"


def _outside_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_wheel_ships_configs_and_works_outside_the_repo(installed, tmp_path):
    require("nni")
    require("mmengine")
    require("mmdet")
    import json

    out = subprocess.run([str(installed / "python"), "-c", CHECK], capture_output=True, text=True, cwd=tmp_path,
                         env=_outside_env())
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert str(installed.parent) in got["file"] and str(REPO) not in got["file"]
    shipped = {p.relative_to(REPO / "configs").as_posix()
               for p in (REPO / "configs").glob("*/*") if p.suffix in (".py", ".json")}
    assert set(got["configs"]) == shipped and {c.split("/")[0] for c in shipped} == {"nni", "mmdet", "mmseg"}
    assert got["root"].endswith("lrp_plugin/.mim/configs")  # the wheel's copy, as in OpenMMLab wheels
    shipped_list = json.loads((REPO / "configs/nni/resnet_cr0.5.json").read_text())["config_list"]
    assert got["config_list"] == shipped_list
    assert got["hook"] == dict(type="LosslessPruningHook", criterion="l1", ratio=0.5, input_size=416)
    assert got["num_classes"] == 20 and got["imports"] == ["lrp_plugin.integrations.mmengine"]


def test_lrp_command_from_the_wheel(installed, tmp_path):
    env = _outside_env()
    help_text = subprocess.run([str(installed / "lrp"), "--help"], capture_output=True, text=True, cwd=tmp_path,
                               env=env, check=True).stdout
    assert "configs" in help_text and "demo" in help_text
    copied = subprocess.run([str(installed / "lrp"), "configs", "copy", "here", "--kind", "mmdet"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    assert f"copied {len(list((REPO / 'configs' / 'mmdet').glob('*.py')))} configs" in copied.stdout
    assert (tmp_path / "here" / "mmdet" / "yolov3_d53_cr05_l1_voc.py").read_text() == (
        REPO / "configs/mmdet/yolov3_d53_cr05_l1_voc.py").read_text()
