#!/usr/bin/env bash
# Create (or refresh) the virtual environment .venv at the repository root with PyTorch,
# torchvision, Detectron2 and maskrcnnpp (editable). Quick when .venv is already complete.
# The versions of torch and torchvision are the ones pyproject.toml pins (read from there).
#
#   bash tools/setup_env.sh
#   bash tools/setup_env.sh --peers   # instead: the peers' environment .venv-peers (below)
#
# --peers makes (or refreshes) a second environment, .venv-peers, with the peers of
# tools/compare.py's `peer:` rows: StarDist 2D on TensorFlow's CPU build and Cellpose 3 on
# CPU torch, at the versions pinned in tools/peers/requirements.txt. .venv is not touched, and
# the default set-up and CI never make .venv-peers (docs/peers.md).
#
# Environment:
#   PYTHON=python3.11        interpreter used to create .venv (default: python3.11, else python3);
#                            Python >= 3.11 (pyproject.toml's requires-python)
#   DETECTRON2_SOURCE=SRC    build upstream Detectron2 with its compiled ops from SRC (a local
#                            clone of facebookresearch/detectron2, or any pip-installable URL
#                            of it) instead of the default pure-Python repackaged wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}

if [ "${1:-}" = "--peers" ]; then
  PEERS=.venv-peers
  PEERS_STAMP=$PEERS/.maskrcnnpp-peers-complete
  PEERS_FINGERPRINT=$(cat tools/setup_env.sh tools/peers/requirements.txt | sha256sum | cut -c1-16)
  if [ -f "$PEERS_STAMP" ] && [ "$(cat "$PEERS_STAMP")" = "$PEERS_FINGERPRINT" ]; then
    exit 0
  fi
  rm -f "$PEERS_STAMP"
  [ -x "$PEERS/bin/python" ] || "$PYTHON" -m venv "$PEERS"
  PIP="$PEERS/bin/python -m pip --disable-pip-version-check"
  $PIP install -q --upgrade pip wheel
  echo "[setup] installing the peers into $PEERS (tools/peers/requirements.txt; TensorFlow is large)"
  # the CPU torch first, so that cellpose's plain "torch" requirement takes no other build
  $PIP install -q "$(grep '^torch==' tools/peers/requirements.txt)"
  $PIP install -q -r tools/peers/requirements.txt
  $PIP check
  echo "$PEERS_FINGERPRINT" > "$PEERS_STAMP"
  echo "[setup] done: $("$PEERS/bin/python" -c 'from importlib.metadata import version as v; print(" | ".join(p + " " + v(p) for p in ("stardist", "tensorflow-cpu", "cellpose", "torch")))' 2>/dev/null)"
  exit 0
elif [ -n "${1:-}" ]; then
  echo "setup_env.sh: unknown option $1 (the only one is --peers)" >&2
  exit 2
fi
VENV=.venv
STAMP=$VENV/.maskrcnnpp-setup-complete
# Changing any of these files invalidates the stamp and re-runs the installs.
FINGERPRINT=$(cat tools/setup_env.sh tools/repackage_detectron2.py pyproject.toml | sha256sum | cut -c1-16)
FINGERPRINT="$FINGERPRINT ${DETECTRON2_SOURCE:-}"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$FINGERPRINT" ]; then
  exit 0
fi
rm -f "$STAMP"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
    echo "setup_env.sh: maskrcnnpp needs Python >= 3.11 (pyproject.toml); set PYTHON=python3.11" >&2
    exit 2
  }
  "$PYTHON" -c 'import sys; sys.version_info[:2] == (3, 11) or print("[setup] warning: tested with Python 3.11; the torch wheels are cached for 3.11 only")'
  "$PYTHON" -m venv "$VENV"
fi
PY=$VENV/bin/python
PIP="$PY -m pip --disable-pip-version-check"

$PIP install -q --upgrade pip wheel "setuptools<81"
# torch and torchvision before Detectron2 (its build from DETECTRON2_SOURCE imports torch), at
# the versions of pyproject.toml's dependencies, the one place they are pinned
TORCH_PINS=$($PY -c '
import re, tomllib
with open("pyproject.toml", "rb") as f:
    dependencies = tomllib.load(f)["project"]["dependencies"]
pins = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower(): d for d in dependencies}
print(pins["torch"], pins["torchvision"])
')
echo "[setup] installing $TORCH_PINS (about a minute from the local cache)"
$PIP install -q $TORCH_PINS

if [ -n "${DETECTRON2_SOURCE:-}" ]; then
  echo "[setup] building Detectron2 with compiled ops from $DETECTRON2_SOURCE"
  $PIP install -q fvcore iopath ninja
  $PIP install -q --no-build-isolation "$DETECTRON2_SOURCE"
else
  echo "[setup] installing Detectron2 (pure-Python repackaging of sal-detectron2 0.7.2)"
  WHEEL_DIR=$VENV/wheels
  WHEEL=$($PY tools/repackage_detectron2.py --out "$WHEEL_DIR")
  $PIP install -q "$WHEEL"
fi

echo "[setup] installing maskrcnnpp (editable) with its test, bench and napari extras"
$PIP install -q -e ".[test,bench,napari]"

# The napari plugin's tests draw with OpenGL, which Qt (offscreen) gets from an X display:
# Xvfb where there is none (pytest-xvfb starts it), and the libraries Qt's X platform plugin
# loads (tools/napari_screenshot.py draws napari's canvas in an X window). Debian packages,
# when missing.
if ! command -v Xvfb >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing xvfb with apt-get (a virtual X display for the napari tests)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends xvfb xauth \
      libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-render-util0 libxcb-image0 \
      libxkbcommon-x11-0 >/dev/null
  else
    echo "[setup] warning: no Xvfb: install the xvfb package, or the napari tests fail headless"
  fi
fi
$PIP check
echo "$FINGERPRINT" > "$STAMP"
echo "[setup] done: $($PY -c 'import torch, detectron2, maskrcnnpp; print("torch", torch.__version__, "| detectron2", detectron2.__version__)')"
