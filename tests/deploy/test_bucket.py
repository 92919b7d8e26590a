"""The bucket's set-up (docker/minio/, run once by docker-compose.yml's minio-setup): who may read what, and
the script's refusals, which come before it talks to MinIO (no MinIO here)."""

import fnmatch
import json
import os
import subprocess

import pytest

from catalog.models import product_image_path
from catalog.photos import ORIGINALS_PREFIX
from tests.deploy.support import REPO_ROOT

MINIO_DIR = REPO_ROOT / "docker" / "minio"
BUCKET = "shop-photos"


def policy(name: str) -> dict:
    """A policy file as minio-setup.sh writes it for BUCKET."""
    return json.loads((MINIO_DIR / name).read_text().replace("BUCKET", BUCKET))


def allowed(document: dict, *, action: str, key: str) -> bool:
    """S3's evaluation for these policies: some Allow matches and no Deny does (* spans slashes in both)."""
    resource = f"arn:aws:s3:::{BUCKET}/{key}"

    def matches(statement: dict) -> bool:
        actions = statement["Action"]
        return any(fnmatch.fnmatchcase(action, pattern) for pattern in actions) and any(
            fnmatch.fnmatchcase(resource, pattern) for pattern in statement["Resource"]
        )

    effects = {statement["Effect"] for statement in document["Statement"] if matches(statement)}
    return effects == {"Allow"}


def test_anyone_may_read_the_photos_but_never_the_kept_originals_nor_the_models() -> None:
    anonymous = policy("anonymous-read-photos.json")
    photo = f"media/{product_image_path(None, 'shirt.JPG')}"

    assert allowed(anonymous, action="s3:GetObject", key=photo)
    assert not allowed(anonymous, action="s3:GetObject", key=f"media/{ORIGINALS_PREFIX}{photo[6:]}")
    assert not allowed(anonymous, action="s3:GetObject", key=f"models/{'ab' * 32}/model.keras")
    assert not allowed(anonymous, action="s3:PutObject", key=photo)
    assert not allowed(anonymous, action="s3:ListBucket", key="")
    assert all(statement["Principal"] == {"AWS": ["*"]} for statement in anonymous["Statement"])


def test_vitrines_own_key_may_read_and_write_its_bucket_only() -> None:
    own = policy("bucket-policy.json")
    resources = {resource for statement in own["Statement"] for resource in statement["Resource"]}

    assert resources == {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"}
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert allowed(own, action=action, key=f"models/{'ab' * 32}/model.keras"), action
    assert not any(
        action.startswith("admin:") or action == "s3:*" for s in own["Statement"] for action in s["Action"]
    )


def run_setup(**overrides: str) -> subprocess.CompletedProcess:
    environment = {
        "PATH": os.environ["PATH"],
        "MINIO_ROOT_USER": "vitrine-admin",
        "MINIO_ROOT_PASSWORD": "root-password",
        "AWS_STORAGE_BUCKET_NAME": BUCKET,
        "AWS_ACCESS_KEY_ID": "vitrine-app",
        "AWS_SECRET_ACCESS_KEY": "app-password",
        "VITRINE_MEDIA_URLS": "public",
        **overrides,
    }
    return subprocess.run(
        ["sh", str(MINIO_DIR / "minio-setup.sh")], env=environment, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"MINIO_ROOT_PASSWORD": ""}, "minio-setup: MINIO_ROOT_PASSWORD is empty; set it in .env"),
        ({"AWS_SECRET_ACCESS_KEY": ""}, "minio-setup: AWS_SECRET_ACCESS_KEY is empty; set it in .env"),
        ({"VITRINE_MEDIA_URLS": "open"}, "minio-setup: VITRINE_MEDIA_URLS is 'open'; use public or signed"),
        ({"AWS_STORAGE_BUCKET_NAME": "Shop_Photos"}, "minio-setup: bucket name 'Shop_Photos'"),
        ({"AWS_STORAGE_BUCKET_NAME": "ab"}, "minio-setup: bucket name 'ab'"),
    ],
)
def test_the_setup_refuses_missing_or_bad_settings_saying_which(overrides: dict, says: str) -> None:
    result = run_setup(**overrides)

    assert result.returncode == 1
    assert says in result.stderr
    # Refused before any mc command ran (there is no mc here: it would have failed otherwise).
    assert "mc: not found" not in result.stderr


def test_the_setup_accepts_good_settings_and_goes_on_to_minio() -> None:
    result = run_setup(VITRINE_MEDIA_URLS="signed")

    # No MinIO client here: the first mc command is where it stops.
    assert "minio-setup:" not in result.stderr
    assert "mc" in result.stderr
