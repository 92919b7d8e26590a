"""The classifier architectures and the recipe each one trains with.

Every model takes raw 0..255 pixels (uint8 arrays cast to float) and scales them itself, so serving feeds
exactly what training saw. The softmax layer is float32 so the models also train under mixed_bfloat16.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf
from keras import layers

from classifier.ml.backbones.efficientnet_lite import pretrained_efficientnet_lite, variant_spec
from classifier.ml.formats import EFFNET_HEAD_EPOCHS, SEED_EPOCHS, VITRINE_CNN_EPOCHS

InputShape = tuple[int, int, int]

# The course's seed models: Keras' default batch size.
SEED_BATCH_SIZE = 32
SEED_LENET_LEARNING_RATE = 1e-3

# vitrine_cnn: every tunable number of the default architecture and its recipe, in one place.
VITRINE_CNN_WIDTH = 32
VITRINE_CNN_DROPOUT = 0.2
VITRINE_CNN_BATCH_SIZE = 128
VITRINE_CNN_PEAK_LEARNING_RATE = 3e-3
VITRINE_CNN_WEIGHT_DECAY = 5e-4
VITRINE_CNN_WARMUP_FRACTION = 1 / 6
VITRINE_CNN_LABEL_SMOOTHING = 0.1
VITRINE_CNN_TRANSLATION = 0.1
# Larger photos are downsampled to at most this side before the three stages, so compute stays sane on CPU.
VITRINE_CNN_STAGE_INPUT_SIDE = 32

# effnet_lite2: a head on EfficientNet-Lite2 pretrained on ImageNet, then its last blocks fine-tuned a little.
EFFNET_VARIANT = "lite2"
EFFNET_HEAD_DROPOUT = 0.3
EFFNET_HEAD_BATCH_SIZE = 64
EFFNET_HEAD_PEAK_LEARNING_RATE = 1e-3
EFFNET_HEAD_WEIGHT_DECAY = 1e-2
EFFNET_HEAD_WARMUP_FRACTION = 0.1
EFFNET_LABEL_SMOOTHING = 0.1
# Activations are cached at this layer's output; the blocks after it (19, 20 and the 1x1 convolution to 1280
# features) are fine-tuned. After block14_add (blocks 15-20) held-out accuracy was 1.3 pp higher, but a warm
# full retrain on 2 AVX2-only cores took 1,297 s against 389 s (README, Measured figures, Retraining).
EFFNET_FINE_TUNE_AFTER = "block18_add"
EFFNET_FINE_TUNE_EPOCHS = 3
EFFNET_FINE_TUNE_LEARNING_RATE = 2e-4
EFFNET_FINE_TUNE_WEIGHT_DECAY = 1e-2


class ArchitectureError(ValueError):
    """An architecture name we do not know; the message lists the choices."""


@dataclass(frozen=True)
class BackboneRecipe:
    """A pretrained backbone and how much of it training may adjust after the head has learned."""

    variant: str  # an EfficientNet-Lite variant, e.g. "lite0"
    fine_tune_after: str  # layer whose output is computed once per photo and cached
    fine_tune_epochs: int  # epochs over the layers after fine_tune_after (0: head only)
    fine_tune_learning_rate: float
    fine_tune_weight_decay: float


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained: batch size, default epochs, target encoding and optimizer.

    With a backbone, batch_size, epochs and make_optimizer are those of the head trained on cached features.
    """

    batch_size: int
    epochs: int
    one_hot: bool
    label_smoothing: float
    # Called with the total number of optimizer steps, so schedules can span the whole run.
    make_optimizer: Callable[[int], keras.optimizers.Optimizer]
    # The trained model averages its predictions for the image and its mirror image (test-time augmentation).
    mirror_average: bool = False
    # A pretrained backbone (train() then goes through classifier.ml.transfer), None to train from scratch.
    backbone: BackboneRecipe | None = None

    @property
    def image_side(self) -> int | None:
        """The photo side it sees best (its backbone's own resolution), None when any will do."""
        return variant_spec(self.backbone.variant).image_size if self.backbone else None


