"""Running a deployment: the queues' state, whether a model version's files are intact, and carrying a model
version from one server to another as one archive.

No TensorFlow here: the web process (/healthz) and the management commands use it too.
"""

import hashlib
import io
import json
import logging
import os
import pathlib
import re
import shutil
import tarfile
import tempfile
import threading
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

from catalog.models import Product
from classifier.models import BulkJob, ModelVersion, TrainingRun
from classifier.selectors import model_version_active, model_version_artifact_dir
from classifier.services import model_version_activate, model_version_register

logger = logging.getLogger(__name__)

# classifier.ml.artifact's file names; that module imports Keras, which the web process must not load.
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
MANIFEST_FILE = "manifest.json"
ARCHIVE_FORMAT = "vitrine-model-version"
ARCHIVE_FORMAT_VERSION = 1
WAITING_STATUSES = (Product.Status.PENDING, Product.Status.QUEUED)

_hash_lock = threading.Lock()
# path -> (size, mtime, inode) when hashed, and the digest: /healthz rehashes a model only after it changed.
_hashed_files: dict[pathlib.Path, tuple[tuple[int, int, int], str]] = {}


class ModelArchiveError(ValueError):
    """A version that cannot be exported, or an archive that cannot be imported; says why in one line."""


def file_sha256(*, path: pathlib.Path, reuse_known: bool = False) -> str:
    """The file's sha256; with reuse_known, an earlier digest while size, mtime and inode are unchanged."""
    stat = path.stat()
    signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if reuse_known:
        with _hash_lock:
            known = _hashed_files.get(path)
        if known is not None and known[0] == signature:
            return known[1]
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    with _hash_lock:
        _hashed_files[path] = (signature, digest.hexdigest())
    return digest.hexdigest()


def _short(digest: str) -> str:
    return digest[:12]


def model_version_problem(*, model_version: ModelVersion, reuse_known_hashes: bool = False) -> str | None:
    """Why the version's files cannot be served, in one line naming the version and the file; None if intact.

    Intact: model.keras is the very file registered (its sha256 is ModelVersion.model_sha256) and
    metadata.json is readable and names that same file.
    """
    artifact_dir = model_version_artifact_dir(model_version=model_version)
    model_path = artifact_dir / MODEL_FILE
    metadata_path = artifact_dir / METADATA_FILE
    prefix = f"model version {model_version.name}"
    if not artifact_dir.is_dir():
        return f"{prefix}: its directory {artifact_dir} is missing"
    if not model_path.is_file():
        return f"{prefix}: {model_path} is missing"
    try:
        actual = file_sha256(path=model_path, reuse_known=reuse_known_hashes)
    except OSError as error:
        return f"{prefix}: cannot read {model_path} ({error.strerror or error})"
    if actual != model_version.model_sha256:
        return (
            f"{prefix}: {model_path} is corrupt or was replaced "
            f"(sha256 {_short(actual)}…, registered {_short(model_version.model_sha256)}…)"
        )
    try:
        metadata = json.loads(metadata_path.read_text())
    except FileNotFoundError:
        return f"{prefix}: {metadata_path} is missing"
    except (OSError, ValueError) as error:
        return f"{prefix}: {metadata_path} is unreadable ({error})"
    named = metadata.get("model_sha256") if isinstance(metadata, dict) else None
    if named != model_version.model_sha256:
        return f"{prefix}: {metadata_path} describes another model file (sha256 {_short(str(named))}…)"
    return None


# Queue state


@dataclass(frozen=True)
class QueueCount:
    name: str
    # Messages waiting for a worker; None when the broker could not be read.
    waiting: int | None
    # Delivered to a worker and not acknowledged yet (running, or to be redelivered); None where unknown.
    delivered: int | None = None


