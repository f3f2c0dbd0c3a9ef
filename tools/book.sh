#!/usr/bin/env bash
# README command 1: set up, execute every chapter and render the HTML book
# into _build/html (open _build/html/index.html).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_env.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} LIGHTKD_PROGRESS=0
rm -rf _build/html _build/.doctrees
jupyter-book build -W -n --keep-going .
echo "the book is in $(pwd)/_build/html/index.html"
