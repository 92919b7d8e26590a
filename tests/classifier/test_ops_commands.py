"""The operations commands: queue_status, model_check, model_export and model_import (README "Deploying")."""

import contextlib
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.utils import timezone

from catalog.models import Product
from classifier.models import ModelVersion
from classifier.services.classification import classification_enqueue
from classifier.services.model_versions import model_version_register
from config.celery_app import app as celery_app
from tests.e2e.support import (
    UNREACHABLE_BROKER_URL,
    BrokerQueues,
    database_url_of_tests,
    photo_bytes,
)

pytestmark = pytest.mark.django_db
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def models_dir(settings, tmp_path: pathlib.Path) -> pathlib.Path:
    settings.VITRINE_MODELS_DIR = tmp_path / "models"
    settings.VITRINE_MODELS_DIR.mkdir()
    return settings.VITRINE_MODELS_DIR


@pytest.fixture
def version(tiny_model: pathlib.Path, models_dir: pathlib.Path) -> ModelVersion:
    """An active version whose files are this test's own copy."""
    shutil.copytree(tiny_model, models_dir / "shop-v1")
    return model_version_register(artifact_dir=models_dir / "shop-v1", name="shop-v1", activate=True)


@pytest.fixture
def queues(settings) -> BrokerQueues:
    broker_queues = BrokerQueues(settings.CELERY_BROKER_URL)
    broker_queues.clear()
    yield broker_queues
    broker_queues.clear()


def run(command: str, *args: str) -> str:
    stdout = io.StringIO()
    call_command(command, *args, stdout=stdout)
    return stdout.getvalue()


def model_file(model_version: ModelVersion) -> pathlib.Path:
    from classifier.selectors import model_version_artifact_dir

    return model_version_artifact_dir(model_version=model_version) / "model.keras"


def product(sku: str, *, status: str, waited_s: int = 0) -> Product:
    image = ContentFile(photo_bytes(seed=len(sku)), name=f"{sku}.png")
    return Product.objects.create(
        name=sku,
        slug=sku.lower(),
        sku=sku,
        price=Decimal("5"),
        image=image,
        image_sha256=hashlib.sha256(photo_bytes(seed=len(sku))).hexdigest(),
        status=status,
        status_changed_at=timezone.now() - timedelta(seconds=waited_s),
    )


# queue_status


def test_queue_status_shows_queues_products_stuck_rows_and_the_active_version(
    version: ModelVersion, queues: BrokerQueues, settings
) -> None:
    settings.VITRINE_STUCK_AFTER_SECONDS = 120
    stuck = product("STUCK", status=Product.Status.PENDING, waited_s=600)
    product("FRESH", status=Product.Status.PENDING)
    product("DONE", status=Product.Status.CLASSIFIED)
    classification_enqueue(product_ids=[stuck.pk])
    classification_enqueue(product_ids=[stuck.pk])

    lines = run("queue_status").splitlines()

    assert "queue inference: 2 waiting, 0 delivered to a worker" in lines
    assert "queue training: 0 waiting, 0 delivered to a worker" in lines
    assert "products: pending 1, queued 1, classified 1, needs_review 0, failed 0 (3 in all)" in lines
    assert lines[
        lines.index("products: pending 1, queued 1, classified 1, needs_review 0, failed 0 (3 in all)") + 1
    ] == ("stuck (pending or queued longer than 120 s): 0")
    assert f"active model version: shop-v1 (id {version.pk}, seed_dense, 10 categories)" in lines


def test_queue_status_counts_rows_waiting_past_the_sweep_timeout(queues: BrokerQueues, settings) -> None:
    settings.VITRINE_STUCK_AFTER_SECONDS = 120
    product("OLD-1", status=Product.Status.QUEUED, waited_s=600)
    product("OLD-2", status=Product.Status.PENDING, waited_s=300)
    product("NEW", status=Product.Status.QUEUED, waited_s=10)

    output = run("queue_status")
    state = json.loads(run("queue_status", "--json"))

    assert (
        "stuck (pending or queued longer than 120 s): 2 - python manage.py sweep_stuck sends them again"
        in output
    )
    assert "active model version: none - products wait until one is activated" in output
    assert state["stuck"] == 2
    assert state["products_by_status"]["queued"] == 2
    assert state["queues"]["inference"] == {"waiting": 0, "delivered": 0}
    assert state["active_version"] is None


