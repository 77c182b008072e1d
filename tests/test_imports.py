"""The import structure of tfp_iaf: no cycles, and the longest import chain short.

Read from the source with `ast` (nothing is imported): every `import` of a tfp_iaf module,
at any depth of a module (imports inside functions count too).
"""

import ast
import functools
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tfp_iaf"
MAX_CHAIN = 5  # modules, both ends included


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
PACKAGES = {_module_name(p) for p in PACKAGE.rglob("__init__.py")}


def _imports(name: str) -> set[str]:
    """The tfp_iaf modules that module `name` imports (a package: its `__init__`)."""
    tree = ast.parse(MODULES[name].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tfp_iaf import masks`: the submodule if it is one, else the package.
            targets = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in MODULES
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: _imports(name) for name in MODULES}
# The core: the modules of the package itself, not its subpackages (vae, vi) nor its
# `__init__`, which only re-exports.
CORE = {n for n in MODULES if n.count(".") == 1 and n not in PACKAGES}


def _cycle() -> list[str] | None:
    state = {}

    def visit(name, path):
        state[name] = "open"
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == "open":
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep, [*path, dep])):
                return found
        state[name] = "done"
        return None

    for name in sorted(GRAPH):
        if name not in state and (found := visit(name, [name])):
            return found
    return None


def _longest_chain(nodes: set[str]) -> list[str]:
    @functools.cache
    def chain(name: str) -> tuple[str, ...]:
        deps = [chain(d) for d in sorted(GRAPH[name] & nodes)]
        return (name, *max(deps, key=len, default=()))

    return list(max((chain(n) for n in sorted(nodes)), key=len))


def test_the_graph_is_read():
    # A guard for the reader itself: these edges exist, so a broken parse fails here.
    assert "tfp_iaf.flow" in GRAPH["tfp_iaf.iaf"]
    assert "tfp_iaf.masks" in GRAPH["tfp_iaf.stacks"]  # `from tfp_iaf import masks as ...`
    assert "tfp_iaf.stacks" in GRAPH["tfp_iaf.keras3"]
    assert _longest_chain({"tfp_iaf.iaf", "tfp_iaf.flow", "tfp_iaf._keras"}) == [
        "tfp_iaf.iaf",
        "tfp_iaf.flow",
        "tfp_iaf._keras",
    ]


def test_no_import_cycles():
    assert _cycle() is None, f"import cycle: {' -> '.join(_cycle())}"


@pytest.mark.parametrize("part", ["core", "package"])
def test_the_longest_import_chain_is_short(part):
    # The package: every module, the subpackages' too (not the `__init__`s, which re-export).
    chain = _longest_chain(CORE if part == "core" else set(MODULES) - PACKAGES)
    assert len(chain) <= MAX_CHAIN, f"{len(chain)} modules: {' -> '.join(chain)}"


def test_the_checks_and_masks_stand_on_nothing_of_tfp_iaf():
    # Every module validates through `_checks`; `masks` is pure NumPy geometry, and
    # `conv_inverse` reads what it needs off the network it solves for.
    assert GRAPH["tfp_iaf._checks"] == set()
    assert GRAPH["tfp_iaf.masks"] <= {"tfp_iaf._checks"}
    assert GRAPH["tfp_iaf.conv_inverse"] == set()
