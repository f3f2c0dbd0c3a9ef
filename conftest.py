"""Test order for the two-worker run: the chapter notebooks first, the longest
first (by the run time each chapter recorded in its results file), then the
unit tests. With ``--dist loadfile`` each file goes to whichever worker is
free, so starting with the longest chapters keeps the two workers busy to the
end instead of leaving one to run a long chapter alone."""
import json
import pathlib

ROOT = pathlib.Path(__file__).parent


def recorded_runtime(path: pathlib.Path) -> float:
    try:
        return float(json.loads((ROOT / "results" / f"{path.stem}.json").read_text()).get("runtime_s") or 0)
    except (OSError, ValueError):
        return 0.0


def pytest_collection_modifyitems(session, config, items):
    def key(item):
        path = pathlib.Path(str(item.fspath))
        is_notebook = path.suffix == ".ipynb"
        return (not is_notebook, -recorded_runtime(path) if is_notebook else 0.0)
    items.sort(key=key)  # stable: cells keep their order inside a notebook
