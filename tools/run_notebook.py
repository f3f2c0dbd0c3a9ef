"""Execute a chapter in a fresh kernel and save it with its outputs.

    python tools/run_notebook.py notebooks/01_teacher.ipynb
    python tools/run_notebook.py draft.py --out notebooks/01_teacher.ipynb   # jupytext percent script

Authors run this before committing a chapter so the notebook in the repo
carries the outputs of a full run (the rendered book and the readers who
open it on GitHub see them). Progress bars are turned off for the saved
copy; readers running it live get them.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--out", type=Path, help="where to save (default: the source, as .ipynb)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args()
    if args.source.suffix == ".py":
        import jupytext
        nb = jupytext.read(args.source)
    else:
        nb = nbformat.read(args.source, as_version=4)
    out = args.out or args.source.with_suffix(".ipynb")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    os.environ.setdefault("LIGHTKD_PROGRESS", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(out.parent.resolve())}}, store_widget_state=True)
    try:
        client.execute()
    finally:
        nbformat.write(nb, out)
    print(f"executed {args.source} -> {out} in {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
