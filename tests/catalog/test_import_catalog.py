"""import_catalog: labelled photo folders become reviewed products, once, whatever the folder holds."""

import io
import pathlib
import re

import pytest
from django.core.management import CommandError, call_command

from catalog.models import Category, Product
from tests.classifier.ml.conftest import SHAPE_CLASSES, write_shape_photos

pytestmark = pytest.mark.django_db

PHOTOS_PER_SHAPE = 3


def run_import(*args: str) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("import_catalog", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def summary_of(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("created "))


@pytest.fixture
def shapes_folder(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "shapes"
    for index, shape in enumerate(SHAPE_CLASSES):
        write_shape_photos(root / shape, shape=shape, count=PHOTOS_PER_SHAPE, seed=index)
    return root


def test_import_files_each_photo_under_its_folder_as_a_persons_label(shapes_folder):
    stdout, stderr = run_import(str(shapes_folder), "--label-from-folder")

    assert stderr == ""
    assert re.match(
        r"created 9, already present 0, skipped 0 \(bad files\), categories created 3, in [\d.]+ s$",
        summary_of(stdout),
    )
    assert "9 new products were sent to the classification queue" in stdout
    assert sorted(Category.objects.values_list("name", flat=True)) == sorted(SHAPE_CLASSES)
    for product in Product.objects.select_related("category"):
        assert product.category_source == Product.CategorySource.PERSON
        assert product.reviewed_at is not None
        assert product.name.startswith(f"{product.category.name} {product.category.name}-")
        assert product.sku == f"IMP-{product.image_sha256[:20].upper()}"
        assert product.is_published
    assert Product.objects.filter(category__name="circle").count() == PHOTOS_PER_SHAPE


def test_running_the_import_again_adds_nothing_twice(shapes_folder):
    run_import(str(shapes_folder), "--label-from-folder")
    write_shape_photos(shapes_folder / "square", shape="square", count=1, seed=99)

    stdout, _ = run_import(str(shapes_folder), "--label-from-folder")

    assert summary_of(stdout).startswith(
        "created 1, already present 9, skipped 0 (bad files), categories created 0,"
    )
    assert Product.objects.count() == 10
    assert Category.objects.count() == 3


def test_an_existing_category_is_used_by_name_and_products_can_be_imported_unpublished(shapes_folder):
    Category.objects.create(name="Circle", slug="circle")

    stdout, _ = run_import(str(shapes_folder), "--label-from-folder", "--unpublished", "--limit", "4")

    assert summary_of(stdout).startswith(
        "created 4, already present 0, skipped 0 (bad files), categories created 1,"
    )
    assert "stopped at --limit 4; run again to import the rest" in stdout
    assert Product.objects.filter(category__name="Circle").count() == 3
    assert not Product.objects.filter(is_published=True).exists()


def test_a_corrupt_or_foreign_file_is_skipped_with_a_warning_and_the_rest_imported(shapes_folder):
    (shapes_folder / "circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    (shapes_folder / "square" / "notes.txt").write_text("not a photo")

    stdout, stderr = run_import(str(shapes_folder), "--label-from-folder")

    assert summary_of(stdout).startswith("created 9, already present 0, skipped 2 (bad files),")
    warnings = stderr.splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith(f"warning: {shapes_folder / 'circle' / 'broken.jpg'}: skipped, ")
    assert warnings[1].startswith(f"warning: {shapes_folder / 'square' / 'notes.txt'}: skipped, ")


def test_a_split_layout_imports_all_splits_or_the_ones_named(tmp_path):
    root = tmp_path / "clothes"
    write_shape_photos(root / "train" / "circle", shape="circle", count=2, seed=1)
    write_shape_photos(root / "train" / "square", shape="square", count=2, seed=2)
    write_shape_photos(root / "validation" / "circle", shape="circle", count=1, seed=3)
    write_shape_photos(root / "test" / "square", shape="square", count=1, seed=4)

    stdout, _ = run_import(str(root), "--label-from-folder", "--split", "train", "--split", "validation")
    assert summary_of(stdout).startswith(
        "created 5, already present 0, skipped 0 (bad files), categories created 2,"
    )

    stdout, _ = run_import(str(root), "--label-from-folder")
    assert summary_of(stdout).startswith("created 1, already present 5,")
    assert Product.objects.filter(category__name="square").count() == 3


def test_progress_is_reported_every_hundred_photos(tmp_path):
    write_shape_photos(tmp_path / "shapes" / "circle", shape="circle", count=101, seed=0)
    write_shape_photos(tmp_path / "shapes" / "square", shape="square", count=1, seed=1)

    stdout, _ = run_import(str(tmp_path / "shapes"), "--label-from-folder")

    assert "100/102 photos (98%), 100 created" in stdout.splitlines()


@pytest.mark.parametrize(
    ("layout", "arguments", "message"),
    [
        ("missing", [], "no such folder: {root}"),
        ("file", [], "{root} is a file, not a folder of class folders"),
        ("empty", [], "no class folders in {root}: expected <class>/<photo> inside"),
        ("only-files", [], "no class folders in {root}: expected <class>/<photo> inside"),
        ("empty-classes", [], "no photos in the 2 class folders of {root}"),
        (
            "flat",
            ["--split", "train"],
            "{root} has no train/validation/test folders; --split needs that layout",
        ),
        ("splits", ["--split", "test"], "{root} has no test folder; it has: train"),
        ("flat", ["--no-label"], "--label-from-folder is required in this version"),
        ("flat", ["--limit", "0"], "--limit must be at least 1, not 0"),
    ],
)
def test_bad_folders_stop_the_import_with_one_line(tmp_path, layout, arguments, message):
    root = tmp_path / "photos"
    if layout == "file":
        root.write_text("not a folder")
    elif layout != "missing":
        root.mkdir()
    if layout == "only-files":
        write_shape_photos(root / "circle", shape="circle", count=1, seed=0)[0].rename(root / "loose.jpg")
        (root / "circle").rmdir()
    if layout == "empty-classes":
        (root / "circle").mkdir()
        (root / "square").mkdir()
    if layout == "flat":
        write_shape_photos(root / "circle", shape="circle", count=1, seed=0)
    if layout == "splits":
        write_shape_photos(root / "train" / "circle", shape="circle", count=1, seed=0)
    label_option = [] if "--no-label" in arguments else ["--label-from-folder"]
    arguments = [argument for argument in arguments if argument != "--no-label"]

    with pytest.raises(CommandError, match=f"^{re.escape(message.format(root=root))}"):
        run_import(str(root), *label_option, *arguments)
    assert not Product.objects.exists()
    assert not Category.objects.exists()
