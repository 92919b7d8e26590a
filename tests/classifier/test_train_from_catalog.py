"""train --from-catalog: the catalog's reviewed products (imported from a labelled folder) become an inactive
model version, trained here or on the training queue. Tiny: 3 categories x 4 photos, 1 epoch."""

import io
import pathlib
import re
import shutil
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from catalog.models import Product
from classifier.models import ModelVersion, TrainingRun
from classifier.services.model_versions import model_version_activate
from tests.classifier.ml.conftest import SHAPE_CLASSES, write_shape_photos
from tests.e2e.support import (
    BrokerQueues,
    CeleryWorker,
    Workers,
    database_url_of_tests,
    wait_for,
    worker_environment,
)

PHOTOS_PER_CATEGORY = 4
# A warm worker trains the tiny recipe in seconds; this only bounds a slow shared machine.
TRAINED_WITHIN_S = 120


def run(command: str, *args: str) -> str:
    stdout = io.StringIO()
    call_command(command, *args, stdout=stdout, stderr=io.StringIO())
    return stdout.getvalue()


def import_shapes(root: pathlib.Path, shapes: tuple[str, ...] = SHAPE_CLASSES) -> None:
    for index, shape in enumerate(shapes):
        write_shape_photos(root / shape, shape=shape, count=PHOTOS_PER_CATEGORY, seed=index)
    run("import_catalog", str(root), "--label-from-folder")


@pytest.fixture(autouse=True)
def trained_artifacts_removed(django_db_blocker) -> Iterator[None]:
    """The models a test trained are deleted after it: the models folder is shared by test sessions."""
    yield
    models_dir = pathlib.Path(settings.VITRINE_MODELS_DIR).resolve()
    with django_db_blocker.unblock():
        artifact_paths = list(ModelVersion.objects.values_list("artifact_path", flat=True))
    for artifact_path in artifact_paths:
        artifact_dir = (models_dir / artifact_path).resolve()
        if artifact_dir.parent == models_dir:
            shutil.rmtree(artifact_dir, ignore_errors=True)


@pytest.mark.django_db
def test_train_from_catalog_makes_an_inactive_version_then_skips_the_same_photos(tmp_path):
    import_shapes(tmp_path / "shapes")

    stdout = run("train", "--from-catalog")

    run_row = TrainingRun.objects.get()
    assert run_row.status == TrainingRun.Status.SUCCEEDED, run_row.error
    version = run_row.model_version
    assert not version.is_active
    assert re.fullmatch(r"[0-9a-f]{64}", run_row.data_fingerprint)
    assert version.class_names == sorted(SHAPE_CLASSES)
    lines = stdout.splitlines()
    assert (
        lines[0]
        == f"training run {run_row.pk} (kind full, architecture seed_dense, epochs 1, image_size 32), "
        "training here"
    )
    assert any(re.match(r"epoch 1/1  loss \d", line) for line in lines), stdout
    assert f"model version {version.name} (not active yet)" in lines
    assert f"test accuracy {version.metrics['test_accuracy']:.4f}" in lines
    assert lines[-1].startswith(f"Trained {version.name} (not active yet) on 12 photos in 3 categories")

    again = run("train", "--from-catalog")

    assert again.splitlines()[-1].startswith(
        f"Skipped: the reviewed photos and the settings are the same as in run {run_row.pk}"
    )
    assert ModelVersion.objects.count() == 1


