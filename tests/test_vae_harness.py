"""The examples' harness beside the scripts (examples/vae_harness): kept out of the library and
the wheel, short functions, and runs trained before it moved out of `tfp_iaf.vae` resume."""

import ast
import json
from pathlib import Path

import numpy as np
import setuptools
import tensorflow as tf

import vae_harness as harness
from tests.examples_util import tiny_vae
from vae_harness.fingerprint import fingerprint

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "examples" / "vae_harness"
MAX_BODY = 60  # lines of a function's body, its docstring left out


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_no_function_of_the_harness_or_the_examples_is_long():
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({_body_lines(node)} lines)"
        for path in sorted([*HARNESS.glob("*.py"), *(ROOT / "examples").glob("*.py")])
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and _body_lines(node) > MAX_BODY
    ]
    assert not long, f"bodies over {MAX_BODY} lines: {long}"


def test_the_library_imports_nothing_of_the_harness_examples_or_bench():
    outside = ("vae_harness", "examples", "bench", "tests")
    found = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "tfp_iaf").rglob("*.py"))
        for module in _imported_modules(path)
        if module.split(".")[0] in outside
    }
    assert not found, sorted(found)


def test_the_wheel_holds_the_library_alone():
    # setup.cfg's package discovery, as `python -m build` runs it from the repository root.
    packages = setuptools.find_packages(str(ROOT), include=["tfp_iaf", "tfp_iaf.*"])
    assert "tfp_iaf.vae" in packages
    assert all(p == "tfp_iaf" or p.startswith("tfp_iaf.") for p in packages), packages
    assert "include = tfp_iaf, tfp_iaf.*" in (ROOT / "setup.cfg").read_text()


X = np.tile(np.eye(4, dtype=np.float32), (2, 1))  # 8 rows: two steps per epoch at batch 4


def _compiled_model():
    model = tiny_vae()
    model.compile(optimizer=harness.make_optimizer(0.05))
    model(X[:4])
    model.optimizer.build(model.trainable_variables)
    return model


def test_a_run_checkpointed_before_the_move_resumes(tmp_path):
    # A checkpoint as `tfp_iaf.vae.train` wrote it, its keys spelled out: the model, its
    # optimizer (state and averages), the step, the training seconds, TF's save counter; and
    # the fingerprint file beside it.
    old = _compiled_model()
    for variable in old.trainable_variables:  # values the new model does not start from
        variable.assign_add(tf.fill(variable.shape, 0.5))
    for average in old.optimizer._model_variables_moving_average:
        average.assign_add(tf.fill(average.shape, 0.25))
    written = tf.train.Checkpoint(
        model=old,
        optimizer=old.optimizer,
        step=tf.Variable(3, dtype=tf.int64),
        train_seconds=tf.Variable(12.5, dtype=tf.float64),
    )
    written.save_counter.assign(1)
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    (directory / "ckpt-3.json").write_text(json.dumps(fingerprint(old), indent=1))
    written.write(str(directory / "ckpt-3"))

    batches = tf.data.Dataset.from_tensor_slices(X).batch(4, drop_remainder=True).repeat()
    model = _compiled_model()
    kwargs = dict(model_dir=str(tmp_path), steps_per_epoch=2, verbose=0, use_averages=False)
    restored = harness.train(model, batches, num_steps=3, **kwargs)
    assert (restored.initial_step, restored.step, restored.train_seconds) == (3, 3, 12.5)
    for a, b in zip(old.trainable_variables, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    averages = old.optimizer._model_variables_moving_average
    for a, b in zip(averages, model.optimizer._model_variables_moving_average, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    resumed = harness.train(_compiled_model(), batches, num_steps=4, **kwargs)
    assert (resumed.initial_step, resumed.step) == (3, 4)
    assert resumed.train_seconds >= 12.5
    assert sorted(p.name for p in directory.glob("*.index")) == ["ckpt-3.index", "ckpt-4.index"]
