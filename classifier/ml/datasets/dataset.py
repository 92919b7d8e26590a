"""The Dataset a classifier trains on, and the seeded, stratified splitting every loader shares."""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "validation", "test")


class DatasetError(ValueError):
    """A data set that cannot be loaded; the message is one readable line."""


def dataset_fingerprint(class_names: Sequence[str], splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> str:
    digest = hashlib.sha256(json.dumps(list(class_names)).encode())
    for pixels, labels in splits:
        digest.update(json.dumps([list(pixels.shape), str(pixels.dtype), list(labels.shape)]).encode())
        digest.update(np.ascontiguousarray(pixels).data)
        digest.update(np.ascontiguousarray(labels, dtype="<i8").data)
    return digest.hexdigest()


def stratified_order(labels: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """All indices ordered so that every prefix holds each class in proportion to its size."""
    position_in_class = np.zeros(len(labels), dtype=np.float64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        position_in_class[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((rng.random(len(labels)), position_in_class))


def stratified_take(
    labels: np.ndarray, *, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(taken, kept) index arrays, each sorted; `count` taken in proportion to the classes."""
    order = stratified_order(labels, rng=rng)
    return np.sort(order[:count]), np.sort(order[count:])


def carve_count(total: int, fraction: float) -> int:
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
            taken, _ = stratified_take(labels, count=min(per_split, len(labels)), rng=rng)
            picked.append((pixels[taken], labels[taken]))
        return make_dataset(
            name=f"{self.name} (subset of {per_split} per split)",
            class_names=self.class_names,
            style=self.style,
            splits=picked,
            skipped=self.skipped,
        )


def make_dataset(
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
        fingerprint=dataset_fingerprint(class_names, [(x_train, y_train), (x_val, y_val), (x_test, y_test)]),
        skipped=tuple(skipped),
    )


def check_fractions(*, val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(
            f"validation and test fractions must be in [0, 1) and sum under 1, got {val_fraction} and "
            f"{test_fraction}"
        )
