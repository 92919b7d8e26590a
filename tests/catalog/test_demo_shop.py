"""demo_shop: a few sample products on a fresh install, unfiled so the classifier files them; once only."""

import io
import pathlib

import pytest
from django.core.management import CommandError, call_command

from catalog.models import Product
from tests.classifier.ml.conftest import SHAPE_CLASSES, write_shape_photos

pytestmark = pytest.mark.django_db


def demo_shop(*args: str) -> str:
    stdout = io.StringIO()
    call_command("demo_shop", *args, stdout=stdout, stderr=io.StringIO())
    return stdout.getvalue()


@pytest.fixture
def samples(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "samples"
    for index, shape in enumerate(SHAPE_CLASSES):
        write_shape_photos(root / shape, shape=shape, count=5, seed=index)
    return root


def test_demo_shop_adds_unfiled_products_once_and_announces_their_photos(
    samples, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        output = demo_shop(f"--from={samples}", "--per-category=2")

    expected = 2 * len(SHAPE_CLASSES)
    assert output.startswith(f"{expected} sample products added")
    products = Product.objects.all()
    assert products.count() == expected
    assert all(p.category is None and p.status == Product.Status.PENDING and p.price > 0 for p in products)
    assert len(callbacks) == expected
    assert demo_shop(f"--from={samples}", "--per-category=2").startswith("0 sample products added")
    assert Product.objects.count() == expected


def test_demo_shop_without_sample_photos_says_where_it_looked(tmp_path) -> None:
    with pytest.raises(CommandError, match="no sample photos at .*missing.*VITRINE_DATASETS_DIR"):
        demo_shop(f"--from={tmp_path / 'missing'}")
    assert not Product.objects.exists()
