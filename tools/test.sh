#!/usr/bin/env bash
# README command 2: set up, then run the unit tests, every chapter notebook
# at the tiny scale (nbval, lax: each cell must run, the chapters' asserts
# that hold at every scale are the tests; the verdict asserts hold at the
# book scale, where the stored pages were executed) and the book build on the
# stored outputs, two workers, one thread each. The 30 slowest tests and each
# file's time close the report, so a slow run says where its time went.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_env.sh
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 LIGHTKD_PROGRESS=0 LIGHTKD_SCALE=${LIGHTKD_SCALE:-tiny}
python -m pytest --nbval-lax -n 2 --dist loadfile -p no:randomly --durations=30 "$@"
