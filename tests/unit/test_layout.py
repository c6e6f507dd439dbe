"""The tree shows the architecture: one installed name, arrows that point one way, modules
small enough to read (docs/architecture.md, "Package map").

The import graph is read with the standard library (``ast``), every import counted, the
ones inside functions too.
"""

from __future__ import annotations

import ast
import graphlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("schemas", "privacy", "online_learning", "streams", "consumers")
# What each folder may import, besides itself: schemas at the bottom; privacy and
# online_learning use schemas; streams composes them with Kafka and Delta; consumers reads
# what streams wrote; eddyline (the facade, the CLI) sits on top.
ALLOWED = {
    "schemas": set(),
    "privacy": {"schemas"},
    "online_learning": {"schemas"},
    "streams": {"schemas", "privacy", "online_learning"},
    "consumers": {"schemas", "privacy", "online_learning", "streams"},
    "eddyline": {"schemas", "privacy", "online_learning", "streams", "consumers"},
}
GENERIC = re.compile(
    r"^\s*(?:>>> )?(?:from|import)\s+(?:schemas|privacy|online_learning|consumers|streams)\b",
    re.M,
)


def _sources(folder: str) -> list[Path]:
    """The real files of a folder (``eddyline/`` without its links to the others)."""
    base = ROOT / folder
    files = [p for p in base.rglob("*.py") if not any(p.is_relative_to(base / f) for f in FOLDERS)]
    return sorted(files)


def _imports(path: Path) -> set[str]:
    """The eddyline folders ``path`` imports (``eddyline.<folder>...``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "eddyline" and len(parts) > 1 and parts[1] in FOLDERS:
                found.add(parts[1])
            elif parts[0] == "eddyline":
                found.add("eddyline")
    return found


def test_arrows_between_the_folders_point_one_way() -> None:
    graph: dict[str, set[str]] = {folder: set() for folder in ALLOWED}
    wrong = []
    for folder in ALLOWED:
        for path in _sources(folder):
            used = _imports(path) - {folder}
            graph[folder] |= used
            wrong += [f"{path.relative_to(ROOT)} imports {u}" for u in used - ALLOWED[folder]]
    assert wrong == []
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError on a cycle


def test_the_import_graph_check_sees_a_cycle() -> None:
    """The check above can fail: a graph with a cycle raises."""
    import pytest

    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter({"streams": {"consumers"}, "consumers": {"streams"}}).prepare()


def test_nothing_imports_a_generic_top_level_name() -> None:
    """Code, tests, benchmarks, doctests and the docs' examples import ``eddyline.…`` only:
    the card's folders are not installed under their own names."""
    places = [*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md")]
    for folder in (*FOLDERS, "eddyline", "tests", "bench"):
        places += _sources(folder)
    # test_wheel.py writes an app whose own packages are named schemas and streams: the point
    app = ROOT / "tests" / "integration" / "test_wheel.py"
    offenders = [
        str(p.relative_to(ROOT)) for p in places if p != app and GENERIC.search(p.read_text())
    ]
    assert offenders == []


def test_modules_stay_small_and_the_worker_wiring_short() -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for folder in (*FOLDERS, "eddyline", "tests", "bench")
        for p in _sources(folder)
    }
    assert {name: n for name, n in sizes.items() if n > 400} == {}
    assert sizes["streams/worker/app.py"] < 200


def test_every_folder_installs_under_eddyline() -> None:
    for folder in FOLDERS:
        link = ROOT / "eddyline" / folder
        assert link.is_symlink() and link.resolve() == ROOT / folder


def test_every_error_a_user_can_catch_is_in_the_drawn_tree() -> None:
    import importlib
    import pkgutil

    import eddyline
    from eddyline.schemas import errors

    for module in pkgutil.walk_packages(eddyline.__path__, "eddyline."):
        if ".cli" not in module.name and not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found, todo = set(), [errors.EddylineError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo += cls.__subclasses__()
    tree = errors.__doc__ or ""
    drawn = {name for name in found if f"── {name} " in tree} | {"EddylineError"}
    assert found - drawn == set()


def test_no_bench_script_shadows_a_standard_module() -> None:
    """A bench script runs with bench/ first on sys.path, so a file there named like a
    standard module hides it from every import: bench/_json.py once hid json's C
    accelerator (``_json``) and made every json call of the benches ~10x slower."""
    names = {p.stem for p in (ROOT / "bench").glob("*.py")}
    assert names & set(sys.stdlib_module_names) == set()
