"""Ships the top-level ``configs/`` inside the wheel as ``lrp_plugin/.mim/configs`` (as OpenMMLab
wheels carry ``mmdet/.mim/configs``); everything else is declared in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIG_FILES = ("*.py", "*.json")


class BuildPyWithConfigs(build_py):
    """build_py, then copy configs/{nni,mmdet,mmseg} into the built package."""

    def run(self):
        super().run()
        source = Path(__file__).resolve().parent / "configs"
        if not source.is_dir():  # an sdist always has it (MANIFEST.in); refuse to build a wheel without configs
            raise FileNotFoundError(f"{source} is missing: build from a full checkout or sdist")
        target = Path(self.build_lib) / "lrp_plugin" / ".mim" / "configs"
        shutil.rmtree(target, ignore_errors=True)
        for kind in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
            for file in sorted(f for pattern in CONFIG_FILES for f in kind.glob(pattern)):
                (target / kind.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target / kind.name / file.name)


setup(cmdclass={"build_py": BuildPyWithConfigs})
