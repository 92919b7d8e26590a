"""A trained model on disk: one directory with model.keras, metadata.json and the evaluation files."""

import hashlib
import json
import pathlib
from dataclasses import dataclass

import keras

# Registers our custom layers, so any artifact loads wherever this module is used.
from classifier.ml import architectures  # noqa: F401

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
REQUIRED_METADATA_KEYS = ("class_names", "input_shape", "preprocessing", "architecture", "model_sha256")


class ArtifactError(ValueError):
    """A model directory that cannot be served: missing files, bad metadata, checksum or category mismatch."""


@dataclass(frozen=True)
class Artifact:
    path: pathlib.Path
    model: keras.Model
    metadata: dict

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])


def file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_artifact(*, out_dir: pathlib.Path, model: keras.Model, metadata: dict) -> pathlib.Path:
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    model.save(model_path)
    metadata = {**metadata, "model_sha256": file_sha256(model_path)}
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return out_dir


def read_metadata(path: pathlib.Path) -> dict:
    path = pathlib.Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such model directory")
    metadata_path = path / METADATA_FILE
    if not metadata_path.is_file():
        raise ArtifactError(f"{path}: not a model directory ({METADATA_FILE} is missing)")
    try:
        metadata = json.loads(metadata_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{metadata_path}: unreadable metadata ({error})") from error
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{metadata_path}: unreadable metadata (expected a JSON object)")
    missing = [key for key in REQUIRED_METADATA_KEYS if key not in metadata]
    if missing:
        raise ArtifactError(f"{metadata_path}: metadata lacks {', '.join(missing)}")
    return metadata


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
