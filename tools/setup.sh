#!/usr/bin/env bash
# One idempotent set-up for lrp_plugin (called by `make setup`, `make test`, `make demo`).
#
#   1. creates .venv with Python 3.11 if it is missing;
#   2. installs torch/torchvision, then this project (editable) with its light extras;
#   3. makes sure an mmcv 2.1.0 wheel with compiled CPU ops is in the wheel cache
#      (${LRP_WHEEL_CACHE:-~/.cache/lrp_plugin/wheels}/torch-<version>/), building it
#      once from the PyPI source if needed (~7 min on 2 cores);
#   4. installs the mmdet/mmseg extras from that wheel (pip never builds mmcv itself);
#   5. checks the imports and writes a stamp, so the next run is a no-op in seconds.
#
# A failed run writes no stamp, so re-running the same command picks up where it failed.
# Environment knobs:
#   PYTHON            interpreter used to create .venv (default: python3; must be 3.11)
#   LRP_WHEEL_CACHE   where built wheels are kept (default: ~/.cache/lrp_plugin/wheels)
#   LRP_SETUP_EXTRAS  comma-separated extras to install
#                     (default: timm,nni,mmdet,mmseg,latency,demo,dev)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
EXTRAS="${LRP_SETUP_EXTRAS:-timm,nni,mmdet,mmseg,latency,demo,dev}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
WHEEL_CACHE="${LRP_WHEEL_CACHE:-$HOME/.cache/lrp_plugin/wheels}"
MMCV_CACHE="$WHEEL_CACHE/torch-$TORCH_VERSION"
STAMP="$VENV/.lrp-setup-stamp"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
pip_install() { "$PY" -m pip install --disable-pip-version-check -c "$CONSTRAINTS" "$@"; }
has_extra() { [[ ",$EXTRAS," == *",$1,"* ]]; }

# Everything that decides what ends up in .venv goes into the stamp.
stamp_value() {
    {
        cat pyproject.toml "$CONSTRAINTS" tools/setup.sh
        printf 'extras=%s\n' "$EXTRAS"
        "$PY" -c 'import sys; print(sys.version)' 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1
}

[[ -f "$CONSTRAINTS" ]] || die "missing $CONSTRAINTS"

# System packages (OpenSSH's server for the remote latency tests); a no-op when present.
bash "$ROOT/tools/install_system_deps.sh"

# --- 0. nothing to do? ----------------------------------------------------------------------
if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_value)" ]]; then
    log "environment in .venv is up to date (delete $STAMP to force a re-run)"
    exit 0
fi
SECONDS=0

# --- 1. virtual environment ------------------------------------------------------------------
py_is_311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; }
if [[ -x "$PY" ]] && ! py_is_311 "$PY"; then
    die ".venv exists but is not a working Python 3.11 venv; delete it (rm -rf .venv) and re-run"
fi
if [[ ! -x "$PY" ]]; then
    command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found; install Python 3.11 or set PYTHON=/path/to/python3.11"
    py_is_311 "$PYTHON" || die "'$PYTHON' is $("$PYTHON" -V 2>&1), this project needs Python 3.11 (set PYTHON=...)"
    log "creating .venv with $("$PYTHON" -V 2>&1)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
rm -f "$STAMP"   # from here on, a failure must leave no stamp behind

# --- 2. torch first, then the project with the extras that need no compiling ------------------
log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION (large download the first time)"
pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
log "installing build tools (setuptools, wheel, ninja)"
pip_install setuptools wheel ninja

light=()
IFS=',' read -r -a requested <<<"$EXTRAS"
for extra in "${requested[@]}"; do
    [[ -z "$extra" || "$extra" == mmdet || "$extra" == mmseg ]] || light+=("$extra")
