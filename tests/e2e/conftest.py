"""The pipeline on real services: PostgreSQL (pytest-django's test database), Redis, and `celery worker`
subprocesses that read the same database and MEDIA_ROOT as the tests. Tests here use
`django_db(transaction=True)`: rows must be committed for a worker process to see them.
"""

import pathlib
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from classifier.models import ModelVersion
from classifier.services.model_versions import model_version_register
from tests.e2e.support import (
    BrokerQueues,
    CeleryWorker,
    Workers,
    database_url_of_tests,
    photo_bytes,
    worker_environment,
)


@pytest.fixture(scope="session")
def e2e_media_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("e2e-media")


@pytest.fixture(autouse=True)
def shared_media_root(settings, media_root: pathlib.Path, e2e_media_dir: pathlib.Path) -> pathlib.Path:
    """Uploads land in the one folder the worker processes read from."""
    settings.MEDIA_ROOT = str(e2e_media_dir)
    return e2e_media_dir


@pytest.fixture(scope="session")
def broker_queues() -> BrokerQueues:
    return BrokerQueues(settings.CELERY_BROKER_URL)


@pytest.fixture(autouse=True)
def empty_queues(broker_queues: BrokerQueues) -> Iterator[None]:
    broker_queues.clear()
    yield
    broker_queues.clear()


@pytest.fixture(scope="session")
def workers(
    django_db_setup: None,
    django_db_blocker,
    e2e_media_dir: pathlib.Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Workers]:
    """Worker processes of this session; all are stopped before the test database is dropped."""
    with django_db_blocker.unblock():
        env = worker_environment(database_url=database_url_of_tests(), media_dir=e2e_media_dir)
    session_workers = Workers(env=env, log_dir=tmp_path_factory.mktemp("worker-logs"))
    yield session_workers
    session_workers.stop_all()


@pytest.fixture
def celery_worker(workers: Workers) -> CeleryWorker:
    return workers.running()


@pytest.fixture
def active_model_version(tiny_model: pathlib.Path, transactional_db: None) -> ModelVersion:
    return model_version_register(artifact_dir=tiny_model, activate=True)


@pytest.fixture
def photo_upload() -> Callable[..., SimpleUploadedFile]:
    """photo_upload("shirt.png", seed=1) -> an uploaded PNG; different seeds give different bytes."""

    def make(name: str = "photo.png", *, seed: int = 0) -> SimpleUploadedFile:
        return SimpleUploadedFile(name, photo_bytes(seed=seed), content_type="image/png")

    return make
