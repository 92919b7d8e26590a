"""The built-in benchmarks (Fashion-MNIST, MNIST, CIFAR-10/100): local IDX files first, else
keras.datasets."""

import gzip
import os
import pathlib
import socket

import numpy as np

from classifier.ml.builtin_classes import BUILTIN_CLASSES
from classifier.ml.datasets.dataset import Dataset, DatasetError, carve_count, make_dataset, stratified_take

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


def load_builtin(
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
    val_index, train_index = stratified_take(y_train, count=carve_count(len(y_train), val_fraction), rng=rng)
    return make_dataset(
        name=name,
        class_names=BUILTIN_CLASSES[name],
        style="fashion-mnist" if name in ("fashion-mnist", "mnist") else "photo",
        splits=[
            (x_train[train_index], y_train[train_index]),
            (x_train[val_index], y_train[val_index]),
            (x_test, y_test),
        ],
    )
