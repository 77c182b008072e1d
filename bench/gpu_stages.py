"""The GPU suite's in-process stages (bench/gpu_suite.py runs them): env, placement, cifar.

Each takes the suite's sizes for the run (`gpu_suite.SIZES[smoke]`) and returns the stage's
result for the results JSON. TensorFlow is imported inside them, after the suite has set the
environment (`CUDA_VISIBLE_DEVICES`, memory growth) from its flags.

- `stage_env`: the machine, the TF build, and matmul peaks per dtype;
- `stage_placement`: training and sampling steps with soft device placement off;
- `stage_cifar`: ResNet VAE training steps per policy, without and with XLA.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import time


def _matmul_tflops(tf, size: int, dtype, repeats: int = 5, chain: int = 10) -> float:
    """TFLOP/s of `chain` dependent `[size, size]` matmuls in one tf.function (median)."""
    a = tf.cast(tf.random.normal([size, size]), dtype)
    b = tf.cast(tf.random.normal([size, size]) / size**0.5, dtype)

    @tf.function
    def run():
        c = a
        for _ in range(chain):
            c = tf.matmul(c, b)
        return tf.reduce_sum(tf.cast(c[0, :8], tf.float32))

    run().numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run().numpy()
        times.append(time.perf_counter() - start)
    return 2 * chain * size**3 / statistics.median(times) / 1e12


def stage_env(sizes: dict) -> dict:
    import tensorflow as tf
    import tensorflow_probability as tfp

    gpus = tf.config.list_physical_devices("GPU")
    env = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tfp": tfp.__version__,
        "gpus": [
            tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus
        ],  # fmt: skip
        "tf_build": {
            k: str(v)
            for k, v in tf.sysconfig.get_build_info().items()
            if k in ("cuda_version", "cudnn_version", "is_cuda_build")
        },  # fmt: skip
        "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
    }
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
             "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        env["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        env["nvidia_smi"] = f"not available ({type(e).__name__})"
    device = "/GPU:0" if gpus else "/CPU:0"
    peaks = {}
    with tf.device(device):
        for label, dtype, tf32 in (
            ("fp32 (TF default: TF32 where supported)", tf.float32, True),
            ("fp32, TF32 off", tf.float32, False),
            ("bf16", tf.bfloat16, True),
            ("fp16", tf.float16, True),
        ):
            tf.config.experimental.enable_tensor_float_32_execution(tf32)
            try:
                peaks[label] = round(_matmul_tflops(tf, sizes["matmul"], dtype), 3)
            except tf.errors.OpError as e:  # e.g. no bf16 matmul kernel on this CPU
                peaks[label] = f"failed: {type(e).__name__}"
        tf.config.experimental.enable_tensor_float_32_execution(True)
    env["matmul_tflops"] = peaks
    env["matmul_size"] = sizes["matmul"]
    return {"status": "ok", "env": env}


def stage_placement(sizes: dict, resnet_sizes: dict) -> dict:
    """Steps under `/GPU:0` with soft placement off: a CPU-only op raises, no fallback.

    The ResNet VAE is built with `resnet_sizes` (toy sizes: placement, not speed, is checked).
    """
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    import tfp_iaf
    import vae_harness
    from bench import resnet_runs
    from tfp_iaf import tf_keras, vae

    tfd = tfp.distributions
    gpus = tf.config.list_physical_devices("GPU")
    device = "/GPU:0" if gpus else "/CPU:0"
    checks, failures = [], []

    def mnist_like_vae():
        """The MNIST example's layer types (conv, transposed conv, crop, dense, ELU) and IAF;
        the example itself is not imported (its absl flags would clash with this script's)."""
        layers = tf_keras.layers
        encoder = tf_keras.Sequential([
            layers.Conv2D(4, 3, strides=2, padding="same", activation="elu"),
            layers.Flatten(), layers.Dense(16, activation="elu"),
        ])  # fmt: skip
        decoder = tf_keras.Sequential([
            layers.Dense(4 * 4 * 4, activation="elu"), layers.Reshape((4, 4, 4)),
            layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="elu"),
            layers.Cropping2D(((0, 1), (0, 1))), layers.Conv2D(1, 3, padding="same"),
        ])  # fmt: skip
        flow = tfp_iaf.dense_iaf_stack(8, 2, [16, 16], context_size=4)
        return vae.VAE(encoder, decoder, 8, flow=flow, free_bits=0.1)

    def flow_case(flow, event_shape, context):
        q = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0.0, 1.0), event_shape), flow)
        kw = {"context": context}

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                z = q.sample(2, seed=[1, 2], bijector_kwargs=kw)
                loss = -tf.reduce_mean(q.log_prob(z, bijector_kwargs=kw))
            fresh = q.log_prob(tf.zeros([2, *event_shape]), bijector_kwargs=kw)  # the inverse
            return loss, fresh, tape.gradient(loss, flow.trainable_variables)

        return step

    def model_case(model, x):
        model.compile(optimizer=vae_harness.make_optimizer())
        return tf.function(lambda: model.train_step(x))

    cases = {
        "dense IAF: sample, log_prob, gradient, inverse": lambda: flow_case(
            tfp_iaf.dense_iaf_stack(8, 2, [16, 16], context_size=4), (8,), tf.ones([2, 4])
        ),
        "conv IAF (raster): sample, log_prob, gradient, inverse": lambda: flow_case(
            tfp_iaf.conv_iaf_stack((4, 4, 2), 2, [4, 4], context_channels=4),
            (4, 4, 2),
            tf.ones([2, 4, 4, 4]),
        ),
        "MNIST-like VAE (IAF, free bits) train step": lambda: model_case(
            mnist_like_vae(), tf.cast(tf.random.uniform([2, 7, 7, 1]) > 0.5, tf.float32)
        ),
    }
    pixels = np.random.RandomState(0).randint(0, 256, size=(2, 32, 32, 3)).astype(np.uint8)
    for policy in sizes["policies"]:

        def resnet(policy=policy):
            tf_keras.mixed_precision.set_global_policy(policy)
            try:
                model = resnet_runs.make_model(pixels, **resnet_sizes)
                return tf.function(lambda: model.train_step(tf.constant(pixels)))
            finally:
                tf_keras.mixed_precision.set_global_policy("float32")

        cases[f"ResNet VAE train step, {policy}"] = resnet
    tf.config.set_soft_device_placement(False)
    try:
        for name, make in cases.items():
            try:
                with tf.device(device):
                    fn = make()
                    tf.nest.map_structure(lambda t: t.numpy(), fn())
                checks.append(f"{name}: ok on {device}")
            except Exception as e:  # noqa: BLE001  (every case is reported, then the stage fails)
                failures.append(f"{name}: {type(e).__name__}: {str(e)[:500]}")
    finally:
        tf.config.set_soft_device_placement(True)
    status = "ok" if not failures else f"failed ({len(failures)} cases)"
    return {"status": status, "output": "\n".join(checks + failures)}


