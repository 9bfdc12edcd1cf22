#!/usr/bin/env bash
# Download the wheels tools/gpu_check.py needs on a GPU machine whose python3 has torch (CUDA), timm and
# onnxruntime but nothing else of ours: Torch-Pruning, and MMEngine with what its optimizer wrappers and
# BaseModel import (addict, yapf, termcolor, platformdirs, rich and rich's own imports, packaging), about
# 2.7 MB. Pinned where requirements/constraints.txt pins them; binary wheels for CPython 3.12 on x86-64
# Linux; no dependency resolution (the list is complete for what the checks import).
#
# MMEngine's Runner also needs OpenCV (opencv-python-headless: 54 MB) and matplotlib (~16 MB with its
# dependencies): more than a 64 MiB carry allows, so they are not fetched; where the machine lacks them,
# gpu_check records the Runner part of its mmengine_amp check as skipped (the AmpOptimWrapper part runs).
#
#   tools/gpu_wheels.sh [DEST]          (default DEST: .whl)
# On the GPU machine, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site DEST/*.whl
#   PYTHONPATH=.:/tmp/site python3 tools/gpu_check.py --out OUT/gpu_check.json
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEST="${1:-.whl}"
PY="${PYTHON:-python3}"
pin() {  # "NAME==VERSION" as requirements/constraints.txt pins it, else NAME
    grep -i -E "^$1==" requirements/constraints.txt | head -n1 || echo "$1"
}
PACKAGES=()
for name in torch-pruning mmengine addict termcolor yapf platformdirs rich markdown-it-py mdurl Pygments packaging; do
    PACKAGES+=("$(pin "$name")")
done
mkdir -p "$DEST"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${PACKAGES[@]}"
ls -l "$DEST"
du -sh "$DEST"
