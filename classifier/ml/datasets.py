"""Data sets a classifier trains on: the built-in benchmarks and any folder of product photos.

`load_dataset("fashion-mnist", datasets_dir=...)` reads the local IDX files under `datasets_dir`;
`load_dataset("mnist" | "cifar10" | "cifar100")` reads local IDX files when present (MNIST) and otherwise
asks `keras.datasets`, which reuses its own cache (`$KERAS_HOME/datasets`, default `~/.keras/datasets`) and
downloads only on a cache miss. A failed download becomes a one-line DatasetError; a stalled connection
gives up after DOWNLOAD_TIMEOUT_S. With `offline=True` no download is attempted at all: only local files
and the Keras cache are used.

`load_dataset(DIR)` reads a photo folder `DIR/<class>/*` or `DIR/{train,validation,test}/<class>/*`.
"""

import concurrent.futures
import gzip
import hashlib
import json
import logging
import os
import pathlib
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from classifier.ml.builtin_classes import BUILTIN_CLASSES
from classifier.ml.formats import BUILTIN_DATASETS
from classifier.ml.preprocess import ImageError, open_image, to_array

logger = logging.getLogger(__name__)

BUILTIN = BUILTIN_DATASETS
SPLITS = ("train", "validation", "test")
DOWNLOAD_TIMEOUT_S = 30.0

# Files keras.datasets keeps in its cache once downloaded: present means load_data() needs no network.
KERAS_CACHE_FILES = {
    "fashion-mnist": "fashion-mnist/train-images-idx3-ubyte.gz",
    "mnist": "mnist.npz",
    "cifar10": "cifar-10-batches-py-target_archive",
    "cifar100": "cifar-100-python-target_archive",
}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX type byte -> big-endian element type, as in the format's definition (yann.lecun.com/exdb/mnist).
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetError(ValueError):
    """A data set that cannot be loaded; the message is one readable line."""


