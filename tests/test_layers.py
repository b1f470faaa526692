"""The layer picture of docs/architecture.md, checked on every import statement (also the ones
inside functions): each module imports only its own layer or lower ones, guidance and renderers
do not import each other, and no chain of imports comes back to where it started."""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dream3d", "guidance", "renderers")
# bottom to top; a module belongs to the first layer whose prefix it starts with
LAYERS = (("kernel", ("dream3d.kernel",)), ("toyworld", ("dream3d.toyworld",)),
          ("libraries", ("guidance", "renderers")), ("app", ("dream3d",)))


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str | None = None) -> set[str]:
    """Project modules a file imports (absolute and relative, at any depth of the file)."""
    name, found = name or module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for a in node.names:  # `from pkg import module` imports pkg.module
                sub = f"{base}.{a.name}"
                found.add(sub if (ROOT / (sub.replace(".", "/") + ".py")).exists()
                          or (ROOT / sub.replace(".", "/")).is_dir() else base)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


GRAPH = import_graph()


def test_every_module_is_in_a_layer():
    assert len(GRAPH) > 50
    for module in GRAPH:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_downwards(module):
    mine = layer_of(module)
    for target in GRAPH[module]:
        theirs = layer_of(target)
        assert theirs <= mine, f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]}), a higher layer"
        if LAYERS[mine][0] == "libraries" and theirs == mine:
            assert target.split(".")[0] == module.split(".")[0], f"{module} imports {target}: the libraries are independent"


def test_no_import_cycles():
    """Package __init__ files re-export their modules, so `pkg -> pkg.mod` edges are left out; every
    other edge counts, also imports placed inside functions."""
    graph = {m: {t for t in deps if not (m == t or t.startswith(m + "."))} for m, deps in GRAPH.items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_the_checks_can_fail(tmp_path):
    """A renderer importing the trainer is upward; a module importing itself back is a cycle."""
    bad = tmp_path / "probe.py"
    bad.write_text("from ..base import Scene\n\ndef f():\n    from dream3d import trainer\n")
    found = imports_of(bad, "renderers.nerf.probe")
    assert found == {"renderers.base", "dream3d.trainer"}
    assert max(layer_of(t) for t in found) > layer_of("renderers.nerf.probe")
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter({**GRAPH, "dream3d.kernel.cameras": {"dream3d.trainer"}}).static_order())
