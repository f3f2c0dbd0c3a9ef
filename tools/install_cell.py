"""Write the Colab install cell, the first code cell of every chapter notebook.

The cell is generated from two files, so the repository URL and the
transformers pin live in one place each:

- ``_config.yml``'s ``repository: url:`` (also the book's repository and
  launch buttons): lightkd is installed from there with its lean ``colab``
  extra (no book toolchain, no test tools);
- ``constraints.txt``'s ``transformers==`` pin, the version the book was
  built and tested with.

Usage:
    python tools/install_cell.py           # rewrite the cells that differ
    python tools/install_cell.py --check   # exit 1 if any notebook's cell differs

Only the cell's ``source`` changes; its outputs, execution count and metadata
and the rest of the notebook are kept byte for byte (the notebooks are written
as Jupyter writes them: one-space indent, UTF-8, trailing newline).
A notebook whose first code cell is not an install cell (the scoreboard, which
reads the results of the local runs) is left alone.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
MARKER = "# Colab only: install lightkd"  # how an install cell starts (old and new wording)

TEMPLATE = '''\
# Colab only: install lightkd and its offline data. Elsewhere this cell does nothing.
# lightkd's "colab" extra, and the transformers the book was tested with. Not torch:
# Colab already ships it (with CUDA), and lightkd accepts any torch 2.x.
# Written by tools/install_cell.py from _config.yml and constraints.txt.
import sys, subprocess
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "lightkd[colab] @ git+{url}",
                    "transformers=={transformers}"], check=True)'''


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    """``repository: url:`` of the Jupyter Book configuration."""
    import yaml
    url = (yaml.safe_load(config.read_text(encoding="utf-8")).get("repository") or {}).get("url")
    if not url:
        raise SystemExit(f"{config} has no repository: url:")
    return url.rstrip("/")


def pinned(package: str, constraints: Path = ROOT / "constraints.txt") -> str:
    """The version ``constraints.txt`` pins ``package`` to."""
    for line in constraints.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(rf"\s*{re.escape(package)}\s*==\s*([^\s#;]+)\s*(#.*)?", line, flags=re.IGNORECASE)
        if m:
            return m.group(1)
    raise SystemExit(f"{constraints} does not pin {package}")


def cell_source() -> str:
    """The install cell's code, as a string."""
    return TEMPLATE.format(url=repository_url(), transformers=pinned("transformers"))


def as_lines(text: str) -> list[str]:
    """A cell source as Jupyter stores it: lines with their newlines, the last without."""
    return text.splitlines(keepends=True)


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def install_cell(nb: dict) -> dict | None:
    """The notebook's first code cell, if it is an install cell."""
    first = next((c for c in nb["cells"] if c["cell_type"] == "code"), None)
    if first is None or not "".join(first["source"]).startswith(MARKER):
        return None
    return first


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report the notebooks that differ; change nothing")
    args = parser.parse_args(argv)
    want = as_lines(cell_source())
    stale = []
    for path in notebooks():
        nb = json.loads(path.read_text(encoding="utf-8"))
        cell = install_cell(nb)
        if cell is None:
            if path.stem[:2].isdigit():  # every chapter must have one
                stale.append(path)
                print(f"{path.relative_to(ROOT)}: the first code cell is not an install cell", file=sys.stderr)
            continue
        if cell["source"] == want:
            continue
        stale.append(path)
        if args.check:
            print(f"{path.relative_to(ROOT)}: install cell differs from tools/install_cell.py", file=sys.stderr)
        else:
            cell["source"] = want
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"rewrote {path.relative_to(ROOT)}")
    if args.check and stale:
        print("run: python tools/install_cell.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
