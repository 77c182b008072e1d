"""The API site covers the public API: every public name has a `:::` directive in docs/api/.

Read statically (no TensorFlow import, no mkdocs): the public names are the `__all__` lists of
`PUBLIC_MODULES`, the directives the `::: path` lines of docs/api/*.md, which mkdocstrings
renders into the name's signature and docstring. `make docs` (mkdocs build --strict) then checks
that every directive resolves and every docstring parses; tests/test_docs.py runs each page's
example.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"
PUBLIC_MODULES = {
    "tfp_iaf": ROOT / "tfp_iaf" / "__init__.py",
    "tfp_iaf.vi": ROOT / "tfp_iaf" / "vi" / "__init__.py",
    "tfp_iaf.mcmc": ROOT / "tfp_iaf" / "mcmc" / "__init__.py",
    "tfp_iaf.vae": ROOT / "tfp_iaf" / "vae" / "__init__.py",
    "tfp_iaf.keras3": ROOT / "tfp_iaf" / "keras3.py",
    "tfp_iaf.transforms": ROOT / "tfp_iaf" / "transforms.py",
    "tfp_iaf.spline": ROOT / "tfp_iaf" / "spline.py",
}
# Public names that are other packages' modules: described in prose on a page, not rendered.
PROSE = {"tfp_iaf.tf_keras": API / "layers.md"}
DIRECTIVE = re.compile(r"^::: ([\w.]+)\s*$", re.MULTILINE)
NAV_ENTRY = re.compile(r"^\s*-\s+(?:[^:\n]+:\s+)?([\w/.-]+\.md)\s*$", re.MULTILINE)


def module_tree(module: str) -> ast.Module:
    return ast.parse(PUBLIC_MODULES[module].read_text())


def public_names(module: str) -> list[str]:
    for node in module_tree(module).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{module} has no __all__")


def imported_from(module: str, name: str) -> str | None:
    """The module `module` imports `name` from (`from X import name`), or None."""
    for node in module_tree(module).body:
        if isinstance(node, ast.ImportFrom) and any(
            (a.asname or a.name) == name for a in node.names
        ):
            return node.module
    return None


def directives() -> set[str]:
    return {m for page in API.glob("*.md") for m in DIRECTIVE.findall(page.read_text())}


def public_paths() -> list[str]:
    return [f"{module}.{name}" for module in PUBLIC_MODULES for name in public_names(module)]


@pytest.mark.parametrize("path", public_paths())
def test_every_public_name_has_a_directive(path):
    documented = directives()
    if path in PROSE:
        assert f"`{path}`" in PROSE[path].read_text(), f"{PROSE[path].name} must describe {path}"
        return
    if path in documented:
        return
    # A re-export (`tfp_iaf.vae.data_dependent_init`) is documented once, under tfp_iaf.
    module, name = path.rsplit(".", 1)
    source = imported_from(module, name)
    assert (
        f"tfp_iaf.{name}" in documented
        and source is not None
        and source == imported_from("tfp_iaf", name)
    ), f"{path} is public but no docs/api/*.md page has `::: {path}`"


def test_every_directive_is_a_public_name():
    public = set(public_paths()) | set(PUBLIC_MODULES)
    stale = sorted(directives() - public)
    assert not stale, f"docs/api/ documents names that are not public: {stale}"


def test_every_api_page_has_an_example_that_runs():
    # tests/test_docs.py executes the ```python blocks of every docs/**/*.md file.
    pages = [p for p in API.glob("*.md") if DIRECTIVE.search(p.read_text())]
    assert pages
    for page in pages:
        assert "```python\n" in page.read_text(), f"{page.name} has no python example"


def test_nav_lists_every_page_and_only_existing_ones():
    nav = NAV_ENTRY.findall((ROOT / "mkdocs.yml").read_text())
    missing = [p for p in nav if not (ROOT / "docs" / p).is_file()]
    assert not missing, f"mkdocs.yml lists missing pages: {missing}"
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages == set(nav), f"pages not in mkdocs.yml's nav: {sorted(pages - set(nav))}"


def docstrings():
    for path in sorted((ROOT / "tfp_iaf").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    yield f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}", doc


def test_examples_are_indented_under_their_header():
    # Google style: a section's content is indented under its header. An unindented doctest
    # after `Examples:` still runs, but the site renders it as quoted text, not code.
    bad = []
    for where, doc in docstrings():
        lines = doc.splitlines()
        for i, line in enumerate(lines):
            if line.strip() in ("Example:", "Examples:"):
                indent = len(line) - len(line.lstrip())
                following = lines[i + 1] if i + 1 < len(lines) else ""
                if not following.strip() or len(following) - len(following.lstrip()) <= indent:
                    bad.append(where)
    assert not bad, f"Examples not indented under the header: {bad}"
