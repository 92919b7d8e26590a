"""classifier.runtime's integrity rules in this process: a newly active version is served only if its file
is the registered one and loads; else the last good version keeps serving. tests/deploy runs a real worker."""

import hashlib
import json
import logging
import pathlib
import shutil

import pytest

from classifier.models import ModelVersion
from classifier.selectors import model_version_artifact_dir
from classifier.services.model_versions import model_version_activate, model_version_register
from classifier.workers import runtime

pytestmark = pytest.mark.django_db


@pytest.fixture
def register(tiny_model: pathlib.Path, tmp_path: pathlib.Path):
    def make(name: str, *, activate: bool = False) -> ModelVersion:
        shutil.copytree(tiny_model, tmp_path / name)
        return model_version_register(artifact_dir=tmp_path / name, name=name, activate=activate)

    return make


def model_file(model_version: ModelVersion) -> pathlib.Path:
    return model_version_artifact_dir(model_version=model_version) / "model.keras"


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("refusing model version")]


def test_a_corrupt_new_version_is_refused_once_and_the_previous_one_serves(register, caplog) -> None:
    first = register("shop-v1", activate=True)
    _, first_classifier = runtime.active_classifier()
    second = register("shop-v2")
    model_version_activate(model_version=second)
    model_file(second).write_bytes(b"half a file")

    with caplog.at_level(logging.INFO, logger="classifier.workers.runtime"):
        served = [runtime.active_classifier() for _ in range(3)]

    assert all(version == first and classifier is first_classifier for version, classifier in served)
    actual = hashlib.sha256(b"half a file").hexdigest()
    assert refusals(caplog) == [
        f"refusing model version shop-v2: {model_file(second)} is corrupt or was replaced "
        f"(sha256 {actual[:12]}…, registered {second.model_sha256[:12]}…); "
        f"still serving model version shop-v1 (id {first.pk})"
    ]


def test_the_previous_version_serves_with_its_current_threshold(register) -> None:
    first = register("shop-v1", activate=True)
    runtime.active_classifier()
    second = register("shop-v2")
    model_version_activate(model_version=second)
    model_file(second).unlink()
    ModelVersion.objects.filter(pk=first.pk).update(threshold=0.5)

    version, _ = runtime.active_classifier()

    assert version == first
    assert version.threshold == 0.5


def test_a_model_that_matches_its_checksum_but_does_not_load_is_refused(register, caplog) -> None:
    register("shop-v1", activate=True)
    runtime.active_classifier()
    second = register("shop-v2")
    garbage = b"not a keras archive"
    model_file(second).write_bytes(garbage)
    metadata_path = model_file(second).parent / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata_path.write_text(json.dumps({**metadata, "model_sha256": hashlib.sha256(garbage).hexdigest()}))
    ModelVersion.objects.filter(pk=second.pk).update(model_sha256=hashlib.sha256(garbage).hexdigest())
    second.refresh_from_db()
    model_version_activate(model_version=second)

    with caplog.at_level(logging.INFO, logger="classifier.workers.runtime"):
        version, _ = runtime.active_classifier()

    assert version.name == "shop-v1"
    assert refusals(caplog)[0].startswith("refusing model version shop-v2: cannot load it (")


def test_without_a_good_version_nothing_is_served_until_the_file_is_repaired(
    register, tiny_model: pathlib.Path, caplog
) -> None:
    version = register("shop-v1", activate=True)
    model_file(version).write_bytes(b"corrupt")

    with caplog.at_level(logging.INFO, logger="classifier.workers.runtime"):
        refused = runtime.active_classifier()
        shutil.copyfile(tiny_model / "model.keras", model_file(version))
        repaired = runtime.active_classifier()

    assert refused is None
    assert refusals(caplog)[0].endswith("no model version is served: products stay queued for the sweep")
    assert repaired[0] == version


def test_a_deleted_previous_version_is_not_served(register) -> None:
    first = register("shop-v1", activate=True)
    runtime.active_classifier()
    second = register("shop-v2")
    model_version_activate(model_version=second)
    model_file(second).write_bytes(b"corrupt")
    first.delete()

    assert runtime.active_classifier() is None


def test_the_start_line_says_the_device_and_the_version_served(
    register, tiny_model: pathlib.Path, caplog
) -> None:
    precision = json.loads((tiny_model / "metadata.json").read_text())["precision"]
    with caplog.at_level(logging.INFO, logger="classifier.workers.runtime"):
        runtime.warm_up()
        version = register("shop-v1", activate=True)
        runtime.warm_up()

    lines = [record.getMessage() for record in caplog.records if record.name == "classifier.workers.runtime"]
    assert lines[0].startswith("serving no model version on CPU (")
    assert lines[0].endswith("no GPU found: none is active yet; products wait in the queue")
    assert lines[1].startswith(
        f"serving model version shop-v1 (id {version.pk}, seed_dense, 10 categories, {precision}) on CPU ("
    )
    assert "no GPU found, loaded in " in lines[1]
