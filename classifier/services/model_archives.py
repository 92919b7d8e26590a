"""Carrying a model version from one server to another as one archive: export with a manifest of every
file's sha256, import checking each one. Keras-free (manage.py model_export / model_import).
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
import uuid
import zlib

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from classifier.artifacts import ArtifactFetchError, model_version_artifact_dir, model_version_fetch
from classifier.ml.formats import METADATA_FILE, MODEL_FILE, file_sha256
from classifier.models import ModelVersion
from classifier.services.model_versions import (
    model_version_activate,
    model_version_problem,
    model_version_register,
)
from classifier.validators import metrics_problem, threshold_problem

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
# A manifest lists file names, sizes and checksums: far below this.
MANIFEST_MAX_BYTES = 1024 * 1024
ARCHIVE_FORMAT = "vitrine-model-version"
ARCHIVE_FORMAT_VERSION = 1


class ModelArchiveError(ValueError):
    """A version that cannot be exported, or an archive that cannot be imported; says why in one line."""


def _short(digest: str) -> str:
    return digest[:12]


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
    try:
        model_version_fetch(model_version=model_version)
    except ArtifactFetchError as error:
        raise ModelArchiveError(f"not exported: {error}") from None
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
                "sha256": file_sha256(artifact_dir / relative),
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
    manifest_member = members[manifest_members[0]]
    if manifest_member.size > MANIFEST_MAX_BYTES:
        raise ModelArchiveError(
            f"{archive_path}: refused, its {MANIFEST_FILE} holds {manifest_member.size} bytes "
            f"(at most {MANIFEST_MAX_BYTES}); nothing was imported"
        )
    try:
        manifest = json.loads(archive.extractfile(manifest_member).read())
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
    for name, entry in files.items():
        size = entry.get("size") if isinstance(entry, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ModelArchiveError(f"{archive_path}: refused, its manifest gives no size for {name}")
    if files[MODEL_FILE].get("sha256") != manifest.get("model_sha256"):
        raise ModelArchiveError(f"{archive_path}: its manifest names two different model files")
    problem = threshold_problem(manifest.get("threshold")) if manifest.get("threshold") is not None else None
    if problem is not None:
        raise ModelArchiveError(f"{archive_path}: refused, its manifest's threshold {problem}")
    problem = metrics_problem(manifest.get("metrics") or {})
    if problem is not None:
        raise ModelArchiveError(f"{archive_path}: refused, its manifest's metrics: {problem}")
    return manifest


def _check_sizes(manifest: dict, members: dict, root: str, archive_path: pathlib.Path) -> None:
    """Before anything is written: the total within the setting, each member the size its manifest says."""
    limit = settings.VITRINE_MODEL_IMPORT_MAX_BYTES
    total = sum(entry["size"] for entry in manifest["files"].values())
    if total > limit:
        raise ModelArchiveError(
            f"{archive_path}: refused, its files add up to {total} bytes, more than "
            f"VITRINE_MODEL_IMPORT_MAX_BYTES ({limit}); nothing was imported"
        )
    for name, entry in manifest["files"].items():
        member = members[pathlib.PurePosixPath(root, name)]
        if member.size != entry["size"]:
            raise ModelArchiveError(
                f"{archive_path}: refused, {name} holds {member.size} bytes, its manifest says "
                f"{entry['size']}; nothing was imported"
            )


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
        _check_sizes(manifest, members, root, archive_path)
        for relative in sorted(listed):
            expected = manifest["files"][str(relative)]
            target = staging.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            member = members[pathlib.PurePosixPath(root, relative)]
            written = 0
            with archive.extractfile(member) as source, target.open("wb") as out:
                for block in iter(lambda source=source: source.read(1 << 20), b""):
                    written += len(block)
                    # Stop at the first byte past the manifest's size: a lying archive never fills the disk.
                    if written > expected["size"]:
                        raise ModelArchiveError(
                            f"{archive_path}: refused, {relative} holds more than the {expected['size']} "
                            "bytes its manifest says; nothing was imported"
                        )
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
