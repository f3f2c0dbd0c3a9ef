"""Execute a chapter in a fresh kernel and save it with its outputs.

    python tools/run_notebook.py notebooks/01_teacher.ipynb
    python tools/run_notebook.py draft.py --out notebooks/01_teacher.ipynb   # jupytext percent script

Authors run this before committing a chapter so the notebook in the repo
carries the outputs of a full run (the rendered book and the readers who
open it on GitHub see them); the book command (tools/book.sh) runs every
chapter through it, so a build and the published book are made alike.
Progress bars are turned off for the saved copy; readers running it live
get them.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


class PatientClient(NotebookClient):
    """A NotebookClient that waits for a cell's reply in one-second polls.

    With a widget in a cell, nbclient can miss the wake-up for the kernel's
    reply on the shell channel and wait out the whole cell timeout while the
    kernel sits idle (nbclient issue 312); it happened here once, at chapter
    3's widget, with both cores busy. A fresh poll sees a waiting message at
    once, so polling in short steps turns that hang into a one-second delay.
    The total wait, and nbclient's timeout handling, are unchanged."""

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        channel = kc.shell_channel
        get_msg = channel.get_msg

        async def get_msg_in_steps(timeout=None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                step = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
                try:
                    return await get_msg(timeout=step)
                except Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise

        channel.get_msg = get_msg_in_steps
        return kc

    sockets = None  # a private folder for the kernel's sockets; None: TCP

    def create_kernel_manager(self):
        """Talk to the kernel over local (IPC) sockets in the folder ``self.sockets``.

        Over TCP, the default, ipykernel warns at every start that the connection is unencrypted
        ("Kernel is running over TCP without encryption"); IPC sockets are files that only this user
        can open, so there is nothing to warn about. They get an absolute path in a private folder:
        jupyter_client's default is relative, and the kernel (which runs in the chapter's folder) and
        this process would look for it in different places. Windows has no IPC sockets: TCP there."""
        km = super().create_kernel_manager()
        if self.sockets is not None and os.name != "nt":
            km.transport = "ipc"
            km.ip = os.path.join(self.sockets, "kernel")
        return km


def merge_streams(nb):
    """Join a cell's consecutive prints into one output: a loop that prints a line per trained model
    otherwise leaves one output per line (the kernel flushes between them), and the book draws each
    in its own box."""
    for cell in nb.cells:
        merged = []
        for output in cell.get("outputs", []):
            if (merged and output.get("output_type") == "stream" and merged[-1].get("output_type") == "stream"
                    and merged[-1].get("name") == output.get("name")):
                merged[-1]["text"] += output["text"]
            else:
                merged.append(output)
        if "outputs" in cell:
            cell["outputs"] = merged


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--out", type=Path, help="where to save (default: the source, as .ipynb)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--quiet", action="store_true", help="print nothing when the run succeeds")
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
    with tempfile.TemporaryDirectory(prefix="lightkd-kernel-") as sockets:
        client = PatientClient(nb, timeout=args.timeout, kernel_name="python3",
                               resources={"metadata": {"path": str(out.parent.resolve())}}, store_widget_state=True)
        client.sockets = sockets
        try:
            client.execute()
        except CellExecutionError as error:  # the failing cell and its traceback; nbclient's own frames say nothing
            print(f"{args.source}: a cell failed; saved with the outputs so far to {out}\n{error}", file=sys.stderr)
            return 1
        finally:
            merge_streams(nb)
            nbformat.write(nb, out)
    if not args.quiet:
        print(f"executed {args.source} -> {out} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