@pytest.mark.django_db
def test_train_from_catalog_with_one_category_fails_with_the_reason(tmp_path):
    import_shapes(tmp_path / "shapes", shapes=("circle",))

    with pytest.raises(CommandError, match=r"training needs reviewed photos in at least 2 active categories"):
        run("train", "--from-catalog")
    assert TrainingRun.objects.get().status == TrainingRun.Status.FAILED
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--from-catalog", "--dataset=fashion-mnist"], "--from-catalog and --dataset exclude each other"),
        ([], "name what to train on: --dataset NAME_OR_FOLDER or --from-catalog"),
        (["--from-catalog", "--out=/tmp/x"], "--out applies to --dataset only"),
        (["--dataset=fashion-mnist", "--queue"], "--queue applies to --from-catalog only"),
        (["--from-catalog", "--arch=resnet"], "unknown architecture 'resnet'"),
        (["--from-catalog", "--base-dataset=no-such-folder"], "no photo folder named 'no-such-folder'"),
        (["--quick", "--dataset=fashion-mnist"], "--quick retrains the active version on the catalog"),
        (["--quick", "--arch=seed_lenet"], "--arch does not apply to --quick"),
        (["--quick"], "a quick retrain starts from the active model version, and none is active"),
    ],
)
def test_train_refuses_mixed_or_bad_options_with_one_line(arguments, message):
    with pytest.raises(CommandError, match=f"^{re.escape(message)}"):
        run("train", *arguments)
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_train_quick_retrains_the_active_versions_last_layer_into_a_new_version(tmp_path):
    import_shapes(tmp_path / "shapes")
    run("train", "--from-catalog")
    active = model_version_activate(model_version=ModelVersion.objects.get())

    stdout = run("train", "--quick")

    quick = TrainingRun.objects.exclude(model_version=active).get()
    assert quick.status == TrainingRun.Status.SUCCEEDED, quick.error
    version = quick.model_version
    assert stdout.splitlines()[0] == (
        f"training run {quick.pk} (kind quick, architecture seed_dense, epochs 1, base_version {active.pk}), "
        "training here"
    )
    assert f"model version {version.name} (not active yet)" in stdout.splitlines()
    assert version.name.startswith("seed_dense-quick-run") and version.class_names == active.class_names
    assert ModelVersion.objects.get(is_active=True) == active


# Through the training queue, on a real worker process that shares the tests' database and photos.


@pytest.fixture(scope="module")
def queue_media_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("train-queue-media")


@pytest.fixture(scope="module")
def training_worker(
    django_db_setup: None, django_db_blocker, queue_media_dir: pathlib.Path, tmp_path_factory
) -> Iterator[CeleryWorker]:
    with django_db_blocker.unblock():
        env = worker_environment(database_url=database_url_of_tests(), media_dir=queue_media_dir)
    workers = Workers(env=env, log_dir=tmp_path_factory.mktemp("train-queue-worker-logs"))
    yield workers.start()
    workers.stop_all()


@pytest.fixture
def broker_emptied() -> Iterator[None]:
    queues = BrokerQueues(settings.CELERY_BROKER_URL)
    queues.clear()
    yield
    queues.clear()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_train_from_catalog_queue_is_trained_by_the_training_worker(
    settings, tmp_path, queue_media_dir, broker_emptied, training_worker
):
    settings.MEDIA_ROOT = str(queue_media_dir)
    import_shapes(tmp_path / "shapes")
    assert Product.objects.count() == 12

    stdout = run("train", "--from-catalog", "--queue")

    run_row = TrainingRun.objects.get()
    assert stdout.strip() == (
        f"training run {run_row.pk} queued (kind full, architecture seed_dense, epochs 1, image_size 32); "
        f"watch it at /admin/classifier/trainingrun/{run_row.pk}/change/"
    )

    def ended() -> TrainingRun | None:
        run_row.refresh_from_db()
        return run_row if run_row.status not in ("queued", "running") else None

    wait_for(ended, timeout_s=TRAINED_WITHIN_S, what=f"training run {run_row.pk} to end", interval_s=0.25)
    assert run_row.status == TrainingRun.Status.SUCCEEDED, run_row.error or training_worker.log()[-3000:]
    assert run_row.worker.startswith("worker1@")
    assert not run_row.model_version.is_active
    assert run_row.model_version.class_names == sorted(SHAPE_CLASSES)


@pytest.mark.django_db
def test_train_from_catalog_with_photos_in_the_bucket_trains_on_local_copies_and_uploads_the_version(
    tmp_path, settings, in_bucket
):
    settings.VITRINE_MODELS_DIR = tmp_path / "models"
    import_shapes(tmp_path / "shapes")

    run("train", "--from-catalog")

    version = ModelVersion.objects.get()
    assert in_bucket.keys("media/products/") and not list((tmp_path / "media").rglob("*.png"))
    assert f"models/{version.model_sha256}/model.keras" in in_bucket.keys(f"models/{version.model_sha256}/")
    assert version.artifact_key == version.model_sha256
    copies = {path.stem for path in (tmp_path / "models" / "photos").iterdir()}
    assert copies == set(Product.objects.values_list("image_sha256", flat=True))
