"""Data sets a classifier trains on: the built-in benchmarks and any folder of product photos.

`load_dataset("fashion-mnist", datasets_dir=...)` reads the local IDX files under `datasets_dir`;
`load_dataset("mnist" | "cifar10" | "cifar100")` reads local IDX files when present (MNIST) and otherwise
asks `keras.datasets`, which reuses its own cache (`$KERAS_HOME/datasets`, default `~/.keras/datasets`) and
downloads only on a cache miss. A failed download becomes a one-line DatasetError; a stalled connection
gives up after DOWNLOAD_TIMEOUT_S. With `offline=True` no download is attempted at all: only local files
and the Keras cache are used (`builtin`).

`load_dataset(DIR)` reads a photo folder `DIR/<class>/*` or `DIR/{train,validation,test}/<class>/*`, and
`load_labelled_files` a list of (photo, class name) pairs (`photos`). Both give a `Dataset` (`dataset`).
"""

import logging
import pathlib
from collections.abc import Callable

from classifier.ml.datasets.builtin import KERAS_CACHE_FILES, load_builtin, load_idx
from classifier.ml.datasets.dataset import Dataset, DatasetError, check_fractions
from classifier.ml.datasets.photos import load_folder, load_labelled_files, resolve_folder
from classifier.ml.formats import BUILTIN_DATASETS

__all__ = ["KERAS_CACHE_FILES", "Dataset", "DatasetError", "load_dataset", "load_idx", "load_labelled_files"]

logger = logging.getLogger(__name__)


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
    """A built-in data set by name (BUILTIN_DATASETS) or a photo folder by path (or by name under
    `datasets_dir`).

    Built-ins keep their own test split; validation is a stratified, seeded `val_fraction` of train.
    A photo folder uses its train/, validation/, test/ subfolders when present and carves any missing
    evaluation split from train (stratified, seeded); a plain DIR/<class>/* folder is split the same way.
    Photos go through preprocess.open_image + to_array(style="photo") at `image_size`; unreadable files are
    skipped with `warn(...)` (default: a logging warning) and listed in `.skipped`, and a photo found twice
    (same file bytes) is kept once, in the evaluation split. Raises DatasetError on anything unusable.
    """
    check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
    datasets_dir = None if datasets_dir is None else pathlib.Path(datasets_dir)
    if name_or_path in BUILTIN_DATASETS:
        return load_builtin(
            name_or_path, datasets_dir=datasets_dir, seed=seed, val_fraction=val_fraction, offline=offline
        )
    return load_folder(
        resolve_folder(name_or_path, datasets_dir=datasets_dir),
        image_size=image_size,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        warn=warn or logger.warning,
    )