@dataclass(frozen=True)
class QueueState:
    broker: str
    broker_error: str | None
    queues: list[QueueCount]
    products_by_status: dict[str, int]
    stuck: int
    stuck_after_s: int
    oldest_waiting_since: datetime | None
    active_version: ModelVersion | None
    training_runs_in_progress: int
    bulk_jobs_in_progress: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        active = self.active_version
        return {
            "broker": self.broker,
            "broker_error": self.broker_error,
            "queues": {
                queue.name: {"waiting": queue.waiting, "delivered": queue.delivered} for queue in self.queues
            },
            "products_by_status": self.products_by_status,
            "stuck": self.stuck,
            "stuck_after_s": self.stuck_after_s,
            "oldest_waiting_since": self.oldest_waiting_since.isoformat()
            if self.oldest_waiting_since
            else None,
            "active_version": (
                {"id": active.pk, "name": active.name, "architecture": active.architecture}
                if active
                else None
            ),
            "training_runs_in_progress": self.training_runs_in_progress,
            "bulk_jobs_in_progress": self.bulk_jobs_in_progress,
        }


def _delivered_per_queue(channel: object) -> dict[str, int] | None:
    """Redis keeps delivered, unacknowledged messages in one hash; count them by the queue they came from."""
    client = getattr(channel, "client", None)
    unacked_key = getattr(channel, "unacked_key", None)
    if client is None or unacked_key is None:
        return None
    counts: dict[str, int] = {}
    for raw in client.hvals(unacked_key):
        try:
            _, _, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        counts[routing_key] = counts.get(routing_key, 0) + 1
    return counts


def _broker_queue_counts(queue_names: list[str]) -> tuple[str, list[QueueCount], str | None]:
    from config.celery_app import app

    with app.connection_for_read() as connection:
        broker = connection.as_uri()
        try:
            connection.ensure_connection(max_retries=0)
            channel = connection.default_channel
            counts = []
            delivered = _delivered_per_queue(channel)
            for name in queue_names:
                try:
                    waiting = channel.queue_declare(queue=name, passive=True).message_count
                except connection.channel_errors:
                    # A queue nobody has sent to yet does not exist in the broker: nothing waits in it.
                    waiting = 0
                counts.append(
                    QueueCount(name, waiting, None if delivered is None else delivered.get(name, 0))
                )
            return broker, counts, None
        except (*connection.connection_errors, BrokerOperationalError) as error:
            return broker, [QueueCount(name, None) for name in queue_names], str(error)


def queue_state() -> QueueState:
    """What waits where: broker queues, products by status, rows stuck past the sweep timeout, the model."""
    queue_names = [settings.VITRINE_INFERENCE_QUEUE, settings.VITRINE_TRAINING_QUEUE]
    broker, queues, broker_error = _broker_queue_counts(queue_names)
    by_status = dict(Product.objects.values_list("status").annotate(count=Count("pk")).order_by())
    products_by_status = {value: by_status.get(value, 0) for value in Product.Status.values}
    stuck_after_s = settings.VITRINE_STUCK_AFTER_SECONDS
    waiting = Product.objects.filter(status__in=WAITING_STATUSES)
    oldest = waiting.order_by("status_changed_at").values_list("status_changed_at", flat=True).first()
    return QueueState(
        broker=broker,
        broker_error=broker_error,
        queues=queues,
        products_by_status=products_by_status,
        stuck=waiting.filter(status_changed_at__lt=timezone.now() - timedelta(seconds=stuck_after_s)).count(),
        stuck_after_s=stuck_after_s,
        oldest_waiting_since=oldest,
        active_version=model_version_active(),
        training_runs_in_progress=TrainingRun.objects.filter(
            status__in=(TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING)
        ).count(),
        bulk_jobs_in_progress=BulkJob.objects.filter(
            status__in=(BulkJob.Status.QUEUED, BulkJob.Status.RUNNING)
        ).count(),
    )


# Export and import


