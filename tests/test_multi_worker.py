"""`--strategy=multi_worker`: two worker processes on localhost (TF_CONFIG, CPU) train the MNIST
and CIFAR-10 examples on tfds mock data; both end with the same weights, only the chief writes to
`model_dir`, and the chief's checkpoint resumes in a single process."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.examples_util import loaded_example

# Two worker processes train both examples (75 s on 2 cores), which every test here reads: the
# whole file is the `slow` tier's (`make test-slow`, run by CI).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
STEPS = 2
# Tiny sizes; one evaluation batch of one importance sample (4 mock examples per split).
MNIST = dict(
    posterior="iaf", iaf_depth=1, iaf_width=32, context_size=4, batch_size=4,
    num_importance_samples=1, importance_chunk=1, eval_batch_size=4,
)  # fmt: skip
CIFAR = dict(
    depth=1, num_blocks=1, hidden_size=4, z_size=2, batch_size=4, num_importance_samples=1,
    importance_chunk=1, eval_batch_size=4,
)  # fmt: skip
NUM_EXAMPLES = 4
EXAMPLES = {"mnist_vae": MNIST, "cifar10_vae": CIFAR}

# One worker: both examples in turn under one MultiWorkerMirroredStrategy cluster (one process
# start per worker), each model's final weights saved to `out/<example>_<worker>.npz`.
WORKER = """
import numpy as np
import tensorflow_datasets as tfds
from tests.examples_util import loaded_example

models = []


def recording(make):
    def make_and_record(*args, **kwargs):
        models.append(make(*args, **kwargs))
        return models[-1]
    return make_and_record


def run(module, model_dir, settings):
    config = module.Config(num_steps={steps}, model_dir=model_dir, **settings)
    with tfds.testing.mock_data(num_examples={num_examples}):
        results = module.train_and_evaluate(config)
    assert results["num_replicas"] == 2, results["num_replicas"]
    np.savez(f"{out}/{{module.__name__}}_{worker}.npz", *models[-1].get_weights())


with loaded_example("mnist_vae") as mnist_vae:
    mnist_vae.make_model = recording(mnist_vae.make_model)
    run(mnist_vae, {mnist_dir!r}, dict(strategy="multi_worker", **{mnist!r}))
with loaded_example("cifar10_vae") as cifar10_vae:
    cifar10_vae.build_model = recording(cifar10_vae.build_model)
    run(cifar10_vae, {cifar_dir!r}, dict(strategy="multi_worker", **{cifar!r}))
"""


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    """Runs the two workers to completion; returns `(model dirs by example, output dir)`."""
    tmp = tmp_path_factory.mktemp("multi_worker")
    out = tmp / "weights"
    out.mkdir()
    dirs = {name: tmp / name for name in EXAMPLES}
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    procs = []
    for index in range(2):
        code = WORKER.format(
            worker=index, steps=STEPS, num_examples=NUM_EXAMPLES, out=str(out),
            mnist_dir=str(dirs["mnist_vae"]), cifar_dir=str(dirs["cifar10_vae"]),
            mnist=MNIST, cifar=CIFAR,
        )  # fmt: skip
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(tf_config),
            "CUDA_VISIBLE_DEVICES": "",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_NUM_INTRAOP_THREADS": "1",  # two workers share the test machine's cores
            "PYTHONPATH": str(ROOT),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(code)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for index, (proc, log) in enumerate(zip(procs, logs, strict=True)):
        assert proc.returncode == 0, f"worker {index}:\n{log[-4000:]}"
    return dirs, out


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_both_workers_end_with_identical_weights(cluster_run, example):
    _, out = cluster_run
    chief, other = (np.load(out / f"{example}_{i}.npz") for i in range(2))
    assert len(chief.files) == len(other.files) > 0
    for name in chief.files:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_only_the_chief_writes_to_model_dir(cluster_run, example):
    dirs, _ = cluster_run
    model_dir = dirs[example]
    results = json.loads((model_dir / "results.json").read_text())
    assert results["steps"] == STEPS and results["num_replicas"] == 2
    assert (model_dir / "samples.png").exists()
    checkpoints = sorted(p.name for p in (model_dir / "checkpoints").iterdir())
    assert f"ckpt-{STEPS}.index" in checkpoints
    # The other worker's checkpoints and TensorBoard files went to temporary directories.
    leftovers = [p for p in model_dir.rglob("*") if "workertemp" in p.name or "worker_" in p.name]
    assert not leftovers


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_chief_checkpoint_resumes_in_one_process(cluster_run, example):
    dirs, _ = cluster_run
    settings = {k: v for k, v in EXAMPLES[example].items()}
    with loaded_example(example) as module, tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        config = module.Config(num_steps=STEPS + 1, model_dir=str(dirs[example]), **settings)
        results = module.train_and_evaluate(config)
    assert results["resumed_from_step"] == STEPS
    assert results["steps"] == STEPS + 1 and results["num_replicas"] == 1
