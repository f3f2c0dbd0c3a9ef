import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LIGHTKD_PROGRESS", "0")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty lightkd cache for one test."""
    monkeypatch.setenv("LIGHTKD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
