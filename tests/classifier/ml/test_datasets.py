"""Data sets load with the right shapes, splits and class names, and unusable input gets a one-line error."""

import gzip
import logging
import os
import pathlib
import shutil
import socket
import struct
import time

import numpy as np
import pytest
from django.conf import settings
from PIL import Image

from classifier.ml.builtin_classes import FASHION_MNIST_CLASSES
from classifier.ml.datasets import (
    KERAS_CACHE_FILES,
    DatasetError,
    load_dataset,
    load_idx,
)

from .conftest import PHOTOS_PER_CLASS, SHAPE_CLASSES, write_shape_photos

SMALL = (32, 32)


def pixel_rows(pixels: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in pixels}


def write_idx(path: pathlib.Path, values: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    content = header + values.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)


def test_shared_fashion_mnist_idx_files_have_the_published_shapes(fashion_mnist_dir) -> None:
    train_images = load_idx(fashion_mnist_dir / "train-images-idx3-ubyte.gz")
    train_labels = load_idx(fashion_mnist_dir / "train-labels-idx1-ubyte.gz")
    test_images = load_idx(fashion_mnist_dir / "t10k-images-idx3-ubyte.gz")
    test_labels = load_idx(fashion_mnist_dir / "t10k-labels-idx1-ubyte.gz")

    assert train_images.shape == (60_000, 28, 28) and train_images.dtype == np.uint8
    assert train_labels.shape == (60_000,)
    assert test_images.shape == (10_000, 28, 28)
    assert test_labels.shape == (10_000,)
    assert np.bincount(train_labels).tolist() == [6_000] * 10
    assert np.bincount(test_labels).tolist() == [1_000] * 10


def test_idx_reads_raw_and_gzipped_files_alike(tmp_path) -> None:
    values = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "raw-idx3-ubyte", values)
    write_idx(tmp_path / "packed-idx3-ubyte.gz", values)

    assert np.array_equal(load_idx(tmp_path / "raw-idx3-ubyte"), values)
    assert np.array_equal(load_idx(tmp_path / "packed-idx3-ubyte.gz"), values)


def test_idx_with_bad_magic_wrong_size_or_missing_is_refused(tmp_path) -> None:
    values = np.zeros((2, 3, 4), dtype=np.uint8)
    write_idx(tmp_path / "good-idx3-ubyte", values)
    content = (tmp_path / "good-idx3-ubyte").read_bytes()
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + content[4:])
    (tmp_path / "short-idx3-ubyte").write_bytes(content[:-5])
    (tmp_path / "broken-idx3-ubyte.gz").write_bytes(b"not gzip at all")

    with pytest.raises(DatasetError, match="not an IDX file"):
        load_idx(tmp_path / "photo.jpg")
    with pytest.raises(DatasetError, match=r"IDX size mismatch \(header says \(2, 3, 4\)"):
        load_idx(tmp_path / "short-idx3-ubyte")
    with pytest.raises(DatasetError, match="cannot read IDX file"):
        load_idx(tmp_path / "broken-idx3-ubyte.gz")
    with pytest.raises(DatasetError, match="no such IDX file"):
        load_idx(tmp_path / "absent-idx3-ubyte.gz")


def test_fashion_mnist_loads_from_local_files_with_a_stratified_validation_split(fashion_mnist_dir) -> None:
    fashion = load_dataset("fashion-mnist", datasets_dir=fashion_mnist_dir.parent)

    assert fashion.class_names == FASHION_MNIST_CLASSES
    assert fashion.style == "fashion-mnist"
    assert fashion.input_shape == (28, 28, 1) and fashion.num_classes == 10
    assert (len(fashion.y_train), len(fashion.y_val), len(fashion.y_test)) == (54_000, 6_000, 10_000)
    assert np.bincount(fashion.y_val).tolist() == [600] * 10
    assert fashion.y_train.dtype == np.int64 and fashion.x_train.dtype == np.uint8
    assert not pixel_rows(fashion.x_val.reshape(6_000, -1)[:500]) & pixel_rows(
        fashion.x_train.reshape(54_000, -1)[:5_000]
    )


def test_datasets_dir_comes_from_the_environment_else_shared_beside_the_repository() -> None:
    expected = os.environ.get("VITRINE_DATASETS_DIR") or (
        pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
    )
    assert pathlib.Path(settings.VITRINE_DATASETS_DIR) == pathlib.Path(expected)


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_offline_mode_fails_fast_with_one_line_when_not_cached(monkeypatch, tmp_path, name: str) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))

    started = time.perf_counter()
    with pytest.raises(DatasetError) as refused:
        load_dataset(name, datasets_dir=tmp_path, offline=True)

    message = str(refused.value)
    assert message.startswith(f"{name}: not found locally in {tmp_path / name}")
    assert "downloads are off (offline)" in message and "\n" not in message
    assert time.perf_counter() - started < 2


