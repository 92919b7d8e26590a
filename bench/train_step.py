"""Where vitrine_cnn's training time goes on this CPU: one training step at its recipe's batch size, timed
with TensorFlow's defaults, with oneDNN's graph rewrites off, compiled by XLA, and with Keras' own Conv2D
(TensorFlow's input-gradient kernel) in place of the model's ForwardGradientConv2D; then each convolution
forward and backward, with the arithmetic rate it reached, and backward with Keras' own Conv2D.

    python bench/train_step.py
    python bench/train_step.py --steps 20

Each setting runs in a child process (TF_ENABLE_ONEDNN_OPTS is read when TensorFlow starts). The pixels and
labels are random: a step's time does not depend on what the photos show. Runs without Django.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ARCH = "vitrine_cnn"
INPUT_SHAPE = (28, 28, 1)
EPOCH_IMAGES = 60_000  # Fashion-MNIST's training set
WARM_UP_STEPS = 5
# (label, extra environment, child)
SETTINGS = (
    ("TensorFlow defaults", {}, "step"),
    ("TF_ENABLE_ONEDNN_OPTS=0", {"TF_ENABLE_ONEDNN_OPTS": "0"}, "step"),
    ("XLA (jit_compile=True)", {}, "xla-step"),
    ("Keras' own Conv2D", {}, "keras-conv2d-step"),
)


def _model_and_batch(batch_size: int):
    import keras
    import numpy as np

    from classifier.ml.architectures import build_model

    model = build_model(ARCH, num_classes=10, input_shape=INPUT_SHAPE)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(batch_size, *INPUT_SHAPE)).astype(np.float32)
    targets = keras.utils.to_categorical(rng.integers(0, 10, size=batch_size), 10)
    return model, pixels, targets


def _with_keras_conv2d(layer):
    """A copy of the layer, as Keras' own Conv2D where the model has a ForwardGradientConv2D."""
    import keras

    from classifier.ml.architectures import ForwardGradientConv2D

    if isinstance(layer, ForwardGradientConv2D):
        return keras.layers.Conv2D.from_config(layer.get_config())
    return layer.__class__.from_config(layer.get_config())


def child(steps: int, jit: bool, keras_conv2d: bool) -> None:
    import keras

    from classifier.ml.architectures import recipe_for
    from classifier.ml.serving import configure_tensorflow

    configure_tensorflow()
    batch_size = recipe_for(ARCH).batch_size
    model, pixels, targets = _model_and_batch(batch_size)
    if keras_conv2d:
        model = keras.models.clone_model(model, clone_function=_with_keras_conv2d)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy", jit_compile=jit)
    for _ in range(WARM_UP_STEPS):
        model.train_on_batch(pixels, targets)
    started = time.monotonic()
    for _ in range(steps):
        model.train_on_batch(pixels, targets)
    step = (time.monotonic() - started) / steps
    print(f"{step * 1000:8.1f} ms/step of {batch_size}  {step * EPOCH_IMAGES / batch_size:6.0f} s per epoch")


def _forward_backward(layer):
    import tensorflow as tf

    def run(values: tf.Tensor) -> list:
        with tf.GradientTape() as tape:
            tape.watch(values)
            total = tf.reduce_sum(layer(values))
        return tape.gradient(total, [values, *layer.trainable_weights])

    return run


def convolutions(rounds: int) -> None:
    """Each Conv2D of the model alone at the recipe's batch size: forward, forward + backward, and forward +
    backward as Keras' own Conv2D."""
    import keras
    import tensorflow as tf

    from classifier.ml.architectures import recipe_for
    from classifier.ml.serving import configure_tensorflow

    configure_tensorflow()
    tf.get_logger().setLevel("ERROR")  # each layer is traced on its own: the retracing warnings are expected
    batch_size = recipe_for(ARCH).batch_size
    model, _, _ = _model_and_batch(batch_size)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        inputs = tf.random.normal((batch_size, *layer.input.shape[1:]))
        out_h, out_w = layer.output.shape[1:3]
        kernel_h, kernel_w = layer.kernel_size
        multiply_adds = (
            batch_size * out_h * out_w * kernel_h * kernel_w * layer.input.shape[-1] * layer.filters
        )

        keras_own = _with_keras_conv2d(layer)
        keras_own.build(inputs.shape)
        timings = []
        for call in (
            tf.function(layer),
            tf.function(_forward_backward(layer)),
            tf.function(_forward_backward(keras_own)),
        ):
            call(inputs)
            started = time.monotonic()
            for _ in range(rounds):
                call(inputs)
            timings.append((time.monotonic() - started) / rounds)
        # Backward: the gradients of the inputs and of the weights, each as much work as the forward pass.
        flops = [2 * multiply_adds, 3 * 2 * multiply_adds, 3 * 2 * multiply_adds]
        rates = [work / took / 1e9 for work, took in zip(flops, timings, strict=True)]
        print(
            f"{layer.name:26} {'x'.join(map(str, layer.input.shape[1:])):>9} -> {layer.filters:3} filters  "
            f"forward {timings[0] * 1000:6.1f} ms ({rates[0]:4.0f} GFLOP/s)  "
            f"forward+backward {timings[1] * 1000:6.1f} ms ({rates[1]:4.0f} GFLOP/s), "
            f"as Keras' Conv2D {timings[2] * 1000:6.1f} ms ({rates[2]:4.0f} GFLOP/s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--child", choices=["step", "xla-step", "keras-conv2d-step", "convolutions"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child == "convolutions":
        convolutions(rounds=max(1, args.steps // 3))
        return
    if args.child:
        child(steps=args.steps, jit=args.child == "xla-step", keras_conv2d=args.child == "keras-conv2d-step")
        return

    from classifier.ml.machine import machine_line

    print(machine_line())
    print(f"{ARCH}, one training step (AdamW) on {'x'.join(map(str, INPUT_SHAPE))} images:")
    for label, environment, setting in SETTINGS:
        result = subprocess.run(
            [sys.executable, __file__, "--child", setting, "--steps", str(args.steps)],
            env={**os.environ, **environment},
            capture_output=True,
            text=True,
            check=False,
        )
        outcome = result.stdout.strip() or f"failed: {result.stderr.strip().splitlines()[-1:]}"
        print(f"  {label:<26}{outcome}")
    print("each convolution alone (TensorFlow defaults):")
    subprocess.run(
        [sys.executable, __file__, "--child", "convolutions", "--steps", str(args.steps)], check=False
    )


if __name__ == "__main__":
    main()
