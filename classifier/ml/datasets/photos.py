"""Photo folders (DIR/<class>/* or DIR/{train,validation,test}/<class>/*) and lists of labelled photo
files."""

import concurrent.futures
import hashlib
import logging
import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from classifier.ml.datasets.dataset import (
    SPLITS,
    Dataset,
    DatasetError,
    carve_count,
    check_fractions,
    make_dataset,
    stratified_take,
)
from classifier.ml.formats import BUILTIN_DATASETS
from classifier.ml.preprocess import ImageError, open_image, to_array

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _PhotoFile:
    path: pathlib.Path
    label: int


@dataclass(frozen=True)
class _DecodedPhoto:
    digest: str
    pixels: np.ndarray | None
    problem: str | None


def _visible_children(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(child for child in folder.iterdir() if not child.name.startswith("."))


def _class_folders(folder: pathlib.Path) -> list[pathlib.Path]:
    children = _visible_children(folder)
    classes = [child for child in children if child.is_dir()]
    if not classes:
        what = "empty folder" if not children else "no class subfolders (expected DIR/<class>/*.jpg)"
        raise DatasetError(f"{folder}: {what}")
    return classes


def _photo_files(class_folder: pathlib.Path, *, label: int) -> list[_PhotoFile]:
    return [
        _PhotoFile(path=path, label=label)
        for path in sorted(class_folder.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(class_folder).parts)
    ]


def _decode(photo: _PhotoFile, *, root: pathlib.Path, input_shape: tuple[int, int, int]) -> _DecodedPhoto:
    name = str(photo.path.relative_to(root))
    try:
        data = photo.path.read_bytes()
    except OSError as exc:
        return _DecodedPhoto(digest="", pixels=None, problem=f"{name}: cannot read ({exc.strerror or exc})")
    digest = hashlib.sha256(data).hexdigest()
    try:
        pixels = to_array(open_image(data, name=name), input_shape=input_shape, style="photo")
    except ImageError as exc:
        return _DecodedPhoto(digest=digest, pixels=None, problem=str(exc))
    return _DecodedPhoto(digest=digest, pixels=pixels, problem=None)


def resolve_folder(name_or_path: str, *, datasets_dir: pathlib.Path | None) -> pathlib.Path:
    path = pathlib.Path(name_or_path).expanduser()
    in_datasets_dir = datasets_dir is not None and (datasets_dir / name_or_path).exists()
    if not path.exists() and not path.is_absolute() and in_datasets_dir:
        path = datasets_dir / name_or_path
    if not path.exists():
        raise DatasetError(
            f"no such data set or folder: {name_or_path} (built-in data sets: {', '.join(BUILTIN_DATASETS)})"
        )
    if not path.is_dir():
        raise DatasetError(f"{path}: not a folder (expected a folder of photos DIR/<class>/*.jpg)")
    return path.resolve()


def _decode_once(
    photos: Sequence[_PhotoFile],
    *,
    root: pathlib.Path,
    input_shape: tuple[int, int, int],
    pool: concurrent.futures.Executor,
    first_seen: dict[str, str],
    skipped: list[str],
    warn: Callable[[str], None],
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes photos into (pixels, labels), skipping unreadable ones and any photo already in first_seen
    (by content hash); skipped names are appended to `skipped`, each with a warning."""
    decoded = pool.map(lambda photo: _decode(photo, root=root, input_shape=input_shape), photos)
    pixels, labels = [], []
    for photo, result in zip(photos, decoded, strict=True):
        name = str(photo.path.relative_to(root))
        if result.problem is not None:
            warn(f"skipped {result.problem}")
            skipped.append(name)
        elif result.digest in first_seen:
            warn(f"skipped {name}: same photo as {first_seen[result.digest]}")
            skipped.append(name)
        else:
            first_seen[result.digest] = name
            pixels.append(result.pixels)
            labels.append(photo.label)
    x = np.stack(pixels) if pixels else np.zeros((0, *input_shape), dtype=np.uint8)
    return x, np.asarray(labels, dtype=np.int64)


def _carve_missing_splits(
    kept: dict[str, tuple[np.ndarray, np.ndarray]], *, seed: int, val_fraction: float, test_fraction: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """[train, validation, test]: the splits in `kept`, the test and then the validation split carved from
    train (stratified, seeded) where missing."""
    x_train, y_train = kept["train"]
    splits = dict(kept)
    rng = np.random.default_rng(seed)
    if "test" not in splits:
        test_index, train_index = stratified_take(
            y_train, count=carve_count(len(y_train), test_fraction), rng=rng
        )
        splits["test"] = (x_train[test_index], y_train[test_index])
        x_train, y_train = x_train[train_index], y_train[train_index]
    if "validation" not in splits:
        # The share of all the photos, not of what remains after carving the test split.
        share = val_fraction / (1.0 - test_fraction) if "test" not in kept else val_fraction
        val_index, train_index = stratified_take(y_train, count=carve_count(len(y_train), share), rng=rng)
        splits["validation"] = (x_train[val_index], y_train[val_index])
        x_train, y_train = x_train[train_index], y_train[train_index]
    return [(x_train, y_train), splits["validation"], splits["test"]]


def load_folder(
    folder: pathlib.Path,
    *,
    image_size: tuple[int, int],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    warn: Callable[[str], None],
) -> Dataset:
    split_folders = {split: folder / split for split in SPLITS if (folder / split).is_dir()}
    if split_folders and "train" not in split_folders:
        raise DatasetError(f"{folder}: has {'/, '.join(split_folders)}/ but no train/ folder")
    train_root = split_folders.get("train", folder)
    class_names = [path.name for path in _class_folders(train_root)]
    if len(class_names) < 2:
        raise DatasetError(f"{train_root}: only one class ({class_names[0]}); a classifier needs two or more")

    files_by_split: dict[str, list[_PhotoFile]] = {}
    for split, split_root in (split_folders or {"train": folder}).items():
        for class_folder in _class_folders(split_root):
            if class_folder.name not in class_names:
                raise DatasetError(f"{class_folder}: class {class_folder.name!r} is not in {train_root}")
        files_by_split[split] = [
            photo
            for label, class_name in enumerate(class_names)
            if (split_root / class_name).is_dir()
            for photo in _photo_files(split_root / class_name, label=label)
        ]
    if not any(files_by_split.values()):
        raise DatasetError(f"{folder}: no photos in any class folder")

    input_shape = (int(image_size[0]), int(image_size[1]), 3)
    skipped: list[str] = []
    first_seen: dict[str, str] = {}
    kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        # Evaluation splits claim duplicate photos first, so a photo seen in training never scores a test.
        for split in sorted(files_by_split, key=lambda split: -SPLITS.index(split)):
            kept[split] = _decode_once(
                files_by_split[split],
                root=folder,
                input_shape=input_shape,
                pool=pool,
                first_seen=first_seen,
                skipped=skipped,
                warn=warn,
            )

    x_train, y_train = kept["train"]
    for label, class_name in enumerate(class_names):
        if not np.any(y_train == label):
            raise DatasetError(f"{train_root / class_name}: class {class_name!r} has no readable photos")

    return make_dataset(
        name=folder.name,
        class_names=class_names,
        style="photo",
        splits=_carve_missing_splits(kept, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction),
        skipped=skipped,
    )


def load_labelled_files(
    files: Sequence[tuple[str | os.PathLike, str]],
    *,
    image_size: tuple[int, int] = (96, 96),
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    warn: Callable[[str], None] | None = None,
    name: str = "labelled photos",
) -> Dataset:
    """Photos each given with its class name (a shop's reviewed products), split as a folder is.

    The class names are the distinct labels, sorted. Test and validation splits are carved from all photos,
    stratified and seeded; unreadable files are skipped with `warn(...)` and listed in `.skipped`, and a photo
    given twice (same file bytes, whatever its label) is kept once, the first time. Raises DatasetError with
    fewer than two classes or a class left without a readable photo.
    """
    check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
    warn = warn or logger.warning
    if not files:
        raise DatasetError(f"{name}: no photos given")
    class_names = sorted({str(label) for _, label in files})
    if len(class_names) < 2:
        raise DatasetError(f"{name}: only one class ({class_names[0]}); a classifier needs two or more")
    label_of = {class_name: index for index, class_name in enumerate(class_names)}
    photos = [
        _PhotoFile(path=pathlib.Path(path).resolve(), label=label_of[str(label)]) for path, label in files
    ]
    root = pathlib.Path(os.path.commonpath([photo.path.parent for photo in photos]))
    input_shape = (int(image_size[0]), int(image_size[1]), 3)

    skipped: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        x_all, y_all = _decode_once(
            photos, root=root, input_shape=input_shape, pool=pool, first_seen={}, skipped=skipped, warn=warn
        )
    for label, class_name in enumerate(class_names):
        if not np.any(y_all == label):
            raise DatasetError(f"{name}: class {class_name!r} has no readable photos")

    return make_dataset(
        name=name,
        class_names=class_names,
        style="photo",
        splits=_carve_missing_splits(
            {"train": (x_all, y_all)}, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
        ),
        skipped=skipped,
    )
