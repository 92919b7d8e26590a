"""A trained model on disk: one directory with model.keras, metadata.json and the evaluation files."""

import json
import pathlib
from dataclasses import dataclass

import keras

# Registers our custom layers, so any artifact loads wherever this module is used.
from classifier.ml import architectures  # noqa: F401
from classifier.ml.formats import METADATA_FILE, MODEL_FILE, ArtifactError, file_sha256, read_metadata


@dataclass(frozen=True)
class Artifact:
    path: pathlib.Path
    model: keras.Model
    metadata: dict

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])


def save_artifact(*, out_dir: pathlib.Path, model: keras.Model, metadata: dict) -> pathlib.Path:
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    model.save(model_path)
    metadata = {**metadata, "model_sha256": file_sha256(model_path)}
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return out_dir


def load_artifact(path: pathlib.Path, *, expected_num_classes: int | None = None) -> Artifact:
    path = pathlib.Path(path)
    metadata = read_metadata(path)
    num_classes = len(metadata["class_names"])
    if expected_num_classes is not None and num_classes != expected_num_classes:
        raise ArtifactError(f"{path}: artifact has {num_classes} classes, expected {expected_num_classes}")
    model_path = path / MODEL_FILE
    if not model_path.is_file():
        raise ArtifactError(f"{path}: {MODEL_FILE} is missing")
    if file_sha256(model_path) != metadata["model_sha256"]:
        raise ArtifactError(f"{model_path}: checksum does not match metadata (file changed or corrupt)")
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as error:  # Keras raises many types for a damaged archive; all mean "cannot serve this".
        raise ArtifactError(f"{model_path}: cannot load model ({error})") from error
    outputs = model.outputs[0].shape[-1]
    if outputs != num_classes:
        raise ArtifactError(f"{path}: model predicts {outputs} classes but metadata names {num_classes}")
    return Artifact(path=path, model=model, metadata=metadata)
