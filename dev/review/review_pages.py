"""Page images of the rendered book, for a review by eye (not part of the book or its tests).

Needs Debian's chromium and poppler-utils (`apt-get install chromium poppler-utils`). Render the
book from the stored outputs first (executing nothing), then name the pages:

    bash tools/book.sh --render
    python dev/review/review_pages.py _build/html 04_distillation scoreboard intro

Each page is printed to PDF by headless Chromium (about 20 s a chapter; a full-page screenshot of a
60,000-pixel page takes minutes) and cut into PNG pages OUT/NAME_00.png, NAME_01.png, ... The print
layout drops the sidebars; widgets draw their saved state within the virtual-time budget.
"""
import glob
import os
import subprocess
import sys

PAGES = {"intro": "book/intro", "how_to_use": "book/how_to_use", "references": "book/references"}


def review(html_root: str, name: str, out: str = "/tmp/shots", dpi: int = 90) -> list[str]:
    os.makedirs(out, exist_ok=True)
    pdf = os.path.join(out, f"{name}.pdf")
    for old in glob.glob(os.path.join(out, f"{name}_*.png")):
        os.remove(old)
    page = PAGES.get(name, f"notebooks/{name}")
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir=/tmp/chromium-review-{name}", "--no-pdf-header-footer",
                    "--virtual-time-budget=20000", f"--print-to-pdf={pdf}",
                    f"file://{os.path.abspath(html_root)}/{page}.html"], capture_output=True, timeout=300)
    subprocess.run(["pdftoppm", "-r", str(dpi), "-png", pdf, os.path.join(out, f"{name}_p")], check=True)
    pages = sorted(glob.glob(os.path.join(out, f"{name}_p-*.png")))
    for k, path in enumerate(pages):
        os.rename(path, os.path.join(out, f"{name}_{k:02d}.png"))
    return [os.path.join(out, f"{name}_{k:02d}.png") for k in range(len(pages))]


if __name__ == "__main__":
    root, names = sys.argv[1], sys.argv[2:]
    for name in names:
        shots = review(root, name)
        print(f"{name}: {len(shots)} pages, {shots[0] if shots else ''} ..")