def _archive_root(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model-version"


def _artifact_files(artifact_dir: pathlib.Path) -> list[pathlib.Path]:
    """Regular files of the artifact directory, relative, sorted; links are never followed or carried."""
    return sorted(
        path.relative_to(artifact_dir)
        for path in artifact_dir.rglob("*")
        if path.is_file() and not path.is_symlink() and not any(p.is_symlink() for p in path.parents)
    )


def model_version_export(*, model_version: ModelVersion, out_path: pathlib.Path) -> pathlib.Path:
    """Writes the version's artifact directory and a manifest (sha256 of every file) as one .tar.gz.

    Refuses a version whose model file is not the registered one: a corrupt model must not travel.
    """
    out_path = pathlib.Path(out_path)
    problem = model_version_problem(model_version=model_version)
    if problem is not None:
        raise ModelArchiveError(f"not exported: {problem}")
    if out_path.exists():
        raise ModelArchiveError(f"{out_path} already exists; choose another file name")
    if not out_path.parent.is_dir():
        raise ModelArchiveError(f"{out_path.parent}: no such directory")
    artifact_dir = model_version_artifact_dir(model_version=model_version)
    files = _artifact_files(artifact_dir)
    manifest = {
        "format": ARCHIVE_FORMAT,
        "format_version": ARCHIVE_FORMAT_VERSION,
        "name": model_version.name,
        "architecture": model_version.architecture,
        "class_names": list(model_version.class_names),
        "model_sha256": model_version.model_sha256,
        "threshold": model_version.threshold,
        "metrics": model_version.metrics,
        "data_fingerprint": model_version.data_fingerprint,
        "exported_at": timezone.now().isoformat(),
        "files": {
            relative.as_posix(): {
                "sha256": file_sha256(path=artifact_dir / relative),
                "size": (artifact_dir / relative).stat().st_size,
            }
            for relative in files
        },
    }
    root = _archive_root(model_version.name)
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    # Written beside the target and renamed at the end: a failed export leaves no half archive behind.
    handle, partial_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".part")
    os.close(handle)
    partial = pathlib.Path(partial_name)
    try:
        with tarfile.open(partial, "w:gz") as archive:
            info = tarfile.TarInfo(f"{root}/{MANIFEST_FILE}")
            info.size = len(manifest_bytes)
            info.mtime = int(timezone.now().timestamp())
            info.mode = 0o644
            archive.addfile(info, fileobj=io.BytesIO(manifest_bytes))
            for relative in files:
                archive.add(artifact_dir / relative, arcname=f"{root}/{relative.as_posix()}", recursive=False)
        partial.replace(out_path)
    finally:
        partial.unlink(missing_ok=True)
    logger.info("model version %s exported to %s (%s files)", model_version.name, out_path, len(files))
    return out_path


# What a damaged archive raises while it is read: a truncated or altered gzip stream, a broken tar header.
_DAMAGED_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def _member_path(member: tarfile.TarInfo, archive_path: pathlib.Path) -> pathlib.PurePosixPath:
    path = pathlib.PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ModelArchiveError(
            f"{archive_path}: refused, it holds a path outside its folder ({member.name})"
        )
    if not (member.isfile() or member.isdir()):
        raise ModelArchiveError(f"{archive_path}: refused, {member.name} is a link or a device, not a file")
    return path


