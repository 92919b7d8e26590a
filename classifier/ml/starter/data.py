"""The photos the starter head learns from: clothing-small's train/ and validation/, identified by content."""

import hashlib
import pathlib
from dataclasses import dataclass

from classifier.ml.starter import StarterError

DATASET_NAME = "clothing-small"
DATASET_SOURCE = "alexeygrigorev/clothing-dataset-small"
DATASET_LICENCE = "CC0 1.0 Universal"
TRAIN, VALIDATION = "train", "validation"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Photo:
    path: pathlib.Path
    label: int
    digest: str  # sha256 of the file's bytes


@dataclass(frozen=True)
class StarterData:
    class_names: list[str]
    train: list[Photo]
    validation: list[Photo]
    skipped: list[str]  # duplicates, as "split/class/file"

    @property
    def fingerprint(self) -> str:
        """sha256 over the sorted "split class sha256" lines of every photo kept."""
        lines = sorted(
            f"{split} {self.class_names[photo.label]} {photo.digest}"
            for split, photos in ((TRAIN, self.train), (VALIDATION, self.validation))
            for photo in photos
        )
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _photos(folder: pathlib.Path, *, class_names: list[str]) -> list[Photo]:
    photos = []
    for label, class_name in enumerate(class_names):
        for path in sorted((folder / class_name).iterdir()):
            if path.suffix.lower() in PHOTO_SUFFIXES and not path.name.startswith("."):
                photos.append(
                    Photo(path=path, label=label, digest=hashlib.sha256(path.read_bytes()).hexdigest())
                )
    return photos


def load_starter_data(datasets_dir: pathlib.Path) -> StarterData:
    """clothing-small's photos with their content hashes; a photo in both splits (same bytes) stays only in
    validation, and a photo twice in one split is kept once."""
    root = pathlib.Path(datasets_dir) / DATASET_NAME
    if not (root / TRAIN).is_dir() or not (root / VALIDATION).is_dir():
        raise StarterError(f"{root}: expected {TRAIN}/ and {VALIDATION}/ class folders (--datasets-dir)")
    class_names = sorted(path.name for path in (root / TRAIN).iterdir() if path.is_dir())
    seen: set[str] = set()
    skipped: list[str] = []
    kept: dict[str, list[Photo]] = {}
    # Validation claims a duplicated photo first, so it never scores a photo the head learned from.
    for split in (VALIDATION, TRAIN):
        kept[split] = []
        for photo in _photos(root / split, class_names=class_names):
            if photo.digest in seen:
                skipped.append(str(photo.path.relative_to(root)))
                continue
            seen.add(photo.digest)
            kept[split].append(photo)
    return StarterData(
        class_names=class_names, train=kept[TRAIN], validation=kept[VALIDATION], skipped=sorted(skipped)
    )