def _fingerprint(class_names: Sequence[str], splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> str:
    digest = hashlib.sha256(json.dumps(list(class_names)).encode())
    for pixels, labels in splits:
        digest.update(json.dumps([list(pixels.shape), str(pixels.dtype), list(labels.shape)]).encode())
        digest.update(np.ascontiguousarray(pixels).data)
        digest.update(np.ascontiguousarray(labels, dtype="<i8").data)
    return digest.hexdigest()


def _stratified_order(labels: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """All indices ordered so that every prefix holds each class in proportion to its size."""
    position_in_class = np.zeros(len(labels), dtype=np.float64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        position_in_class[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((rng.random(len(labels)), position_in_class))


def _stratified_take(
    labels: np.ndarray, *, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(taken, kept) index arrays, each sorted; `count` taken in proportion to the classes."""
    order = _stratified_order(labels, rng=rng)
    return np.sort(order[:count]), np.sort(order[count:])


def _carve_count(total: int, fraction: float) -> int:
    if fraction <= 0 or total < 2:
        return 0
    return min(total - 1, max(1, round(total * fraction)))


@dataclass(frozen=True, eq=False)
class Dataset:
    """Pixels (uint8 NHWC) and int64 labels for train / validation / test, with the class names."""

    name: str
    class_names: list[str]
    style: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    fingerprint: str
    skipped: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.x_train.shape[1:]
        return int(height), int(width), int(channels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, *, per_split: int, seed: int = 0) -> "Dataset":
        """At most `per_split` samples of each split, classes kept in proportion, seeded."""
        rng = np.random.default_rng(seed)
        picked = []
        for pixels, labels in (
            (self.x_train, self.y_train),
            (self.x_val, self.y_val),
            (self.x_test, self.y_test),
        ):
            taken, _ = _stratified_take(labels, count=min(per_split, len(labels)), rng=rng)
            picked.append((pixels[taken], labels[taken]))
        return _make_dataset(
            name=f"{self.name} (subset of {per_split} per split)",
            class_names=self.class_names,
            style=self.style,
            splits=picked,
            skipped=self.skipped,
        )


def _make_dataset(
    *,
    name: str,
    class_names: list[str],
    style: str,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    skipped: Sequence[str] = (),
) -> Dataset:
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        (pixels, labels.astype(np.int64).reshape(-1)) for pixels, labels in splits
    )
    return Dataset(
        name=name,
        class_names=list(class_names),
        style=style,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        fingerprint=_fingerprint(class_names, [(x_train, y_train), (x_val, y_val), (x_test, y_test)]),
        skipped=tuple(skipped),
    )


def load_idx(path: os.PathLike) -> np.ndarray:
    """An IDX file (the MNIST / Fashion-MNIST format), gzipped or raw, checked against its own header."""
    path = pathlib.Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"no such IDX file: {path}") from None
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read IDX file ({' '.join(str(exc).split())})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DatasetError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'none'})")
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_size:
        raise DatasetError(f"{path}: IDX header truncated or without dimensions")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    element = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * element.itemsize
    if len(raw) - header_size != expected:
        raise DatasetError(
            f"{path}: IDX size mismatch (header says {shape} = {expected:,} bytes, "
            f"file has {len(raw) - header_size:,})"
        )
    values = np.frombuffer(raw, dtype=element, offset=header_size).reshape(shape)
    return values.astype(element.newbyteorder("="))


def _idx_path(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_folder(folder: pathlib.Path) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """[(x_train, y_train), (x_test, y_test)] from the four IDX files, or None when any is missing."""
    paths = {stem: _idx_path(folder, stem) for pair in IDX_FILES.values() for stem in pair}
    if any(path is None for path in paths.values()):
        return None
    splits = []
    for images_stem, labels_stem in IDX_FILES.values():
        images, labels = load_idx(paths[images_stem]), load_idx(paths[labels_stem])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"{folder}: {images_stem} {images.shape} and {labels_stem} {labels.shape} do not match"
            )
        splits.append((images, labels))
    return splits


def _keras_cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "datasets"


def _load_with_keras(
    name: str, *, looked_in: pathlib.Path | None, offline: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    not_here = f"{name}: not found locally in {looked_in} or the Keras cache {_keras_cache_dir()}"
    if offline and not (_keras_cache_dir() / KERAS_CACHE_FILES[name]).exists():
        raise DatasetError(f"{not_here}, and downloads are off (offline)")
    import keras  # heavy (TensorFlow); only needed when the local files are missing

    loaders = {
        "fashion-mnist": keras.datasets.fashion_mnist,
        "mnist": keras.datasets.mnist,
        "cifar10": keras.datasets.cifar10,
        "cifar100": keras.datasets.cifar100,
    }
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        (x_train, y_train), (x_test, y_test) = loaders[name].load_data()
    except Exception as exc:  # keras.utils.get_file raises a bare Exception on URL failures
        reason = " ".join(str(exc).split())
        raise DatasetError(f"{not_here}, and the download failed (offline?): {reason}") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return [(x_train, y_train), (x_test, y_test)]


def _load_builtin(
    name: str, *, datasets_dir: pathlib.Path | None, seed: int, val_fraction: float, offline: bool
) -> Dataset:
    local = None if datasets_dir is None else datasets_dir / name
    splits = _load_idx_folder(local) if local is not None and name in ("fashion-mnist", "mnist") else None
    if splits is None:
        splits = _load_with_keras(name, looked_in=local, offline=offline)
    (x_train, y_train), (x_test, y_test) = (
        (pixels[..., np.newaxis] if pixels.ndim == 3 else pixels, labels.reshape(-1).astype(np.int64))
        for pixels, labels in splits
    )
    rng = np.random.default_rng(seed)
    val_index, train_index = _stratified_take(
        y_train, count=_carve_count(len(y_train), val_fraction), rng=rng
    )
    return _make_dataset(
        name=name,
        class_names=BUILTIN_CLASSES[name],
        style="fashion-mnist" if name in ("fashion-mnist", "mnist") else "photo",
        splits=[
            (x_train[train_index], y_train[train_index]),
            (x_train[val_index], y_train[val_index]),
            (x_test, y_test),
        ],
    )


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


def _resolve_folder(name_or_path: str, *, datasets_dir: pathlib.Path | None) -> pathlib.Path:
    path = pathlib.Path(name_or_path).expanduser()
    in_datasets_dir = datasets_dir is not None and (datasets_dir / name_or_path).exists()
    if not path.exists() and not path.is_absolute() and in_datasets_dir:
        path = datasets_dir / name_or_path
    if not path.exists():
        raise DatasetError(
            f"no such data set or folder: {name_or_path} (built-in data sets: {', '.join(BUILTIN)})"
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


def _load_folder(
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

    rng = np.random.default_rng(seed)
    if "test" not in kept:
        test_index, train_index = _stratified_take(
            y_train, count=_carve_count(len(y_train), test_fraction), rng=rng
        )
        kept["test"] = (x_train[test_index], y_train[test_index])
        x_train, y_train = x_train[train_index], y_train[train_index]
    if "validation" not in kept:
        # The share of the whole folder, not of what remains after carving the test split.
        share = val_fraction / (1.0 - test_fraction) if "test" not in split_folders else val_fraction
        val_index, train_index = _stratified_take(y_train, count=_carve_count(len(y_train), share), rng=rng)
        kept["validation"] = (x_train[val_index], y_train[val_index])
        x_train, y_train = x_train[train_index], y_train[train_index]
    return _make_dataset(
        name=folder.name,
        class_names=class_names,
        style="photo",
        splits=[(x_train, y_train), kept["validation"], kept["test"]],
        skipped=skipped,
    )


def _check_fractions(*, val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(
            f"validation and test fractions must be in [0, 1) and sum under 1, got {val_fraction} and "
            f"{test_fraction}"
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
    _check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
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

    rng = np.random.default_rng(seed)
    test_index, rest_index = _stratified_take(y_all, count=_carve_count(len(y_all), test_fraction), rng=rng)
    x_rest, y_rest = x_all[rest_index], y_all[rest_index]
    # The share of all photos, not of what remains after carving the test split.
    share = val_fraction / (1.0 - test_fraction)
    val_index, train_index = _stratified_take(y_rest, count=_carve_count(len(y_rest), share), rng=rng)
    return _make_dataset(
        name=name,
        class_names=class_names,
        style="photo",
        splits=[
            (x_rest[train_index], y_rest[train_index]),
            (x_rest[val_index], y_rest[val_index]),
            (x_all[test_index], y_all[test_index]),
        ],
        skipped=skipped,
    )


def load_dataset(
    name_or_path: str,
    *,
    datasets_dir: pathlib.Path | None = None,
    offline: bool = False,
    image_size: tuple[int, int] = (96, 96),
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    warn: Callable[[str], None] | None = None,
) -> Dataset:
    """A built-in data set by name (BUILTIN) or a photo folder by path (or by name under `datasets_dir`).

    Built-ins keep their own test split; validation is a stratified, seeded `val_fraction` of train.
    A photo folder uses its train/, validation/, test/ subfolders when present and carves any missing
    evaluation split from train (stratified, seeded); a plain DIR/<class>/* folder is split the same way.
    Photos go through preprocess.open_image + to_array(style="photo") at `image_size`; unreadable files are
    skipped with `warn(...)` (default: a logging warning) and listed in `.skipped`, and a photo found twice
    (same file bytes) is kept once, in the evaluation split. Raises DatasetError on anything unusable.
    """
    _check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
    datasets_dir = None if datasets_dir is None else pathlib.Path(datasets_dir)
    if name_or_path in BUILTIN:
        return _load_builtin(
            name_or_path, datasets_dir=datasets_dir, seed=seed, val_fraction=val_fraction, offline=offline
        )
    return _load_folder(
        _resolve_folder(name_or_path, datasets_dir=datasets_dir),
        image_size=image_size,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        warn=warn or logger.warning,
    )
