"""Where a model version's files are: this machine's disk, and with VITRINE_STORAGE=s3 the bucket.

With object storage a version's files are uploaded once, under models/<sha256 of model.keras>/ (the same name
always holds the same bytes, so a second upload of the same model is skipped). Each host fetches a version
into its own cache (VITRINE_MODELS_DIR/fetched/<sha256>/) the first time it needs it, and keeps it only if
model.keras hashes to the sha256 the version was registered with: no host shares a disk with another.
Keras-free: the web process fetches a version's report files (JSON, PNG) the same way, never the model.
"""

import os
import pathlib
import shutil
import tempfile

from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage, storages

from classifier.ml.formats import MODEL_FILE, file_sha256
from classifier.models import ModelVersion

ARTIFACTS_STORAGE = "artifacts"
FETCHED_FOLDER = "fetched"


class ArtifactFetchError(RuntimeError):
    """The bucket's copy of a version cannot be used: missing, unreadable, or not the registered model."""


def artifact_storage() -> Storage | None:
    """The bucket's model storage, or None when model versions live on this machine's disk only."""
    return storages[ARTIFACTS_STORAGE] if ARTIFACTS_STORAGE in settings.STORAGES else None


def model_version_artifact_dir(*, model_version: ModelVersion) -> pathlib.Path:
    """The version's directory on this machine: its fetched copy when it is in the bucket, else the folder
    it was registered from (relative paths are under VITRINE_MODELS_DIR)."""
    models_dir = pathlib.Path(settings.VITRINE_MODELS_DIR)
    if model_version.artifact_key:
        return models_dir / FETCHED_FOLDER / model_version.model_sha256
    return models_dir / model_version.artifact_path


def artifacts_upload(*, artifact_dir: pathlib.Path, model_sha256: str) -> str:
    """Puts the directory's files in the bucket under <sha256>/ and returns that key prefix.

    model.keras goes last, so a prefix that has it has everything; files already there are not sent again.
    """
    storage = artifact_storage()
    if storage is None:
        raise ArtifactFetchError("no artifact storage: VITRINE_STORAGE is not s3")
    files = sorted(
        (path for path in pathlib.Path(artifact_dir).iterdir() if path.is_file()),
        key=lambda path: (path.name == MODEL_FILE, path.name),
    )
    for path in files:
        key = f"{model_sha256}/{path.name}"
        if not storage.exists(key):
            with path.open("rb") as content:
                storage.save(key, File(content, name=path.name))
    return model_sha256


def _stored_key(model_version: ModelVersion, name: str) -> str:
    return f"{model_version.artifact_key}/{name}"


def stored_model_signature(*, model_version: ModelVersion) -> tuple[object, ...]:
    """Size and time of the bucket's model.keras (None when gone): it changes when the object is replaced."""
    storage = artifact_storage()
    key = _stored_key(model_version, MODEL_FILE)
    try:
        return (storage.size(key), storage.get_modified_time(key).isoformat())
    except Exception:  # botocore's ClientError and connection errors alike mean "cannot see it now"
        return (None,)


def model_version_fetch(*, model_version: ModelVersion) -> pathlib.Path:
    """The version's directory on this machine, downloaded from the bucket first when not fetched yet.

    The download goes to a temporary folder beside the cache and becomes the cached copy only once its
    model.keras hashes to the registered sha256; otherwise ArtifactFetchError says which object is wrong.
    """
    target = model_version_artifact_dir(model_version=model_version)
    if not model_version.artifact_key or (target / MODEL_FILE).is_file():
        return target
    storage = artifact_storage()
    prefix = f"model version {model_version.name}"
    if storage is None:
        raise ArtifactFetchError(f"{prefix} is in object storage, but VITRINE_STORAGE is not s3 on this host")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    try:
        _download_all(storage, model_version, partial)
        actual = file_sha256(partial / MODEL_FILE)
        if actual != model_version.model_sha256:
            raise ArtifactFetchError(
                f"{prefix}: the bucket's {_stored_key(model_version, MODEL_FILE)} is corrupt or was replaced "
                f"(sha256 {actual[:12]}…, registered {model_version.model_sha256[:12]}…)"
            )
        target.mkdir(exist_ok=True)
        # File by file, model.keras last: a cached model.keras means a complete, verified copy (report files
        # the web process fetched alone may already be there; another process's copy is the same bytes).
        for path in sorted(partial.iterdir(), key=lambda path: path.name == MODEL_FILE):
            os.replace(path, target / path.name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _download_all(storage: Storage, model_version: ModelVersion, into: pathlib.Path) -> None:
    prefix = f"model version {model_version.name}"
    try:
        _, names = storage.listdir(model_version.artifact_key)
    except Exception as error:  # botocore raises ClientError, EndpointConnectionError and more
        raise ArtifactFetchError(
            f"{prefix}: cannot list the bucket's {model_version.artifact_key}/ ({error})"
        ) from error
    if MODEL_FILE not in names:
        raise ArtifactFetchError(f"{prefix}: the bucket has no {_stored_key(model_version, MODEL_FILE)}")
    for name in names:
        _download(storage, _stored_key(model_version, name), into / name, prefix=prefix)


def _download(storage: Storage, key: str, path: pathlib.Path, *, prefix: str) -> None:
    try:
        with storage.open(key, "rb") as stored, path.open("wb") as local:
            shutil.copyfileobj(stored, local, length=1 << 20)
    except Exception as error:  # as above: any storage error means this file cannot be fetched now
        raise ArtifactFetchError(f"{prefix}: cannot download the bucket's {key} ({error})") from error


def stored_file_copy(*, storage: Storage, name: str, path: pathlib.Path) -> None:
    """Writes the stored file `name` to `path` whole or not at all: into a temporary file beside it, then
    renamed over it. Raises what the storage raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = pathlib.Path(tempfile.mkstemp(dir=path.parent, prefix=".partial-")[1])
    try:
        with storage.open(name, "rb") as stored, partial.open("wb") as local:
            shutil.copyfileobj(stored, local, length=1 << 20)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def model_version_report_file(*, model_version: ModelVersion, name: str) -> pathlib.Path | None:
    """One of the version's small files (a report, a picture) on this machine, fetched alone if needed;
    None when the bucket does not have it. Never the model: the web process has no use for it."""
    target = model_version_artifact_dir(model_version=model_version)
    path = target / name
    if path.is_file() or not model_version.artifact_key or name == MODEL_FILE:
        return path
    storage = artifact_storage()
    if storage is None or not storage.exists(_stored_key(model_version, name)):
        return None
    try:
        stored_file_copy(storage=storage, name=_stored_key(model_version, name), path=path)
    except Exception:  # botocore's errors alike: the report cannot be fetched now, the page goes without it
        return None
    return path