def test_failed_download_becomes_a_dataset_error_and_restores_the_socket_timeout(
    monkeypatch, tmp_path
) -> None:
    keras_home = pathlib.Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()
    if (keras_home / "datasets" / KERAS_CACHE_FILES["cifar10"]).exists():
        pytest.skip("cifar10 is in the Keras cache here, so no download would be attempted")

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    timeout_before = socket.getdefaulttimeout()

    with pytest.raises(DatasetError) as refused:
        load_dataset("cifar10", datasets_dir=tmp_path)

    message = str(refused.value)
    assert message.startswith("cifar10: not found locally")
    assert "the download failed (offline?)" in message and "\n" not in message
    assert socket.getdefaulttimeout() == timeout_before


def test_image_folder_is_split_stratified_with_every_class_everywhere(image_folder) -> None:
    shapes = load_dataset(str(image_folder), image_size=SMALL)

    assert shapes.name == "shapes"
    assert shapes.class_names == list(SHAPE_CLASSES)
    assert shapes.style == "photo" and shapes.input_shape == (32, 32, 3)
    assert shapes.x_train.dtype == np.uint8 and shapes.skipped == ()
    sizes = (len(shapes.y_train), len(shapes.y_val), len(shapes.y_test))
    assert sum(sizes) == 3 * PHOTOS_PER_CLASS and sizes[1] >= 3 and sizes[2] >= 3
    for labels in (shapes.y_train, shapes.y_val, shapes.y_test):
        assert set(labels.tolist()) == {0, 1, 2}
    splits = [pixel_rows(x.reshape(len(x), -1)) for x in (shapes.x_train, shapes.x_val, shapes.x_test)]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])


def test_image_folder_splits_are_seeded(image_folder) -> None:
    first = load_dataset(str(image_folder), image_size=SMALL, seed=1)
    again = load_dataset(str(image_folder), image_size=SMALL, seed=1)
    other = load_dataset(str(image_folder), image_size=SMALL, seed=2)

    assert np.array_equal(first.x_test, again.x_test) and first.fingerprint == again.fingerprint
    assert not np.array_equal(first.x_test, other.x_test) and first.fingerprint != other.fingerprint


def test_folder_found_by_name_under_the_datasets_dir(image_folder) -> None:
    shapes = load_dataset("shapes", datasets_dir=image_folder.parent, image_size=SMALL)

    assert shapes.class_names == list(SHAPE_CLASSES)


def test_folder_with_its_own_splits_keeps_them(split_image_folder) -> None:
    shapes = load_dataset(str(split_image_folder), image_size=SMALL)

    assert (len(shapes.y_train), len(shapes.y_val), len(shapes.y_test)) == (30, 9, 9)
    assert np.bincount(shapes.y_test).tolist() == [3, 3, 3]


def test_missing_test_split_is_carved_from_train_stratified(split_image_folder) -> None:
    shutil.rmtree(split_image_folder / "test")

    shapes = load_dataset(str(split_image_folder), image_size=SMALL, test_fraction=0.2)

    assert len(shapes.y_val) == 9
    assert np.bincount(shapes.y_test).tolist() == [2, 2, 2]
    assert len(shapes.y_train) == 24


def test_a_photo_in_two_splits_is_kept_only_for_evaluation(split_image_folder) -> None:
    test_photo = sorted((split_image_folder / "test" / "circle").iterdir())[0]
    shutil.copy(test_photo, split_image_folder / "train" / "circle" / "copy-of-a-test-photo.png")
    shutil.copy(test_photo, split_image_folder / "train" / "circle" / "second-copy.png")
    warnings: list[str] = []

    shapes = load_dataset(str(split_image_folder), image_size=SMALL, warn=warnings.append)

    assert (len(shapes.y_train), len(shapes.y_test)) == (30, 9)
    assert shapes.skipped == ("train/circle/copy-of-a-test-photo.png", "train/circle/second-copy.png")
    assert warnings == [
        f"skipped train/circle/copy-of-a-test-photo.png: same photo as test/circle/{test_photo.name}",
        f"skipped train/circle/second-copy.png: same photo as test/circle/{test_photo.name}",
    ]


def test_corrupt_and_non_image_files_are_skipped_with_a_warning(image_folder, bad_image_files) -> None:
    for bad_file in bad_image_files.values():
        shutil.copy(bad_file, image_folder / "square" / bad_file.name)
    warnings: list[str] = []

    shapes = load_dataset(str(image_folder), image_size=SMALL, warn=warnings.append)

    assert len(shapes.y_train) + len(shapes.y_val) + len(shapes.y_test) == 3 * PHOTOS_PER_CLASS
    assert sorted(shapes.skipped) == sorted(f"square/{name}" for name in bad_image_files)
    assert len(warnings) == len(bad_image_files)
    assert "skipped square/notes.jpg: not an image (cannot identify image file)" in warnings
    assert "skipped square/empty.jpg: empty file (0 bytes)" in warnings


def test_skipped_files_are_logged_when_no_warn_callback_is_given(
    image_folder, bad_image_files, caplog
) -> None:
    shutil.copy(bad_image_files["truncated.jpg"], image_folder / "circle" / "truncated.jpg")

    with caplog.at_level(logging.WARNING, logger="classifier.ml.datasets"):
        load_dataset(str(image_folder), image_size=SMALL)

    assert any("skipped circle/truncated.jpg: corrupt or truncated image" in line for line in caplog.messages)


