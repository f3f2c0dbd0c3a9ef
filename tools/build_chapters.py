"""Execute the book's chapters a few at a time and say how far along the build is.

    python tools/build_chapters.py                     # every chapter, then the scoreboard (what tools/book.sh runs)
    python tools/build_chapters.py 02 05_tinybert      # some chapters, by number or name
    python tools/build_chapters.py --out-dir _build/scratch 01 02   # save the executed copies there instead
    LIGHTKD_SCALE=tiny python tools/build_chapters.py 01 02        # tiny scale: copies go to _build/tiny/notebooks

Each chapter runs through tools/run_notebook.py in a process of its own on one
thread (OMP_NUM_THREADS=1, the thread count the published results were made
with: another count changes the last digits of every sum) and is saved in
place with its outputs, as the repository stores it (at a scale other than
book, into _build/SCALE/notebooks: the stored pages are book scale).
LIGHTKD_BOOK_JOBS chapters (default 2) run at once, in reading order; the
scoreboard, which reads every chapter's results, runs last and alone, once
every chapter has passed. A line says when each chapter starts and ends, with an estimate from
the run time stored in its results file (results/NN_name.json, runtime_s: the
run that produced the stored page), scaled by how fast this machine has been
so far. A chapter's own output (a failing cell's traceback) is printed with
its name in front. A failed chapter is named at the end and the exit status
is 1, after the other chapters have finished.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCOREBOARD = "scoreboard"
# What every chapter process gets, whatever the caller's environment says.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def all_chapters() -> list[Path]:
    """The chapters in reading order, then the scoreboard."""
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + [ROOT / "notebooks" / f"{SCOREBOARD}.ipynb"]


def select(names: list[str]) -> list[Path]:
    """The chapters named (``05``, ``05_tinybert``, ``notebooks/05_tinybert.ipynb``, ``scoreboard``) in reading
    order, the scoreboard last; other notebooks named by path run after the chapters, in the order given."""
    chapters = all_chapters()
    if not names:
        return chapters
    chosen, others = set(), []
    for name in names:
        if name.endswith(".ipynb") and Path(name).is_file() and Path(name).resolve() not in chapters:
            others.append(Path(name).resolve())  # a notebook outside the book (a draft, a test)
            continue
        stem = Path(name).stem
        found = [nb for nb in chapters if nb.stem == stem or nb.stem.split("_")[0] == stem]
        if len(found) != 1:
            raise SystemExit(f"build_chapters: no chapter {name!r}; the chapters are "
                             + ", ".join(nb.stem for nb in chapters))
        chosen.add(found[0])
    ordered = [nb for nb in chapters if nb in chosen]
    return ordered[:-1] + others + ordered[-1:] if ordered and ordered[-1].stem == SCOREBOARD else ordered + others


def stored_runtime(nb: Path) -> float | None:
    """Seconds the run that produced the stored page took (its results file's runtime_s), if recorded."""
    try:
        return float(json.loads((ROOT / "results" / f"{nb.stem}.json").read_text())["runtime_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


class Build:
    """The chapters' progress, shared by the worker threads; prints one line at a time."""

    def __init__(self, chapters: list[Path], jobs: int, timeout: int, out_dir: Path | None):
        self.chapters, self.jobs, self.timeout, self.out_dir = chapters, jobs, timeout, out_dir
        self.stored = {nb: stored_runtime(nb) for nb in chapters}
        self.started: dict[Path, float] = {}
        self.took: dict[Path, float] = {}
        self.failed: list[Path] = []
        self.running: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.width = len(str(len(chapters)))

    def say(self, nb: Path, text: str):
        number = self.chapters.index(nb) + 1
        with self.lock:
            print(f"[{number:>{self.width}}/{len(self.chapters)}] {nb.stem}: {text}", flush=True)

    def speed(self) -> float:
        """How long chapters have taken here relative to their stored runs (1 until one has finished)."""
        pairs = [(self.took[nb], self.stored[nb]) for nb in self.took if self.stored[nb] and nb not in self.failed]
        return sum(t for t, _ in pairs) / sum(s for _, s in pairs) if pairs else 1.0

    def seconds_left(self) -> float:
        """The time left if every chapter takes its stored time (scaled by ``speed``), the unfinished ones
        dealt to ``jobs`` workers in order. Chapters without a stored time count as nothing."""
        factor, now = self.speed(), time.monotonic()
        workers = [max(0.0, (self.stored[nb] or 0) * factor - (now - t0))
                   for nb, t0 in self.started.items() if nb not in self.took]
        workers += [0.0] * max(0, self.jobs - len(workers))
        for nb in self.chapters:
            if nb not in self.started:
                i = workers.index(min(workers))
                workers[i] += (self.stored[nb] or 0) * factor
        return max(workers)

    stopping = False  # set on an interrupt: start nothing more

    def run(self, nb: Path) -> bool:
        if self.stopping:
            return False
        stored = self.stored[nb]
        with self.lock:
            self.started[nb] = time.monotonic()
        self.say(nb, "started" + (f" (stored run took {minutes(stored)})" if stored else " (no stored run time)"))
        command = [sys.executable, str(ROOT / "tools" / "run_notebook.py"), str(nb), "--timeout", str(self.timeout),
                   "--quiet"]
        if self.out_dir is not None:
            command += ["--out", str(self.out_dir / nb.name)]
        with subprocess.Popen(command, cwd=ROOT, env={**os.environ, **CHILD_ENV}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace") as process:
            with self.lock:
                self.running.add(process)
            for line in process.stdout:
                with self.lock:
                    print(f"    {nb.stem} | {line.rstrip()}", flush=True)
            status = process.wait()
        end = time.monotonic()
        with self.lock:
            self.running.discard(process)
            self.took[nb] = end - self.started[nb]
            if status:
                self.failed.append(nb)
        took, total = minutes(end - self.started[nb]), minutes(end - self.start)
        if status:
            why = f"stopped by signal {-status}" if status < 0 else f"exit status {status}; its output is above"
            self.say(nb, f"FAILED after {took} ({why})")
            return False
        left = self.seconds_left()
        remaining = len(self.chapters) - len(self.took)
        if not remaining:
            estimate = ""
        elif left >= 90:
            estimate = f"; about {left / 60:.0f} min left"
        elif left > 0:
            estimate = "; about a minute left"
        else:
            estimate = f"; {remaining} to go"
        self.say(nb, f"done in {took} (total {total}{estimate})")
        return True

    def stop(self):
        with self.lock:
            for process in self.running:
                process.terminate()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapters", nargs="*", help="chapters to run (default: all, then the scoreboard)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("LIGHTKD_BOOK_JOBS", "2")),
                        help="chapters at once (default: $LIGHTKD_BOOK_JOBS or 2)")
    parser.add_argument("--timeout", type=int, default=2400, help="seconds per cell (default 2400)")
    parser.add_argument("--out-dir", type=Path, help="save the executed chapters here instead of in place")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    chapters = select(args.chapters)
    scale = os.environ.get("LIGHTKD_SCALE", "").strip().lower() or "book"
    if scale != "book" and args.out_dir is None:
        # The stored pages are book scale: a tiny run saved in place would replace them.
        args.out_dir = ROOT / "_build" / scale / "notebooks"
        print(f"At scale {scale} the executed copies go to {args.out_dir.relative_to(ROOT)}, "
              "not over the stored pages.", flush=True)
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    build = Build(chapters, args.jobs, args.timeout, args.out_dir)
    stored = sum(s for s in build.stored.values() if s)
    print(f"Executing {len(chapters)} notebooks, {args.jobs} at a time, one thread each, at scale {scale}; "
          f"their stored runs took {minutes(stored)} in all.", flush=True)
    pages = [nb for nb in chapters if nb.stem != SCOREBOARD]
    pool = ThreadPoolExecutor(args.jobs)
    try:
        list(pool.map(build.run, pages))
        if len(pages) < len(chapters):
            if build.failed:
                print("The scoreboard did not run: it reads every chapter's results.", flush=True)
            else:
                build.run(chapters[-1])
    except KeyboardInterrupt:  # stop the running chapters at once instead of waiting for them
        build.stopping = True
        build.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        pool.shutdown(wait=True)
    total = minutes(time.monotonic() - build.start)
    if build.failed:
        print(f"FAILED: {', '.join(nb.stem for nb in build.failed)} ({len(build.failed)} of {len(chapters)}; "
              f"total {total}). Each failed chapter is saved with its outputs up to the failing cell.", flush=True)
        return 1
    print(f"All {len(chapters)} notebooks ran in {total}.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