@contextlib.contextmanager
def broker_unreadable() -> Iterator[None]:
    """This process reads queues from a broker address where nothing listens, as during an outage."""
    saved_url = celery_app.conf.broker_read_url
    celery_app.conf.broker_read_url = UNREACHABLE_BROKER_URL
    celery_app._pool = None
    try:
        yield
    finally:
        celery_app.conf.broker_read_url = saved_url
        celery_app._pool = None


def test_queue_status_reports_an_unreachable_broker_and_fails(queues: BrokerQueues) -> None:
    product("ONE", status=Product.Status.PENDING)
    stdout = io.StringIO()

    with broker_unreadable(), pytest.raises(CommandError, match="the broker is unreachable: "):
        call_command("queue_status", stdout=stdout)

    assert "queue inference: unknown, the broker is unreachable" in stdout.getvalue()
    assert "products: pending 1," in stdout.getvalue()


# model_check


def test_model_check_passes_an_intact_model_and_names_its_checksum(version: ModelVersion) -> None:
    output = run("model_check", "--load")

    assert output.strip() == (
        f"model version shop-v1: {model_file(version)} is intact (sha256 {version.model_sha256}, "
        f"{model_file(version).stat().st_size:,} bytes), loads and runs"
    )


def test_model_check_names_a_corrupt_model_file(version: ModelVersion) -> None:
    path = model_file(version)
    path.write_bytes(path.read_bytes()[:-100])

    with pytest.raises(
        CommandError, match=rf"^model version shop-v1: {path} is corrupt or was replaced \(sha256"
    ):
        run("model_check")


def test_model_check_names_a_missing_model_file_and_metadata_for_another_model(version: ModelVersion) -> None:
    metadata_path = model_file(version).parent / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata_path.write_text(json.dumps({**metadata, "model_sha256": "f" * 64}))

    with pytest.raises(CommandError, match="metadata.json describes another model file"):
        run("model_check")
    model_file(version).unlink()
    with pytest.raises(CommandError, match=rf"{model_file(version)} is missing"):
        run("model_check", "shop-v1")


def test_model_check_refuses_a_file_that_matches_its_checksum_but_does_not_load(
    version: ModelVersion,
) -> None:
    # Registered and described as it is, yet not a Keras model: only loading it finds out.
    path = model_file(version)
    path.write_bytes(b"not a keras archive")
    digest = hashlib.sha256(b"not a keras archive").hexdigest()
    metadata_path = path.parent / "metadata.json"
    metadata_path.write_text(json.dumps({**json.loads(metadata_path.read_text()), "model_sha256": digest}))
    ModelVersion.objects.filter(pk=version.pk).update(model_sha256=digest)

    assert "is intact" in run("model_check")
    with pytest.raises(CommandError, match="^model version shop-v1: cannot load it"):
        run("model_check", "--load")


def test_model_check_without_an_active_version_or_with_an_unknown_name_fails() -> None:
    with pytest.raises(CommandError, match="^no model version is active$"):
        run("model_check")
    with pytest.raises(CommandError, match="^no model version is named 'nope'$"):
        run("model_check", "nope")