done
spec="."
if ((${#light[@]})); then spec=".[$(IFS=,; echo "${light[*]}")]"; fi
log "installing lrp_plugin (editable) $spec"
pip_install -e "$spec"

# --- 3. the mmcv wheel (compiled CPU ops), built once per machine ------------------------------
mmcv_wheel() {
    compgen -G "$MMCV_CACHE/mmcv-$MMCV_VERSION-cp311-cp311-*.whl" | head -n 1 || true
}

# Prints a short progress line per ninja step instead of the compiler command lines.
progress_filter() {
    awk -v tty="$([[ -t 1 ]] && echo 1 || echo 0)" '
        /^ *\[[0-9]+\/[0-9]+\] / {
            step = $1; src = ""
            for (i = 2; i <= NF; i++) if ($i ~ /\.(c|cc|cpp|cxx|cu)$/) src = $i
            n = split(src, parts, "/"); name = (n ? parts[n] : "")
            if (tty) printf "\r[setup]   mmcv ops %s %-50s", step, name
            else printf "[setup]   mmcv ops %s %s\n", step, name
            fflush(); next
        }
        /Running command python setup.py egg_info/ { print "[setup]   reading mmcv metadata"; fflush() }
        /Running command python setup.py bdist_wheel/ { print "[setup]   compiling mmcv ops (the long part)"; fflush() }
        /Created wheel for mmcv/ { if (tty) printf "\n"; print "[setup]   wheel created"; fflush() }
    '
}

build_mmcv_wheel() {
    local log_file="$WHEEL_CACHE/mmcv-$MMCV_VERSION-build.log"
    local tmp step
    command -v c++ >/dev/null || command -v g++ >/dev/null \
        || die "building mmcv needs a C++ compiler (e.g. apt-get install g++); install one and re-run"
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/lrp-mmcv.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    : >"$log_file"
    fail() {
        {
            printf '\n[setup] ---- first error lines of %s ----\n' "$log_file"
            grep -m 15 -E 'FAILED:|error:|Error:|fatal' "$log_file" | cut -c1-300 || true
            printf '[setup] ---- last lines of %s ----\n' "$log_file"
            tail -n 30 "$log_file" | cut -c1-300 || true
        } >&2
        die "mmcv $MMCV_VERSION build failed while: $step.
[setup]   Full log: $log_file
[setup]   Nothing was put in the wheel cache and no stamp was written;
[setup]   re-running the same command (make setup / make test) retries the build."
    }

    step="downloading the mmcv $MMCV_VERSION source (sdist)"
    log "$step"
    "$PY" -m pip download --disable-pip-version-check --no-deps --no-build-isolation \
        --no-binary mmcv "mmcv==$MMCV_VERSION" -d "$tmp/sdist" >>"$log_file" 2>&1 || fail

    step="unpacking and patching setup.py (-std=c++17 -> -std=c++20)"
    log "$step"
    mkdir -p "$tmp/src" "$tmp/wheels"
    tar -xzf "$tmp/sdist/mmcv-$MMCV_VERSION.tar.gz" -C "$tmp/src" >>"$log_file" 2>&1 || fail
    sed -i 's/-std=c++1[47]/-std=c++20/g' "$tmp/src/mmcv-$MMCV_VERSION/setup.py" || fail
    grep -q -- '-std=c++20' "$tmp/src/mmcv-$MMCV_VERSION/setup.py" || fail

    step="compiling mmcv $MMCV_VERSION with CPU ops"
    log "$step on $(nproc) cores; this takes ~7 min on 2 cores, once per machine (log: $log_file)"
    (cd "$tmp/src" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$(nproc)" \
        "$PY" -m pip wheel -v --disable-pip-version-check --no-build-isolation --no-deps \
        -w "$tmp/wheels" "./mmcv-$MMCV_VERSION") 2>&1 | tee -a "$log_file" | progress_filter \
        || fail

    step="storing the wheel in $MMCV_CACHE"
    local built
    built="$(compgen -G "$tmp/wheels/mmcv-$MMCV_VERSION-*.whl" | head -n 1 || true)"
    [[ -n "$built" ]] || fail
    # copy next to the target, then rename: the cache never holds a half-written wheel
    cp "$built" "$MMCV_CACHE/.$(basename "$built").partial" || fail
    mv -f "$MMCV_CACHE/.$(basename "$built").partial" "$MMCV_CACHE/$(basename "$built")" || fail
    rm -rf "$tmp"
    trap - EXIT
    log "cached $MMCV_CACHE/$(basename "$built")"
}

if has_extra mmdet || has_extra mmseg; then
    mkdir -p "$MMCV_CACHE"
    if command -v flock >/dev/null; then   # two set-ups at once share one build
        exec 9>"$WHEEL_CACHE/.lock"
        flock 9
    fi
    if [[ -z "$(mmcv_wheel)" ]]; then
        log "no mmcv $MMCV_VERSION wheel in $MMCV_CACHE: building it from source"
        build_mmcv_wheel
    else
        log "using cached $(mmcv_wheel)"
    fi
    mm=()
    has_extra mmdet && mm+=(mmdet)
    has_extra mmseg && mm+=(mmseg)
    log "installing the OpenMMLab extras: ${mm[*]}"
    pip_install --find-links "$MMCV_CACHE" --only-binary mmcv -e ".[$EXTRAS]"
fi

# --- 4. prove the install is real, then stamp -------------------------------------------------
log "checking imports"
checks=("import torch, torchvision, torch_pruning"
        "assert torch.__version__.split('+')[0] == '$TORCH_VERSION', torch.__version__")
has_extra timm && checks+=("import timm")
has_extra nni && checks+=("import nni.compression.pruning")
has_extra latency && checks+=("import onnx, onnxruntime")
if has_extra mmdet || has_extra mmseg; then
    checks+=("import mmcv, mmcv.ops" "assert mmcv.__version__ == '$MMCV_VERSION', mmcv.__version__")
fi
has_extra mmdet && checks+=("import mmdet.models")
has_extra mmseg && checks+=("import mmseg.models")
# lrp_plugin must resolve to this checkout (editable install), without importing its code here
checks+=("import importlib.util, pathlib"
         "spec = importlib.util.find_spec('lrp_plugin')"
         "assert spec and pathlib.Path(spec.origin).resolve().is_relative_to(pathlib.Path('$ROOT').resolve()), spec")
printf '%s\n' "${checks[@]}" | (cd /tmp && "$PY" -W ignore -) \
    || die "import check failed (see above); re-run the same command after fixing the cause"

stamp_value >"$STAMP"
log "done in ${SECONDS}s: .venv is ready (extras: $EXTRAS)"
