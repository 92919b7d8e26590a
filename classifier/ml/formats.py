"""The artifact format and the names both sides share, without TensorFlow.

Web processes (the admin, the API, /healthz) read model versions through this module; workers and training
write them through classifier.ml.artifact, which adds Keras on top of the same names.
"""

import hashlib
import json
import pathlib

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
# Out-of-distribution statistics beside the model (classifier.ml.ood), for artifacts that have them.
OOD_FILE = "ood.npz"
REQUIRED_METADATA_KEYS = ("class_names", "input_shape", "preprocessing", "architecture", "model_sha256")

# Written by classifier.ml.evaluate beside each model.
REPORT_JSON = "classification_report.json"
REPORT_TEXT = "classification_report.txt"
CONFUSION_JSON = "confusion_matrix.json"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "curves.png"
MISCLASSIFIED_PNG = "misclassified.png"
ARTIFACT_IMAGES = {
    "curves": CURVES_PNG,
    "confusion_matrix": CONFUSION_PNG,
    "misclassified": MISCLASSIFIED_PNG,
}

# Data sets known by name (classifier.ml.datasets); any other name is a photo folder.
BUILTIN_DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100")

# The course's seed models train this many epochs (the notebook's count); the others their own.
SEED_EPOCHS = 10
VITRINE_CNN_EPOCHS = 24
EFFNET_HEAD_EPOCHS = 30
# Every architecture classifier.ml.architectures builds, with the epochs it trains by default.
ARCHITECTURE_EPOCHS = {
    "seed_dense": SEED_EPOCHS,
    "seed_dense_plus128": SEED_EPOCHS,
    "seed_dense_plus128_64": SEED_EPOCHS,
    "seed_lenet": SEED_EPOCHS,
    "vitrine_cnn": VITRINE_CNN_EPOCHS,
    "effnet_lite2": EFFNET_HEAD_EPOCHS,
}


class ArtifactError(ValueError):
    """A model directory that cannot be served: missing files, bad metadata, checksum or category mismatch."""


def file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with pathlib.Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(path: pathlib.Path) -> dict:
    """metadata.json of the model directory `path`, with every required key; ArtifactError says why not."""
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


def format_duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