def _read_manifest(archive: tarfile.TarFile, members: dict, archive_path: pathlib.Path) -> dict:
    manifest_members = [path for path in members if path.name == MANIFEST_FILE and len(path.parts) == 2]
    if len(manifest_members) != 1:
        raise ModelArchiveError(f"{archive_path}: not a model version export ({MANIFEST_FILE} is missing)")
    try:
        manifest = json.loads(archive.extractfile(members[manifest_members[0]]).read())
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelArchiveError(f"{archive_path}: its {MANIFEST_FILE} is unreadable ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
        raise ModelArchiveError(f"{archive_path}: not a model version export (unknown manifest format)")
    if manifest.get("format_version") != ARCHIVE_FORMAT_VERSION:
        raise ModelArchiveError(
            f"{archive_path}: export format version {manifest.get('format_version')!r}, "
            f"this vitrine reads version {ARCHIVE_FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files or METADATA_FILE not in files:
        raise ModelArchiveError(f"{archive_path}: its manifest lists no {MODEL_FILE} and {METADATA_FILE}")
    if files[MODEL_FILE].get("sha256") != manifest.get("model_sha256"):
        raise ModelArchiveError(f"{archive_path}: its manifest names two different model files")
    return manifest


def _extract_verified(archive_path: pathlib.Path, staging: pathlib.Path) -> dict:
    """Extracts the archive into `staging`, checking every file against the manifest; returns the manifest."""
    with tarfile.open(archive_path, "r:*") as archive:
        members = {_member_path(member, archive_path): member for member in archive.getmembers()}
        roots = {path.parts[0] for path in members}
        if len(roots) != 1:
            raise ModelArchiveError(f"{archive_path}: not a model version export (expected one top folder)")
        manifest = _read_manifest(archive, members, archive_path)
        listed = {pathlib.PurePosixPath(name) for name in manifest["files"]}
        carried = {
            pathlib.PurePosixPath(*path.parts[1:])
            for path, member in members.items()
            if member.isfile() and path.parts[1:] != (MANIFEST_FILE,)
        }
        if carried - listed:
            extra = ", ".join(sorted(str(path) for path in carried - listed))
            raise ModelArchiveError(f"{archive_path}: refused, files not in its manifest: {extra}")
        if listed - carried:
            missing = ", ".join(sorted(str(path) for path in listed - carried))
            raise ModelArchiveError(f"{archive_path}: damaged, files of its manifest are missing: {missing}")
        root = next(iter(roots))
        for relative in sorted(listed):
            if ".." in relative.parts or relative.is_absolute():
                raise ModelArchiveError(f"{archive_path}: refused, its manifest names {relative}")
            expected = manifest["files"][str(relative)]
            target = staging.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            member = members[pathlib.PurePosixPath(root, relative)]
            with archive.extractfile(member) as source, target.open("wb") as out:
                for block in iter(lambda source=source: source.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != expected.get("sha256"):
                raise ModelArchiveError(
                    f"{archive_path}: {relative} is corrupt (sha256 {_short(digest.hexdigest())}…, "
                    f"the manifest says {_short(str(expected.get('sha256')))}…); nothing was imported"
                )
    try:
        metadata = json.loads((staging / METADATA_FILE).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelArchiveError(f"{archive_path}: its {METADATA_FILE} is unreadable ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("model_sha256") != manifest["model_sha256"]:
        raise ModelArchiveError(f"{archive_path}: its {METADATA_FILE} describes another model file")
    return manifest


def model_version_import(
    *, archive_path: pathlib.Path, name: str | None = None, activate: bool = False
) -> ModelVersion:
    """Registers the version an export archive holds, inactive unless `activate`, checking every sha256.

    The files go to a new folder under VITRINE_MODELS_DIR; a corrupt or foreign archive leaves nothing behind.
    """
    archive_path = pathlib.Path(archive_path)
    if not archive_path.is_file():
        raise ModelArchiveError(f"{archive_path}: no such file")
    models_dir = pathlib.Path(settings.VITRINE_MODELS_DIR)
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(dir=models_dir, prefix=".import-"))
    target: pathlib.Path | None = None
    try:
        try:
            manifest = _extract_verified(archive_path, staging)
        except _DAMAGED_ARCHIVE_ERRORS as error:
            raise ModelArchiveError(
                f"{archive_path}: damaged or not a model version export ({error}); nothing was imported"
            ) from None
        name = name or str(manifest.get("name") or "")
        if not name:
            raise ModelArchiveError(f"{archive_path}: its manifest names no version; give one with --name")
        if ModelVersion.objects.filter(name=name).exists():
            raise ModelArchiveError(
                f"a model version named {name!r} already exists; give another with --name"
            )
        target = models_dir / f"{_archive_root(name)}-{uuid.uuid4().hex[:6]}"
        staging.rename(target)
        with transaction.atomic():
            model_version = model_version_register(artifact_dir=target, name=name)
            model_version.threshold = manifest.get("threshold", model_version.threshold)
            model_version.metrics = manifest.get("metrics") or model_version.metrics
            model_version.save(update_fields=["threshold", "metrics"])
            if activate:
                model_version = model_version_activate(model_version=model_version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if target is not None:
            shutil.rmtree(target, ignore_errors=True)
        raise
    logger.info("model version %s imported from %s into %s", model_version.name, archive_path, target)
    return model_version