@pytest.mark.django_db(transaction=True)
def test_model_check_exits_1_with_one_line_and_no_traceback(
    version: ModelVersion, models_dir: pathlib.Path
) -> None:
    path = model_file(version)
    path.write_bytes(b"corrupt")

    result = subprocess.run(
        [sys.executable, "manage.py", "model_check"],
        cwd=REPO_ROOT,
        env={
            **_environment(),
            "DATABASE_URL": database_url_of_tests(),
            "VITRINE_MODELS_DIR": str(models_dir),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr.startswith(f"CommandError: model version shop-v1: {path} is corrupt or was replaced")
    assert "Traceback" not in result.stderr


def _environment() -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "TF_CPP_MIN_LOG_LEVEL": "2"}


# model_export and model_import


@pytest.fixture
def exported(version: ModelVersion, tmp_path: pathlib.Path) -> pathlib.Path:
    version.threshold = 0.8
    version.save(update_fields=["threshold"])
    archive = tmp_path / "shop-v1.tar.gz"
    output = run("model_export", "shop-v1", "--out", str(archive))
    assert output.startswith(f"model version shop-v1 exported to {archive} (")
    return archive


def archive_members(archive: pathlib.Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers() if member.isfile()}


def write_archive(target: pathlib.Path, members: dict[str, bytes]) -> pathlib.Path:
    with tarfile.open(target, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


def test_an_export_carries_every_file_with_its_checksum(
    exported: pathlib.Path, version: ModelVersion
) -> None:
    members = archive_members(exported)
    manifest = json.loads(members["shop-v1/manifest.json"])

    assert manifest["name"] == "shop-v1"
    assert manifest["model_sha256"] == version.model_sha256
    assert manifest["threshold"] == 0.8
    for name, entry in manifest["files"].items():
        assert hashlib.sha256(members[f"shop-v1/{name}"]).hexdigest() == entry["sha256"]
    assert {"model.keras", "metadata.json"} <= set(manifest["files"])


def test_an_export_round_trips_into_an_inactive_version_that_loads(
    exported: pathlib.Path, version: ModelVersion, models_dir: pathlib.Path
) -> None:
    output = run("model_import", str(exported), "--name", "shop-v1-copy")

    imported = ModelVersion.objects.get(name="shop-v1-copy")
    assert output.strip() == (
        "model version shop-v1-copy imported (seed_dense, 10 categories, inactive; activate it in the admin)"
    )
    assert not imported.is_active
    assert imported.model_sha256 == version.model_sha256
    assert imported.threshold == 0.8
    assert imported.class_names == version.class_names
    assert model_file(imported).parent.parent == models_dir
    assert "loads and runs" in run("model_check", "shop-v1-copy", "--load")


def test_an_import_can_activate_the_version(exported: pathlib.Path, version: ModelVersion) -> None:
    run("model_import", str(exported), "--name", "shop-v1-copy", "--activate")

    assert ModelVersion.objects.get(is_active=True).name == "shop-v1-copy"


def test_an_import_refuses_an_archive_whose_model_was_altered(
    exported: pathlib.Path, version: ModelVersion, models_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    members = archive_members(exported)
    members["shop-v1/model.keras"] = members["shop-v1/model.keras"][:-10] + bytes(10)
    altered = write_archive(tmp_path / "altered.tar.gz", members)
    folders_before = sorted(models_dir.iterdir())

    with pytest.raises(
        CommandError, match=rf"{altered}: model.keras is corrupt \(sha256 .*nothing was imported"
    ):
        run("model_import", str(altered), "--name", "altered")

    assert not ModelVersion.objects.filter(name="altered").exists()
    assert sorted(models_dir.iterdir()) == folders_before


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) // 2], "damaged or not a model version export"),
        (lambda data: b"just some bytes, not an archive at all", "damaged or not a model version export"),
    ],
    ids=["truncated", "not-an-archive"],
)
def test_an_import_refuses_a_damaged_file(
    exported: pathlib.Path, version: ModelVersion, models_dir: pathlib.Path, damage, message: str
) -> None:
    exported.write_bytes(damage(exported.read_bytes()))
    folders_before = sorted(models_dir.iterdir())

    with pytest.raises(CommandError, match=message):
        run("model_import", str(exported), "--name", "damaged")

    assert not ModelVersion.objects.filter(name="damaged").exists()
    assert sorted(models_dir.iterdir()) == folders_before


