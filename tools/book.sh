#!/usr/bin/env bash
# README command 1: set up, execute every chapter and render the HTML book
# into _build/html (open _build/html/index.html). `bash tools/book.sh --help`
# lists the options.
#
# The chapters run the way the test command and the published book run them:
# one thread each, two at a time (tools/build_chapters.py, which prints when
# each chapter starts and ends and how long the rest should take). Thread
# count changes floating-point sums, so a student trained on two threads
# differs from the published one in its last digits, and that is enough to
# move an int8 accuracy or a close verdict. Run this way, a build reproduces
# every published number except the timings. Each executed chapter is saved
# in place, with its outputs, as the repository stores it; the scoreboard,
# which reads every chapter's results, runs last. Then jupyter-book renders
# the stored outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
Usage: bash tools/book.sh [--render] [CHAPTER ...]

Without options: set up .venv and the offline data (tools/setup_env.sh),
execute every chapter and then the scoreboard (each saved in place with its
outputs), and render the HTML book into _build/html/index.html. A line says
when each chapter starts and ends, with an estimate from the stored run
times. A failing chapter is named at the end, the book is not rendered, and
the exit status is 1.

  CHAPTER ...  execute only these chapters (05 or 05_tinybert; the scoreboard
               only if named), then render
  --render     render the pages as stored, executing nothing (no set-up
               either, where .venv exists): about a minute
  -h, --help   this text

Environment:
  LIGHTKD_BOOK_JOBS  chapters executed at once (default 2, one thread each)
  LIGHTKD_CACHE      data and trained models (default ~/.cache/lightkd)

The book is executed at the book scale (LIGHTKD_SCALE unset or book), the
scale of the stored pages. To run the chapters at the tiny scale without
touching them: LIGHTKD_SCALE=tiny python tools/build_chapters.py (executed
copies go to _build/tiny/notebooks), or bash tools/test.sh.
EOF
}

render_only=0
chapters=()
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --render) render_only=1 ;;
    -*) echo "book.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *) chapters+=("$arg") ;;
  esac
done
if [ "$render_only" = 1 ] && [ ${#chapters[@]} -gt 0 ]; then
  echo "book.sh: --render executes nothing; leave out the chapter names" >&2
  exit 2
fi

scale=$(echo "${LIGHTKD_SCALE:-book}" | tr '[:upper:]' '[:lower:]')
if [ "$render_only" = 0 ] && [ "$scale" != book ]; then
  echo "book.sh: LIGHTKD_SCALE=$LIGHTKD_SCALE: the book command executes the stored pages at the book scale" \
    "and saves them in place. For a $scale run: LIGHTKD_SCALE=$scale python tools/build_chapters.py" \
    "(copies in _build/$scale/notebooks), or bash tools/test.sh." >&2
  exit 2
fi

if [ "$render_only" = 1 ] && [ -x .venv/bin/jupyter-book ]; then
  # shellcheck disable=SC1091
  source .venv/bin/activate
  bash tools/vendor_js.sh
else
  source tools/setup_env.sh
fi

export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} LIGHTKD_PROGRESS=0 OMP_NUM_THREADS=1
if [ "$render_only" = 0 ]; then
  # The chapters, then the scoreboard alone (it reads every chapter's results), each through tools/run_notebook.py.
  python tools/build_chapters.py --jobs "${LIGHTKD_BOOK_JOBS:-2}" --timeout 2400 ${chapters[@]+"${chapters[@]}"}
fi

echo "Rendering the book (jupyter-book, the stored outputs)..."
start=$SECONDS
config="$(mktemp -d)/_config.yml"
trap 'rm -rf "$(dirname "$config")"' EXIT
python - "$config" <<'EOF'
import sys
import yaml
config = yaml.safe_load(open("_config.yml"))
config["execute"]["execute_notebooks"] = "off"  # executed above, or stored
open(sys.argv[1], "w").write(yaml.safe_dump(config, sort_keys=False))
EOF
rm -rf _build/html _build/.doctrees
# --quiet: no Sphinx status lines; warnings still print, and -W makes them errors.
jupyter-book build -W -n --keep-going --quiet --config "$config" --path-output . .
echo "Rendered in $((SECONDS - start)) s: the book is in $(pwd)/_build/html/index.html"
