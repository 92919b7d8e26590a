import contextlib
import pathlib
from collections.abc import Iterator

import keras
import numpy as np
import pytest
import tensorflow as tf

from classifier.ml.architectures import (
    ARCHITECTURES,
    DEFAULT_ARCH,
    VITRINE_CNN_STAGE_INPUT_SIDE,
    ArchitectureError,
    ForwardGradientConv2D,
    build_model,
    recipe_for,
)
from classifier.ml.datasets import Dataset
from classifier.ml.train import train


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3), (96, 96, 3)])
def test_every_architecture_maps_pixels_to_category_probabilities(arch, input_shape):
    model = build_model(arch, num_classes=7, input_shape=input_shape)
    pixels = np.random.default_rng(0).integers(0, 256, (4, *input_shape)).astype(np.float32)

    probabilities = np.asarray(model(pixels, training=False))

    assert probabilities.shape == (4, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_scales_raw_pixels_itself(arch):
    model = build_model(arch, num_classes=3, input_shape=(28, 28, 1))

    scaling = [layer for layer in model.layers if isinstance(layer, keras.layers.Rescaling)]

    assert len(scaling) == 1
    assert float(scaling[0].scale) == pytest.approx(1 / 255)


def test_seed_models_have_the_course_layer_sizes():
    # Parameter counts pin the exact layers: 784*256+256 + 256*10+10 for the seed notebook's network.
    sizes = {
        arch: build_model(arch, num_classes=10, input_shape=(28, 28, 1)).count_params()
        for arch in ("seed_dense", "seed_dense_plus128", "seed_dense_plus128_64", "seed_lenet")
    }

    assert sizes["seed_dense"] == 784 * 256 + 256 + 256 * 10 + 10
    assert sizes["seed_dense_plus128"] == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert sizes["seed_dense_plus128_64"] == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    lenet_convs = (5 * 5 * 1 * 20 + 20) + (5 * 5 * 20 * 50 + 50)
    assert sizes["seed_lenet"] == lenet_convs + 7 * 7 * 50 * 500 + 500 + 500 * 10 + 10


def test_seed_recipes_follow_the_course():
    dense, lenet = recipe_for("seed_dense"), recipe_for("seed_lenet")

    assert (dense.batch_size, dense.one_hot) == (32, False)
    assert (lenet.batch_size, lenet.one_hot) == (32, True)
    lenet_optimizer = lenet.make_optimizer(1000)
    assert isinstance(lenet_optimizer, keras.optimizers.Adam)
    assert float(lenet_optimizer.learning_rate) == pytest.approx(1e-3)
    assert float(lenet_optimizer._learning_rate(1000)) < 1e-3


def test_default_recipe_warms_up_then_decays_to_zero():
    recipe = recipe_for(DEFAULT_ARCH)
    schedule = recipe.make_optimizer(600)._learning_rate

    rates = [float(schedule(step)) for step in (0, 50, 100, 350, 600)]

    assert isinstance(recipe.make_optimizer(600), keras.optimizers.AdamW)
    assert rates[0] == 0.0
    assert rates[1] < rates[2]
    assert rates[2] == pytest.approx(max(rates))
    assert rates[3] < rates[2]
    assert rates[4] == pytest.approx(0.0, abs=1e-9)


def test_default_model_shrinks_large_photos_before_its_stages():
    model = build_model(DEFAULT_ARCH, num_classes=5, input_shape=(96, 96, 3))

    first_stage_conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][1]

    assert first_stage_conv.output.shape[1] <= VITRINE_CNN_STAGE_INPUT_SIDE


def test_default_model_augments_only_while_training():
    model = build_model(DEFAULT_ARCH, num_classes=3, input_shape=(28, 28, 1))
    flip = model.get_layer("augment_flip")
    pixels = np.random.default_rng(1).integers(0, 256, (8, 28, 28, 1)).astype(np.float32)

    assert np.array_equal(np.asarray(flip(pixels, training=False)), pixels)
    assert not np.array_equal(np.asarray(flip(pixels, training=True)), pixels)
    np.testing.assert_array_equal(
        np.asarray(model(pixels, training=False)), np.asarray(model(pixels, training=False))
    )


@contextlib.contextmanager
def _global_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy set to name inside the block, and back to what it was after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_softmax_stays_float32_under_mixed_bfloat16():
    with _global_policy("mixed_bfloat16"):
        model = build_model(DEFAULT_ARCH, num_classes=3, input_shape=(28, 28, 1))

    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert model.get_layer("category").compute_dtype == "float32"
    assert convolutions[0].compute_dtype == "bfloat16"


def _outputs_and_gradients(layer: keras.layers.Conv2D, images: tf.Tensor) -> list[np.ndarray]:
    with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = layer(images)
        loss = tf.reduce_sum(tf.cast(outputs, tf.float32) ** 2)
    gradients = tape.gradient(loss, [images, *layer.trainable_weights])
    return [np.asarray(tf.cast(value, tf.float32)) for value in (outputs, *gradients)]


@pytest.mark.parametrize(("policy", "tolerance"), [("float32", 1e-5), ("mixed_bfloat16", 2e-2)])
def test_default_models_convolution_trains_exactly_like_keras_conv2d(policy, tolerance):
    with _global_policy(policy):
        ours = ForwardGradientConv2D(6, 3, padding="same")
        keras_own = keras.layers.Conv2D(6, 3, padding="same")
        images = tf.random.normal((3, 9, 7, 4), seed=0)
        ours.build(images.shape)
        keras_own.build(images.shape)
        keras_own.set_weights(ours.get_weights())

        for got, expected in zip(
            _outputs_and_gradients(ours, images), _outputs_and_gradients(keras_own, images), strict=True
        ):
            np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())


def test_default_models_convolution_refuses_what_its_gradient_does_not_cover():
    with pytest.raises(ValueError, match="stride 1"):
        ForwardGradientConv2D(6, 3, strides=2, padding="same")
    with pytest.raises(ValueError, match="odd kernel"):
        ForwardGradientConv2D(6, 2, padding="same")


def test_unknown_architecture_lists_the_choices():
    with pytest.raises(ArchitectureError, match="seed_dense.*vitrine_cnn"):
        build_model("resnet9000", num_classes=3, input_shape=(28, 28, 1))


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_trains_one_epoch_on_a_small_subset(
    arch, tiny_fashion: Dataset, tmp_path: pathlib.Path
):
    # A pretrained backbone sees every photo at its own 260 px: a few photos show that it trains
    # (tests/classifier/ml/test_transfer.py trains it end to end).
    small = tiny_fashion.subset(per_split=30 if recipe_for(arch).backbone else 200)

    result = train(dataset=small, arch=arch, epochs=1, out_dir=tmp_path / arch, batch_size=32)

    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0
    assert np.isfinite(result.metrics["train_loss"])
    assert result.metrics["test_images"] == len(small.x_test)
    assert (result.artifact_dir / "model.keras").is_file()
