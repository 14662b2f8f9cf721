"""The package's shape: the map in hyops_dispatcher/__init__ names every module, imports go
one way (leaves <- core <- shell <- edge, earlier modules of a layer first), and the pure
core imports nothing that does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import hyops_dispatcher
import pytest

PACKAGE = Path(hyops_dispatcher.__file__).resolve().parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
ORDER = [m for layer in hyops_dispatcher.LAYERS.values() for m in layer]
LAYER_OF = {m: name for name, layer in hyops_dispatcher.LAYERS.items() for m in layer}
# Standard-library modules that do I/O or read the clock: never imported by the core.
IO_MODULES = {"sqlite3", "select", "socket", "fcntl", "ctypes", "signal", "time", "subprocess"}
OS_ALLOWED = {"path", "fsdecode", "fsencode", "stat_result"}  # stat_result: a type only


def package_imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text("utf-8"))
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}


def test_the_map_names_every_module_once() -> None:
    assert sorted(ORDER) == MODULES
    assert len(ORDER) == len(set(ORDER))
    doc = hyops_dispatcher.__doc__ or ""
    missing = [m for m in MODULES if f"- {m}:" not in doc]
    assert not missing, f"__init__ docstring does not describe {missing}"


@pytest.mark.parametrize("module", MODULES)
def test_imports_point_only_to_earlier_modules(module: str) -> None:
    later = [m for m in package_imports(module) if ORDER.index(m) >= ORDER.index(module)]
    assert not later, f"{module} ({LAYER_OF[module]}) imports {later}, not earlier in the map"


@pytest.mark.parametrize("module", MODULES)
def test_each_module_states_its_invariant(module: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / f"{module}.py").read_text("utf-8"))) or ""
    assert "Invariant" in doc, f"{module}: the docstring states no invariant"


@pytest.mark.parametrize("module", hyops_dispatcher.LAYERS["core"])
def test_the_core_does_no_io(module: str) -> None:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text("utf-8"))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] in IO_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if (node.module or "").split(".")[0] in IO_MODULES:
                bad.append(node.module)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr not in OS_ALLOWED
        ):
            bad.append(f"os.{node.attr}")
    assert not bad, f"{module} (pure core) uses {sorted(set(bad))}"