def test_an_import_refuses_files_outside_its_folder_or_not_in_its_manifest(
    exported: pathlib.Path, version: ModelVersion, tmp_path: pathlib.Path
) -> None:
    members = archive_members(exported)
    escaping = write_archive(tmp_path / "escaping.tar.gz", {**members, "shop-v1/../../evil.py": b"print(1)"})
    extra = write_archive(tmp_path / "extra.tar.gz", {**members, "shop-v1/notes.txt": b"not listed"})

    with pytest.raises(
        CommandError, match=r"refused, it holds a path outside its folder \(shop-v1/\.\./\.\./evil\.py\)"
    ):
        run("model_import", str(escaping), "--name", "escaping")
    with pytest.raises(CommandError, match="refused, files not in its manifest: notes.txt"):
        run("model_import", str(extra), "--name", "extra")
    assert not (tmp_path.parent / "evil.py").exists()


def test_an_import_refuses_a_name_already_taken(exported: pathlib.Path, version: ModelVersion) -> None:
    with pytest.raises(
        CommandError, match="a model version named 'shop-v1' already exists; give another with --name"
    ):
        run("model_import", str(exported))


def test_an_export_refuses_a_corrupt_version_an_existing_file_and_an_unknown_name(
    version: ModelVersion, tmp_path: pathlib.Path
) -> None:
    taken = tmp_path / "taken.tar.gz"
    taken.write_bytes(b"")

    with pytest.raises(CommandError, match=f"{taken} already exists; choose another file name"):
        run("model_export", "shop-v1", "--out", str(taken))
    with pytest.raises(CommandError, match="no model version is named 'nope'"):
        run("model_export", "nope")
    model_file(version).write_bytes(b"corrupt")
    with pytest.raises(
        CommandError, match=r"^not exported: model version shop-v1: .* is corrupt or was replaced"
    ):
        run("model_export", "shop-v1", "--out", str(tmp_path / "out.tar.gz"))
    assert not (tmp_path / "out.tar.gz").exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".part")] == []


def with_manifest(members: dict[str, bytes], **changes: object) -> dict[str, bytes]:
    manifest = json.loads(members["shop-v1/manifest.json"])
    manifest.update(changes)
    return {**members, "shop-v1/manifest.json": json.dumps(manifest).encode()}


