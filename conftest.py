"""Test order for the two-worker run: the chapter notebooks first, the longest
first, then the unit tests. With ``--dist loadfile`` each file goes to
whichever worker is free, so starting with the longest chapters keeps both
workers busy to the end instead of leaving one to run a long chapter alone.

The order is a scheduling hint only: chapters measured cold (the cache as set-up
leaves it, one thread, two at a time) on the project's 2-core machine, longest
first (2026-12-07: chapter 8 8.4 min, 4 6.4, 2 5.6, 7 5.4, 5 5.2, 6 4.6, 3 4.6,
10 about 4.5, 11 3.7, 9 2.7). A notebook missing from the list runs after the
listed ones."""
import pathlib

LONGEST_FIRST = ["08_sharing", "04_distillation", "02_quantization", "07_vision", "05_tinybert", "06_mobilebert",
                 "03_pruning", "10_vision_language", "11_putting_it_together", "09_token_sparsification",
                 "01_teacher", "scoreboard"]


def pytest_collection_modifyitems(session, config, items):
    def key(item):
        path = pathlib.Path(str(item.fspath))
        if path.suffix != ".ipynb":
            return (2, 0)
        rank = LONGEST_FIRST.index(path.stem) if path.stem in LONGEST_FIRST else len(LONGEST_FIRST)
        return (0 if path.stem in LONGEST_FIRST else 1, rank)
    items.sort(key=key)  # stable: cells keep their order inside a notebook


# Time per file (a chapter's cells summed), printed at the end of the run: a test run that grows slow
# says which chapter or test file took the time. With xdist the reports reach the controller, so this
# sees every worker's tests.
_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if not _FILE_SECONDS:
        return
    terminalreporter.section("time per file (setup, call and teardown summed)")
    for path, seconds in sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1])[:25]:
        terminalreporter.write_line(f"{seconds / 60:6.1f} min  {path}")