def stage_cifar(sizes: dict) -> dict:
    """ResNet VAE training steps: ms/step and images/s per policy, without and with XLA."""
    import tensorflow as tf

    from bench import resnet_runs
    from tfp_iaf import tf_keras

    batch, steps, repeats = sizes["cifar_batch"], sizes["cifar_steps"], sizes["cifar_repeats"]
    pixels = tf.cast(tf.random.stateless_uniform([batch, 32, 32, 3], [0, 1], 0, 256, tf.int32),
                     tf.uint8)  # fmt: skip
    rows, failed = [], False
    for policy, xla in sizes["cifar_configs"]:
        row = {"policy": policy, "xla": xla}
        try:
            tf_keras.backend.clear_session()
            tf_keras.mixed_precision.set_global_policy(policy)
            try:
                model = resnet_runs.make_model(pixels, jit_compile=xla, **sizes["cifar"])
            finally:
                tf_keras.mixed_precision.set_global_policy("float32")
            iterator = iter(tf.data.Dataset.from_tensors(pixels).repeat())
            train = model.make_train_function()
            start = time.perf_counter()
            float(train(iterator)["loss"])  # tracing (and XLA compilation)
            row["first_step_s"] = round(time.perf_counter() - start, 2)
            float(train(iterator)["loss"])
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(steps):
                    logs = train(iterator)
                loss = float(logs["loss"])  # waits for the last step
                times.append((time.perf_counter() - start) / steps)
            ms = 1e3 * statistics.median(times)
            row.update(ms_per_step=round(ms, 2), images_per_s=round(batch / ms * 1e3, 1))
            row["loss_finite"] = loss == loss and abs(loss) != float("inf")
            failed |= not row["loss_finite"]
        except Exception as e:  # noqa: BLE001  (every configuration is reported)
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            failed = True
        rows.append(row)
    return {
        "status": "failed" if failed else "ok",
        "sizes": {**sizes["cifar"], "batch": batch, "steps_timed": steps, "repeats": repeats},
        "rows": rows,
    }