def test_an_import_refuses_a_member_bigger_than_its_manifest_says_before_writing_it(
    exported: pathlib.Path, version: ModelVersion, models_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    members = archive_members(exported)
    # 64 MiB of zeros: a few dozen KiB compressed, the shape of a decompression bomb.
    members["shop-v1/curves.png"] = bytes(64 * 1024 * 1024)
    bomb = write_archive(tmp_path / "bomb.tar.gz", members)
    assert bomb.stat().st_size < exported.stat().st_size + 1024 * 1024
    folders_before = sorted(models_dir.iterdir())

    with pytest.raises(CommandError) as refused:
        run("model_import", str(bomb), "--name", "bomb")

    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{bomb}: refused, curves.png holds 67108864 bytes, its manifest says ")
    assert message.endswith("nothing was imported")
    assert sorted(models_dir.iterdir()) == folders_before
    assert not ModelVersion.objects.filter(name="bomb").exists()


def test_an_import_stops_writing_at_the_first_byte_past_the_manifests_size(
    exported: pathlib.Path, version: ModelVersion, models_dir: pathlib.Path, monkeypatch
) -> None:
    class EndlessZeros(io.RawIOBase):
        """A member whose stream goes on past its declared size, as a lying reader would."""

        read_bytes = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            buffer[:] = bytes(len(buffer))
            EndlessZeros.read_bytes += len(buffer)
            return len(buffer)

    manifest = json.loads(archive_members(exported)["shop-v1/manifest.json"])
    model_size = manifest["files"]["model.keras"]["size"]
    extractfile = tarfile.TarFile.extractfile
    monkeypatch.setattr(
        tarfile.TarFile,
        "extractfile",
        lambda self, member: (
            io.BufferedReader(EndlessZeros()) if member.name.endswith(".keras") else extractfile(self, member)
        ),
    )
    folders_before = sorted(models_dir.iterdir())

    with pytest.raises(CommandError, match=r"refused, model\.keras holds more than the \d+ bytes"):
        run("model_import", str(exported), "--name", "endless")

    assert EndlessZeros.read_bytes <= model_size + 2 * (1 << 20)
    assert sorted(models_dir.iterdir()) == folders_before


def test_an_import_refuses_an_archive_bigger_than_the_setting_allows(
    exported: pathlib.Path, version: ModelVersion, models_dir: pathlib.Path, settings
) -> None:
    settings.VITRINE_MODEL_IMPORT_MAX_BYTES = 1000
    folders_before = sorted(models_dir.iterdir())

    with pytest.raises(
        CommandError,
        match=r"refused, its files add up to \d+ bytes, more than VITRINE_MODEL_IMPORT_MAX_BYTES \(1000\); "
        "nothing was imported$",
    ):
        run("model_import", str(exported), "--name", "too-big")

    assert sorted(models_dir.iterdir()) == folders_before


def test_an_import_refuses_a_manifest_without_sizes(
    exported: pathlib.Path, version: ModelVersion, tmp_path: pathlib.Path
) -> None:
    members = archive_members(exported)
    files = json.loads(members["shop-v1/manifest.json"])["files"]
    del files["model.keras"]["size"]
    sizeless = write_archive(tmp_path / "sizeless.tar.gz", with_manifest(members, files=files))

    with pytest.raises(CommandError, match="refused, its manifest gives no size for model.keras$"):
        run("model_import", str(sizeless), "--name", "sizeless")


OUT_OF_BOUNDS = "its manifest's threshold must be above 0 and at most 1 (a confidence), not"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold": 0}, f"{OUT_OF_BOUNDS} 0"),
        ({"threshold": 1.5}, f"{OUT_OF_BOUNDS} 1.5"),
        (
            {"threshold": "high"},
            "its manifest's threshold must be a number above 0 and at most 1, not 'high'",
        ),
        (
            {"metrics": {"test_accuracy": "98%"}},
            "its manifest's metrics: test_accuracy is '98%', not a number",
        ),
        (
            {"metrics": {"ood": {"keep_rate": [1]}}},
            "its manifest's metrics: ood.keep_rate is [1], not a number",
        ),
        ({"metrics": ["accuracy"]}, "its manifest's metrics: not an object of named figures (list)"),
    ],
    ids=["threshold-0", "threshold-above-1", "threshold-words", "metric-words", "nested-metric", "list"],
)
def test_an_import_refuses_a_threshold_out_of_bounds_and_figures_that_are_not_numbers(
    exported: pathlib.Path, version: ModelVersion, tmp_path: pathlib.Path, changes: dict, message: str
) -> None:
    archive = write_archive(tmp_path / "odd.tar.gz", with_manifest(archive_members(exported), **changes))

    with pytest.raises(CommandError) as refused:
        run("model_import", str(archive), "--name", "odd")

    assert str(refused.value) == f"{archive}: refused, {message}"
    assert not ModelVersion.objects.filter(name="odd").exists()


def test_an_import_keeps_figures_in_words_beside_the_numbers(
    exported: pathlib.Path, version: ModelVersion, tmp_path: pathlib.Path
) -> None:
    metrics = {"test_accuracy": 0.91, "evaluated_on": "clothing-small/validation", "ood": {"keep_rate": 0.98}}
    members = with_manifest(archive_members(exported), metrics=metrics)
    archive = write_archive(tmp_path / "words.tar.gz", members)

    run("model_import", str(archive), "--name", "words")

    assert ModelVersion.objects.get(name="words").metrics == metrics
