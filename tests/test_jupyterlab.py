"""Opening the chapters locally: JupyterLab from the virtual environment
(the ``book`` extra installs it) starts headless, lists every chapter
notebook and serves its page."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def test_jupyterlab_serves_the_chapters(tmp_path):
    jupyter = Path(sys.executable).parent / "jupyter"
    if not jupyter.exists():
        jupyter = shutil.which("jupyter")
    assert jupyter, "jupyter is missing: the README's commands install the book extra, which brings jupyterlab"
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),  # nobody's own settings
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws")}
    log = open(tmp_path / "jupyter.log", "wb")
    server = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={ROOT}", "--ServerApp.open_browser=False",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",  # offline: ask no one
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # containers run as root
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "jupyter.log").read_text(errors="replace")[-3000:]
            try:
                status, body = get(f"{base}/api/contents/notebooks?token={token}", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout):
                if time.monotonic() > deadline:
                    pytest.fail("jupyter lab did not answer in 60 s:\n" +
                                (tmp_path / "jupyter.log").read_text(errors="replace")[-3000:])
                time.sleep(0.5)
        assert status == 200
        listed = {item["name"] for item in json.loads(body)["content"] if item["type"] == "notebook"}
        chapters = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
        assert chapters and chapters <= listed, f"not listed: {sorted(chapters - listed)}"
        status, page = get(f"{base}/lab?token={token}")
        assert status == 200 and b"JupyterLab" in page
        with pytest.raises(urllib.error.HTTPError) as denied:  # the token is what lets a reader in
            get(f"{base}/api/contents/notebooks")
        assert denied.value.code == 403
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
