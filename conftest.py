"""Test order for the two-worker run: the chapter notebooks first, the longest
first, then the unit tests. With ``--dist loadfile`` each file goes to
whichever worker is free, so starting with the longest chapters keeps both
workers busy to the end instead of leaving one to run a long chapter alone.

A chapter's length is the ``runtime_s`` its results file records
(results/NN_name.json: the run that produced the stored page), so the order
follows the chapters as they are stored, with no list to keep by hand. The
order is a scheduling hint only: the tests run the chapters at another scale
(tiny), where the times differ. The scoreboard, which has no results file,
runs after the chapters; a chapter without a run time runs after those with
one."""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent


def stored_runtime(stem: str) -> float | None:
    """The seconds results/<stem>.json records for the chapter's stored run, if any."""
    try:
        return float(json.loads((ROOT / "results" / f"{stem}.json").read_text())["runtime_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pytest_collection_modifyitems(session, config, items):
    runtimes: dict[str, float | None] = {}

    def key(item):
        path = pathlib.Path(str(item.fspath))
        if path.suffix != ".ipynb":
            return (3, 0.0)
        if path.stem == "scoreboard":
            return (2, 0.0)
        if path.stem not in runtimes:
            runtimes[path.stem] = stored_runtime(path.stem)
        seconds = runtimes[path.stem]
        return (0, -seconds) if seconds is not None else (1, 0.0)
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
