"""`manage.py run` with no servers at all: SQLite and the filesystem broker, as on a fresh laptop."""

import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from tests.e2e.support import REPO_ROOT, photo_bytes, wait_for

pytestmark = pytest.mark.worker


def manage(*args: str, env: dict[str, str], timeout_s: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_group_alive(group_id: int) -> bool:
    try:
        os.killpg(group_id, 0)
    except ProcessLookupError:
        return False
    return True


def test_run_serves_and_classifies_on_sqlite_and_the_filesystem_broker_and_stops_on_ctrl_c(
    tmp_path: pathlib.Path, tiny_model: pathlib.Path
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("CELERY_BROKER_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}?timeout=20&transaction_mode=IMMEDIATE",
            "CELERY_BROKER_FILESYSTEM_DIR": str(tmp_path / "broker"),
            "CELERY_BEAT_SCHEDULE_FILENAME": str(tmp_path / "celerybeat-schedule"),
            "DJANGO_MEDIA_ROOT": str(tmp_path / "media"),
            "VITRINE_MODELS_DIR": str(tmp_path / "models"),
            "DJANGO_SUPERUSER_PASSWORD": "not-a-real-secret",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    (tmp_path / "photo.png").write_bytes(photo_bytes(seed=7))
    manage("migrate", "--noinput", env=env)
    manage(
        "shell",
        "-c",
        "from classifier.services.model_versions import model_version_register as register; "
        f"register(artifact_dir='{tiny_model}', activate=True)",
        env=env,
    )
    log_path = tmp_path / "run.log"
    child_groups: list[int] = []
    with log_path.open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "manage.py", "run", f"127.0.0.1:{free_port()}"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "inference@" in log_path.read_text() and " ready." in log_path.read_text(),
            timeout_s=90,
            what="the inference worker of manage.py run",
        )
        classified = manage(
            "shell",
            "-c",
            "import time\n"
            "from decimal import Decimal\n"
            "from django.core.files.uploadedfile import SimpleUploadedFile\n"
            "from catalog.models import Product\n"
            "from catalog.services.products import product_create\n"
            f"photo = SimpleUploadedFile('photo.png', open('{tmp_path / 'photo.png'}', 'rb').read())\n"
            "product = product_create(name='Scarf', sku='SC-1', price=Decimal('5'), image=photo)\n"
            "deadline = time.monotonic() + 30\n"
            "while Product.objects.get(pk=product.pk).status in ('pending', 'queued'):\n"
            "    assert time.monotonic() < deadline, 'not classified in 30 s'\n"
            "    time.sleep(0.05)\n"
            "product.refresh_from_db()\n"
            "print('status', product.status, product.model_version.name)\n",
            env=env,
        )
        assert (
            f"status needs_review {tiny_model.name}" in classified
            or f"status classified {tiny_model.name}" in (classified)
        )
        assert (
            "Created superuser 'admin' with password from DJANGO_SUPERUSER_PASSWORD" in log_path.read_text()
        )
        children = subprocess.run(
            ["ps", "-o", "pgid=", "--ppid", str(run.pid)], capture_output=True, text=True, check=True
        )
        child_groups += [int(group) for group in children.stdout.split()]
        assert len(child_groups) == 5, "web server, inference, training and jobs workers, sweep scheduler"

        run.send_signal(signal.SIGINT)

        assert run.wait(timeout=40) == 0
        assert not [group for group in child_groups if process_group_alive(group)]
    finally:
        for group in [run.pid, *child_groups]:
            if process_group_alive(group):
                os.killpg(group, signal.SIGKILL)
