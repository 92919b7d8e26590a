"""Photos and model versions in an S3-compatible bucket (moto's server over HTTP): workers share no disk with
the web process or each other, only the database, the broker and the bucket."""

import pathlib
from collections.abc import Callable, Iterator

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from catalog.models import Product
from classifier.artifacts import FETCHED_FOLDER
from classifier.ml.formats import MODEL_FILE, file_sha256
from classifier.models import ModelVersion
from classifier.services.model_versions import model_version_register
from tests.e2e.object_storage import BUCKET, S3Server
from tests.e2e.support import (
    CeleryWorker,
    Workers,
    database_url_of_tests,
    photo_bytes,
    product_status,
    wait_for,
    worker_environment,
)
from tests.roles import caller_user

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

DONE = (Product.Status.CLASSIFIED, Product.Status.NEEDS_REVIEW)


@pytest.fixture
def bucket_model_version(in_bucket: S3Server, tiny_model: pathlib.Path) -> ModelVersion:
    return model_version_register(artifact_dir=tiny_model, activate=True)


@pytest.fixture
def bucket_worker(
    workers: Workers, in_bucket: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], tuple[CeleryWorker, pathlib.Path]]]:
    """bucket_worker() -> a worker whose MEDIA_ROOT and models folder are empty folders of its own, and
    that models folder. The session's other workers are stopped first: they read photos from disk."""
    workers.stop_all()
    started = Workers(env={}, log_dir=tmp_path_factory.mktemp("bucket-worker-logs"))

    def start() -> tuple[CeleryWorker, pathlib.Path]:
        models_dir = tmp_path_factory.mktemp("worker-models")
        env = {
            **worker_environment(
                database_url=database_url_of_tests(), media_dir=tmp_path_factory.mktemp("worker-media")
            ),
            **in_bucket.environment(),
            "VITRINE_MODELS_DIR": str(models_dir),
        }
        worker = CeleryWorker(name=f"bucket{len(started.started) + 1}", log_dir=started.log_dir, env=env)
        started.started.append(worker)
        return worker.start(), models_dir

    yield start
    started.stop_all()


def _upload(data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("photo.png", data, content_type="image/png")


def staff_api_client() -> APIClient:
    client = APIClient()
    # A superuser: data-migration groups do not survive the flush between transactional tests.
    user = caller_user("superuser", username="shop-admin")
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_a_photo_uploaded_through_the_api_is_kept_in_the_bucket_and_classified_by_a_worker_of_its_own(
    bucket_model_version: ModelVersion, bucket_worker, in_bucket: S3Server, shared_media_root: pathlib.Path
) -> None:
    worker, models_dir = bucket_worker()
    photo = photo_bytes(seed=3)

    response = staff_api_client().post(
        "/api/v1/products/",
        {"name": "Linen shirt", "sku": "LS-9", "price": "19.90", "image": _upload(photo)},
        format="multipart",
    )

    assert response.status_code == 201, response.content
    product = Product.objects.get(sku="LS-9")
    assert in_bucket.keys(f"media/{product.image.name}") == [f"media/{product.image.name}"]
    assert not (shared_media_root / product.image.name).exists(), "the photo was written to disk"
    wait_for(lambda: product_status(product.pk) in DONE, timeout_s=60, what="the product to be classified")
    product.refresh_from_db()
    assert product.model_version == bucket_model_version
    assert product.suggested_category.name in bucket_model_version.class_names
    assert (models_dir / FETCHED_FOLDER / bucket_model_version.model_sha256 / MODEL_FILE).is_file()
    # The storefront's link is the bucket's (signed) URL, not a path on the web server.
    assert response.json()["image_url"].startswith(
        f"{in_bucket.endpoint_url}/{BUCKET}/media/{product.image.name}?"
    )


def test_an_activated_version_is_fetched_and_verified_by_each_worker_into_its_own_cache(
    bucket_model_version: ModelVersion, bucket_worker, in_bucket: S3Server
) -> None:
    stored = in_bucket.keys(f"models/{bucket_model_version.model_sha256}/")

    started = [bucket_worker(), bucket_worker()]

    assert f"models/{bucket_model_version.model_sha256}/{MODEL_FILE}" in stored
    for worker, models_dir in started:
        cached = models_dir / FETCHED_FOLDER / bucket_model_version.model_sha256 / MODEL_FILE
        assert file_sha256(cached) == bucket_model_version.model_sha256
        assert worker.log().count(f"fetched model version {bucket_model_version.name} from the bucket") == 1
        assert f"serving model version {bucket_model_version.name}" in worker.log()


def test_a_tampered_model_object_in_the_bucket_is_refused_with_one_log_line_and_nothing_is_filed(
    bucket_model_version: ModelVersion, bucket_worker, in_bucket: S3Server
) -> None:
    key = f"models/{bucket_model_version.model_sha256}/{MODEL_FILE}"
    in_bucket.client().put_object(Bucket=BUCKET, Key=key, Body=b"not the registered model")
    worker, models_dir = bucket_worker()
    client = staff_api_client()

    for seed in (1, 2):
        response = client.post(
            "/api/v1/products/",
            {
                "name": f"Shirt {seed}",
                "sku": f"SH-{seed}",
                "price": "9",
                "image": _upload(photo_bytes(seed=seed)),
            },
            format="multipart",
        )
        assert response.status_code == 201, response.content
    wait_for(
        lambda: worker.log().count("classify_products") >= 2, timeout_s=30, what="both tasks to be received"
    )

    refusals = [line for line in worker.log().splitlines() if "refusing model version" in line]
    assert len(refusals) == 1, refusals
    assert (
        f"the bucket's {bucket_model_version.model_sha256}/{MODEL_FILE} is corrupt or was replaced"
        in (refusals[0])
    )
    assert not (models_dir / FETCHED_FOLDER / bucket_model_version.model_sha256).exists()
    assert set(Product.objects.values_list("status", flat=True)) <= {
        Product.Status.PENDING,
        Product.Status.QUEUED,
    }
    assert not Product.objects.filter(model_version__isnull=False).exists()
