"""Test order for the two-worker run: the chapter notebooks first, the longest
first, then the unit tests. With ``--dist loadfile`` each file goes to
whichever worker is free, so starting with the longest chapters keeps both
workers busy to the end instead of leaving one to run a long chapter alone.

The order is a scheduling hint only: chapters measured cold (empty cache, one
thread, two at a time) on the project's 2-core machine, longest first. A
notebook missing from the list runs after the listed ones."""
import pathlib

LONGEST_FIRST = ["04_distillation", "02_quantization", "05_tinybert", "06_mobilebert", "03_pruning",
                 "09_token_sparsification", "08_sharing", "11_putting_it_together", "10_vision_language",
                 "07_vision", "01_teacher", "scoreboard"]


def pytest_collection_modifyitems(session, config, items):
    def key(item):
        path = pathlib.Path(str(item.fspath))
        if path.suffix != ".ipynb":
            return (2, 0)
        rank = LONGEST_FIRST.index(path.stem) if path.stem in LONGEST_FIRST else len(LONGEST_FIRST)
        return (0 if path.stem in LONGEST_FIRST else 1, rank)
    items.sort(key=key)  # stable: cells keep their order inside a notebook