def _pixels_input(input_shape: InputShape) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    inputs = keras.Input(shape=input_shape, name="pixels")
    return inputs, layers.Rescaling(1.0 / 255, name="scale_to_unit")(inputs)


def _category_probabilities(x: keras.KerasTensor, *, num_classes: int) -> keras.KerasTensor:
    # float32 softmax: bfloat16 probabilities would round confidences near the 0.95 threshold.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="category")(x)


def _make_dense_model(
    *, num_classes: int, input_shape: InputShape, hidden_units: tuple[int, ...], name: str
) -> keras.Model:
    inputs, x = _pixels_input(input_shape)
    x = layers.Flatten()(x)
    for units in hidden_units:
        x = layers.Dense(units, activation="relu")(x)
    return keras.Model(inputs, _category_probabilities(x, num_classes=num_classes), name=name)


def make_seed_dense_model(num_classes: int, input_shape: InputShape) -> keras.Model:
    return _make_dense_model(
        num_classes=num_classes, input_shape=input_shape, hidden_units=(256,), name="seed_dense"
    )


def make_seed_dense_plus128_model(num_classes: int, input_shape: InputShape) -> keras.Model:
    return _make_dense_model(
        num_classes=num_classes, input_shape=input_shape, hidden_units=(256, 128), name="seed_dense_plus128"
    )


def make_seed_dense_plus128_64_model(num_classes: int, input_shape: InputShape) -> keras.Model:
    return _make_dense_model(
        num_classes=num_classes,
        input_shape=input_shape,
        hidden_units=(256, 128, 64),
        name="seed_dense_plus128_64",
    )


