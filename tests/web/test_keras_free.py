"""The web process (gunicorn, runserver: the admin, the API, /healthz) never imports TensorFlow."""

import json
import os
import pathlib
import subprocess
import sys

from tests.e2e.support import REPO_ROOT

PROBE = pathlib.Path(__file__).with_name("web_process_probe.py")


def test_admin_pages_and_api_calls_never_import_tensorflow(tmp_path) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://localhost//",
        "CELERY_BROKER_FILESYSTEM_DIR": str(tmp_path / "broker"),
        "DJANGO_MEDIA_ROOT": str(tmp_path / "media"),
        "VITRINE_MODELS_DIR": str(tmp_path / "models"),
    }
    result = subprocess.run(
        [sys.executable, str(PROBE)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    # /healthz answers 503 here: no model version is active and no worker runs; it still must not load Keras.
    expected = {page: 200 for page in report["statuses"]} | {"POST /api/v1/products/": 201, "/healthz": 503}
    assert report["statuses"] == expected
    assert report["heavy_modules"] == []