def test_fingerprint_changes_when_a_pixel_or_a_label_changes(image_folder) -> None:
    before = load_dataset(str(image_folder), image_size=SMALL).fingerprint

    photo_path = sorted((image_folder / "triangle").glob("*.png"))[0]
    photo = Image.open(photo_path).convert("RGB")
    photo.putpixel((photo.width // 2, photo.height // 2), (0, 0, 0))
    photo.save(photo_path)
    after_pixel = load_dataset(str(image_folder), image_size=SMALL).fingerprint

    moved = sorted((image_folder / "circle").glob("*.png"))[0]
    moved.rename(image_folder / "square" / moved.name)
    after_label = load_dataset(str(image_folder), image_size=SMALL).fingerprint

    assert len({before, after_pixel, after_label}) == 3
    assert all(len(fingerprint) == 64 for fingerprint in (before, after_pixel, after_label))


def test_subset_is_small_stratified_and_seeded(tiny_fashion) -> None:
    assert (len(tiny_fashion.y_train), len(tiny_fashion.y_val), len(tiny_fashion.y_test)) == (300, 300, 300)
    assert np.bincount(tiny_fashion.y_train).tolist() == [30] * 10
    assert tiny_fashion.input_shape == (28, 28, 1) and tiny_fashion.class_names == FASHION_MNIST_CLASSES

    again = tiny_fashion.subset(per_split=100, seed=5)
    same = tiny_fashion.subset(per_split=100, seed=5)
    other = tiny_fashion.subset(per_split=100, seed=6)
    assert again.fingerprint == same.fingerprint != other.fingerprint
    assert np.bincount(again.y_test).tolist() == [10] * 10


def make_folder(root: pathlib.Path, layout: dict[str, int]) -> pathlib.Path:
    for index, (relative, count) in enumerate(layout.items()):
        write_shape_photos(root / relative, shape=SHAPE_CLASSES[index % 3], count=count, seed=index)
    return root


def loose_photo_without_class_folder(root: pathlib.Path) -> pathlib.Path:
    write_shape_photos(root, shape="circle", count=1, seed=0)
    return root


@pytest.mark.parametrize(
    ("build", "expected_message"),
    [
        (
            lambda root: root / "absent",
            r"no such data set or folder: .*absent \(built-in data sets: fashion-mnist",
        ),
        (lambda root: make_folder(root, {"shop": 1}) / "shop" / "circle-0-00.jpg", "not a folder"),
        (lambda root: root, "empty folder"),
        (loose_photo_without_class_folder, "no class subfolders"),
        (lambda root: make_folder(root, {"hats": 4}), r"only one class \(hats\)"),
        (lambda root: make_folder(root, {"hats": 0, "shoes": 0}), "no photos in any class folder"),
        (lambda root: make_folder(root, {"hats": 4, "shoes": 0}), "class 'shoes' has no readable photos"),
        (
            lambda root: make_folder(root, {"train/hats": 4, "train/shoes": 4, "test/bags": 2}),
            "class 'bags' is not in",
        ),
        (lambda root: make_folder(root, {"validation/hats": 2, "test/shoes": 2}), "no train/ folder"),
    ],
    ids=[
        "missing",
        "a-file",
        "empty",
        "no-class-folders",
        "one-class",
        "classes-without-photos",
        "class-without-photos",
        "unknown-class",
        "no-train",
    ],
)
def test_unusable_folders_give_one_line_errors(tmp_path, build, expected_message: str) -> None:
    root = tmp_path / "upload"
    root.mkdir()
    target = build(root)

    with pytest.raises(DatasetError, match=expected_message) as refused:
        load_dataset(str(target), image_size=SMALL)

    assert "\n" not in str(refused.value)


def test_class_with_only_unreadable_files_is_an_error(image_folder, bad_image_files) -> None:
    (image_folder / "scarf").mkdir()
    shutil.copy(bad_image_files["notes.jpg"], image_folder / "scarf" / "notes.jpg")

    with pytest.raises(DatasetError, match="class 'scarf' has no readable photos"):
        load_dataset(str(image_folder), image_size=SMALL, warn=lambda message: None)


def test_impossible_split_fractions_are_refused(image_folder) -> None:
    with pytest.raises(DatasetError, match="fractions must be in"):
        load_dataset(str(image_folder), val_fraction=0.6, test_fraction=0.5)


@pytest.mark.slow
def test_real_clothing_photos_load_with_their_validation_split() -> None:
    folder = pathlib.Path(settings.VITRINE_DATASETS_DIR) / "clothing-small"
    if not folder.is_dir():
        pytest.skip(f"clothing-small not found in {folder}")

    clothing = load_dataset(str(folder), image_size=SMALL)

    assert clothing.num_classes == 10 and "t-shirt" in clothing.class_names
    assert len(clothing.y_val) == 341
    assert len(clothing.y_train) + len(clothing.y_test) == 3_068
    assert clothing.skipped == ()