def make_seed_lenet_model(num_classes: int, input_shape: InputShape) -> keras.Model:
    inputs, x = _pixels_input(input_shape)
    x = layers.Conv2D(20, 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(50, 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(500, activation="relu")(x)
    return keras.Model(inputs, _category_probabilities(x, num_classes=num_classes), name="seed_lenet")


@tf.custom_gradient
def _conv_with_forward_input_gradient(images: tf.Tensor, kernel: tf.Tensor):
    outputs = tf.nn.conv2d(images, kernel, strides=1, padding="SAME")

    def gradients(output_gradients: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # A stride-1 "same" convolution's input gradient is the convolution of the output gradient with the
        # kernel turned half a turn and its input and output channels swapped.
        turned = tf.transpose(tf.reverse(kernel, axis=[0, 1]), perm=[0, 1, 3, 2])
        image_gradients = tf.nn.conv2d(output_gradients, turned, strides=1, padding="SAME")
        kernel_gradients = tf.raw_ops.Conv2DBackpropFilter(
            input=images,
            filter_sizes=tf.shape(kernel),
            out_backprop=output_gradients,
            strides=[1, 1, 1, 1],
            padding="SAME",
        )
        return image_gradients, kernel_gradients

    return outputs, gradients


@keras.saving.register_keras_serializable(package="vitrine")
class ForwardGradientConv2D(layers.Conv2D):
    """A stride-1, "same", odd-sized Conv2D whose input gradient is computed as a forward convolution.

    Same outputs and gradients as Conv2D. TensorFlow's own input-gradient kernel (Conv2DBackpropInput) took
    2 to 3 times as long as the forward convolution on an AVX2-only CPU for 64 and 128 channels; computed as
    a forward convolution, vitrine_cnn's training step took 27 to 35 % less time there (README, *Why CPUs
    without AVX-512 are slower*).
    """

    def __init__(self, filters: int, kernel_size: int, **kwargs) -> None:
        super().__init__(filters, kernel_size, **kwargs)
        if self.strides != (1, 1) or self.padding != "same" or self.dilation_rate != (1, 1):
            raise ValueError("ForwardGradientConv2D takes stride 1, dilation 1 and padding 'same' only")
        if any(side % 2 == 0 for side in self.kernel_size) or self.groups != 1:
            raise ValueError("ForwardGradientConv2D takes odd kernel sizes and one group only")
        if self.data_format != "channels_last":
            raise ValueError("ForwardGradientConv2D takes channels_last images only")

    def convolution_op(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        return _conv_with_forward_input_gradient(inputs, tf.convert_to_tensor(kernel))


def _conv_bn_relu(x: keras.KerasTensor, *, filters: int, strides: int = 1) -> keras.KerasTensor:
    # No conv bias: BatchNormalization's offset does that job.
    if strides == 1:
        x = ForwardGradientConv2D(filters, 3, padding="same", use_bias=False)(x)
    else:
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def make_vitrine_cnn_model(num_classes: int, input_shape: InputShape) -> keras.Model:
    inputs, x = _pixels_input(input_shape)
    x = layers.RandomFlip("horizontal", name="augment_flip")(x)
    x = layers.RandomTranslation(
        VITRINE_CNN_TRANSLATION, VITRINE_CNN_TRANSLATION, fill_mode="constant", name="augment_shift"
    )(x)
    side = min(input_shape[0], input_shape[1])
    if side > VITRINE_CNN_STAGE_INPUT_SIDE:
        x = _conv_bn_relu(x, filters=VITRINE_CNN_WIDTH, strides=2)
        side = math.ceil(side / 2)
    while side > VITRINE_CNN_STAGE_INPUT_SIDE:
        x = layers.MaxPooling2D(2, padding="same")(x)
        side = math.ceil(side / 2)
    for stage, filters in enumerate((VITRINE_CNN_WIDTH, 2 * VITRINE_CNN_WIDTH, 4 * VITRINE_CNN_WIDTH)):
        if stage:
            x = layers.MaxPooling2D(2, padding="same")(x)
        x = _conv_bn_relu(x, filters=filters)
        x = _conv_bn_relu(x, filters=filters)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(VITRINE_CNN_DROPOUT)(x)
    return keras.Model(inputs, _category_probabilities(x, num_classes=num_classes), name="vitrine_cnn")


@keras.saving.register_keras_serializable(package="vitrine")
class GreyToColour(layers.Layer):
    """Copies a grey channel into red, green and blue, for a backbone pretrained on colour photos."""

    def call(self, images: keras.KerasTensor) -> keras.KerasTensor:
        return keras.ops.repeat(images, 3, axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], 3)


def make_effnet_lite2_model(num_classes: int, input_shape: InputShape) -> keras.Model:
    """EfficientNet-Lite2 with its ImageNet weights, a dropout and a softmax; photos resized to 260 inside.

    The layers before the backbone form a straight chain (classifier.ml.transfer runs them on their own).
    """
    side = variant_spec(EFFNET_VARIANT).image_size
    inputs, x = _pixels_input(input_shape)
    if input_shape[-1] == 1:
        x = GreyToColour(name="grey_to_colour")(x)
    if tuple(input_shape[:2]) != (side, side):
        x = layers.Resizing(side, side, name="resize_for_backbone")(x)
    x = pretrained_efficientnet_lite(EFFNET_VARIANT, include_top=False, pixel_range=1.0)(x)
    x = layers.Dropout(EFFNET_HEAD_DROPOUT, name="head_dropout")(x)
    return keras.Model(inputs, _category_probabilities(x, num_classes=num_classes), name="effnet_lite2")


@keras.saving.register_keras_serializable(package="vitrine")
class HorizontalMirror(layers.Layer):
    """Flips images left to right, always: the mirror view that with_mirror_average() scores too."""

    def call(self, images: keras.KerasTensor) -> keras.KerasTensor:
        return keras.ops.flip(images, axis=2)


@keras.saving.register_keras_serializable(package="vitrine")
class SquareRoot(layers.Layer):
    """Element-wise square root of non-negative pooled features (power normalisation) for a linear head."""

    def call(self, features: keras.KerasTensor) -> keras.KerasTensor:
        return keras.ops.sqrt(features)


def with_mirror_average(model: keras.Model) -> keras.Model:
    """The trained model wrapped to average its probabilities over the image and its mirror image.

    Clothes look the same mirrored, so the two views' errors partly cancel (+0.3 to 0.4 pp on Fashion-MNIST).
    """
    inputs = keras.Input(shape=model.input_shape[1:], name="pixels")
    views = [model(inputs), model(HorizontalMirror(name="mirror")(inputs))]
    outputs = layers.Average(dtype="float32", name="category_mirror_average")(views)
    return keras.Model(inputs, outputs, name=model.name)


def _seed_adam(total_steps: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam()


def _seed_lenet_adam(total_steps: int) -> keras.optimizers.Optimizer:
    # Inverse-time decay: the learning rate falls to half of 1e-3 by the last step.
    schedule = keras.optimizers.schedules.InverseTimeDecay(
        SEED_LENET_LEARNING_RATE, decay_steps=max(1, total_steps), decay_rate=1.0
    )
    return keras.optimizers.Adam(learning_rate=schedule)


def _vitrine_cnn_adamw(total_steps: int) -> keras.optimizers.Optimizer:
    warmup_steps = max(1, round(total_steps * VITRINE_CNN_WARMUP_FRACTION))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=VITRINE_CNN_PEAK_LEARNING_RATE,
        warmup_steps=warmup_steps,
    )
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=VITRINE_CNN_WEIGHT_DECAY)


def _effnet_head_adamw(total_steps: int) -> keras.optimizers.Optimizer:
    warmup_steps = max(1, round(total_steps * EFFNET_HEAD_WARMUP_FRACTION))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=EFFNET_HEAD_PEAK_LEARNING_RATE,
        warmup_steps=warmup_steps,
    )
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=EFFNET_HEAD_WEIGHT_DECAY)


