"""Executes the python code blocks of the README and the docs, and compares what they print.

Each file's ```python blocks run in order in one namespace. When the next fenced block after a
python block is a ```text block, it is the block's expected output and is compared with what the
block printed:

- the text around numbers must match exactly (trailing spaces and blank lines at the ends aside);
- integers (counts, shapes) must match exactly;
- decimals (losses, ELBOs) must match within `RTOL` relative or `ATOL` absolute: a doc states
  the numbers of one seeded run, and other machines (CPU kind, thread count, TF build) change
  the last digits of trained models' numbers.

A ```text nocompare block is shown to the reader but not compared; each use says why in the
doc (e.g. wall-clock times in a progress bar).
"""

import contextlib
import io
import math
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?\d+")
RTOL, ATOL = 0.05, 0.05


def code_and_expected_output(text: str) -> list[tuple[str, str | None]]:
    """`(python source, expected output or None)` for each python block of a markdown text."""
    blocks = [(info.strip(), body) for info, body in FENCE.findall(text)]
    pairs = []
    for i, (info, body) in enumerate(blocks):
        if info != "python":
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
        pairs.append((body, following[1] if following[0] == "text" else None))
    return pairs


def assert_output_matches(printed: str, expected: str, where: str) -> None:
    """Text equal, integers equal, decimals within `RTOL`/`ATOL` (see the module docstring)."""
    got = "\n".join(line.rstrip() for line in printed.strip("\n").splitlines())
    want = "\n".join(line.rstrip() for line in expected.strip("\n").splitlines())
    message = f"{where} printed\n{got}\nbut the doc shows\n{want}"
    assert NUMBER.split(got) == NUMBER.split(want), message
    for g, w in zip(NUMBER.findall(got), NUMBER.findall(want), strict=True):
        if re.fullmatch(r"[-+]?\d+", w):
            assert g == w, message
        else:
            assert math.isclose(float(g), float(w), rel_tol=RTOL, abs_tol=ATOL), message


# The docs whose code fits and samples models (20-60 s each on 2 cores): the `slow` tier
# (`make test-slow`, run by CI); the others run in `make test`.
SLOW_DOCS = {
    "README.md",
    "docs/conditional_density.md",
    "docs/getting_started.md",
    "docs/api/mcmc.md",
    "docs/tutorials/mnist_vae.md",
    "docs/tutorials/neutra.md",
    "docs/tutorials/variational_inference.md",
}
assert all((ROOT / name).is_file() for name in SLOW_DOCS), "SLOW_DOCS names a doc that is gone"


def _doc_param(path: pathlib.Path):
    name = str(path.relative_to(ROOT))
    return pytest.param(path, id=name, marks=[pytest.mark.slow] if name in SLOW_DOCS else [])


@pytest.mark.parametrize(
    "path", [_doc_param(p) for p in DOCS if code_and_expected_output(p.read_text())]
)
def test_doc_code_runs_and_prints_what_the_doc_shows(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # As in a fresh process: no seed generator left in tf_keras by an earlier test (a doc that
    # seeds Keras 3 or TensorFlow would otherwise build its tf_keras networks with other weights).
    from tf_keras.src import backend as tf_keras_backend

    monkeypatch.setattr(tf_keras_backend._SEED_GENERATOR, "generator", None, raising=False)
    namespace = {"__name__": "__doc__"}
    for i, (code, expected) in enumerate(code_and_expected_output(path.read_text())):
        where = f"{path.name}[block {i}]"
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, where, "exec"), namespace)
        if expected is not None:
            assert_output_matches(printed.getvalue(), expected, where)


def test_comparison_rules():
    assert code_and_expected_output("```python\nprint(1)\n```\nprose\n```text\n1\n```\n") == [
        ("print(1)\n", "1\n")
    ]
    assert code_and_expected_output("```python\na\n```\n```text nocompare\n1\n```\n") == [
        ("a\n", None)
    ]
    assert code_and_expected_output("```python\na\n```\n```bash\nb\n```\n```text\n1\n```\n") == [
        ("a\n", None)
    ]
    assert_output_matches(
        "ELBO -3.950 nats (56 variables)\n", "ELBO -3.914 nats (56 variables)", ""
    )
    with pytest.raises(AssertionError, match="printed"):
        assert_output_matches("ELBO -3.9 nats (56 variables)", "ELBO -3.9 nats (40 variables)", "")
    with pytest.raises(AssertionError, match="printed"):
        assert_output_matches("ELBO -5.1 nats", "ELBO -3.9 nats", "")
    with pytest.raises(AssertionError, match="printed"):
        assert_output_matches("log p(x) -3.9", "ELBO -3.9", "")
    with pytest.raises(AssertionError, match="printed"):
        assert_output_matches("a\nb", "a", "")