_SEED_DENSE_RECIPE = Recipe(
    batch_size=SEED_BATCH_SIZE,
    epochs=SEED_EPOCHS,
    one_hot=False,
    label_smoothing=0.0,
    make_optimizer=_seed_adam,
)

ARCHITECTURES: dict[str, tuple[Callable[[int, InputShape], keras.Model], Recipe]] = {
    "seed_dense": (make_seed_dense_model, _SEED_DENSE_RECIPE),
    "seed_dense_plus128": (make_seed_dense_plus128_model, _SEED_DENSE_RECIPE),
    "seed_dense_plus128_64": (make_seed_dense_plus128_64_model, _SEED_DENSE_RECIPE),
    "seed_lenet": (
        make_seed_lenet_model,
        Recipe(
            batch_size=SEED_BATCH_SIZE,
            epochs=SEED_EPOCHS,
            one_hot=True,
            label_smoothing=0.0,
            make_optimizer=_seed_lenet_adam,
        ),
    ),
    "vitrine_cnn": (
        make_vitrine_cnn_model,
        Recipe(
            batch_size=VITRINE_CNN_BATCH_SIZE,
            epochs=VITRINE_CNN_EPOCHS,
            one_hot=True,
            label_smoothing=VITRINE_CNN_LABEL_SMOOTHING,
            make_optimizer=_vitrine_cnn_adamw,
            mirror_average=True,
        ),
    ),
    "effnet_lite2": (
        make_effnet_lite2_model,
        Recipe(
            batch_size=EFFNET_HEAD_BATCH_SIZE,
            epochs=EFFNET_HEAD_EPOCHS,
            one_hot=True,
            label_smoothing=EFFNET_LABEL_SMOOTHING,
            make_optimizer=_effnet_head_adamw,
            # Mirror images train the model; averaging over them at serving did not help on clothing-small.
            mirror_average=False,
            backbone=BackboneRecipe(
                variant=EFFNET_VARIANT,
                fine_tune_after=EFFNET_FINE_TUNE_AFTER,
                fine_tune_epochs=EFFNET_FINE_TUNE_EPOCHS,
                fine_tune_learning_rate=EFFNET_FINE_TUNE_LEARNING_RATE,
                fine_tune_weight_decay=EFFNET_FINE_TUNE_WEIGHT_DECAY,
            ),
        ),
    ),
}
# Trained from scratch when an architecture's pretrained backbone is not installed.
FALLBACK_ARCH = "vitrine_cnn"
DEFAULT_ARCH = "vitrine_cnn"


def recipe_for(arch: str) -> Recipe:
    return ARCHITECTURES[_known(arch)][1]


def build_model(arch: str, *, num_classes: int, input_shape: InputShape) -> keras.Model:
    make_model, _ = ARCHITECTURES[_known(arch)]
    return make_model(num_classes, tuple(input_shape))


def _known(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise ArchitectureError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    return arch
