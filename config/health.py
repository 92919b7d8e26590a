"""GET /healthz: can this deployment take a product and classify it now?

200 {"status": "ok", "checks": {...}} when the database, the broker and the active model's file are fine;
503 {"status": "failing", "failing": ["broker", ...], "checks": {...}} naming what is not, each with a reason.
Anonymous and cheap (the model file is hashed again only after it changed), so probes may call it often.
"""

from collections.abc import Callable

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu.exceptions import OperationalError as BrokerOperationalError

from classifier.selectors import model_version_active
from classifier.services.model_versions import model_version_problem
from config.celery_app import app as celery_app


def database_check() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as error:
        return {"ok": False, "error": f"database unreachable: {' '.join(str(error).split())}"}
    return {"ok": True}


def broker_check() -> dict:
    with celery_app.connection_for_write() as broker:
        try:
            # No retries: a probe wants the answer now, within CELERY_BROKER_CONNECTION_TIMEOUT.
            broker.ensure_connection(max_retries=0)
        except (*broker.connection_errors, BrokerOperationalError) as error:
            return {"ok": False, "error": f"broker unreachable: {error}"}
    return {"ok": True}


def model_check() -> dict:
    try:
        active = model_version_active()
    except DatabaseError:
        return {"ok": False, "error": "unknown: the database is unreachable"}
    if active is None:
        return {"ok": False, "error": "no model version is active"}
    problem = model_version_problem(model_version=active, reuse_known_hashes=True)
    if problem is not None:
        return {"ok": False, "version": active.name, "error": problem}
    return {"ok": True, "version": active.name}


CHECKS: dict[str, Callable[[], dict]] = {
    "database": database_check,
    "broker": broker_check,
    "model": model_check,
}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {name: check() for name, check in CHECKS.items()}
    failing = [name for name, result in checks.items() if not result["ok"]]
    body = {"status": "failing" if failing else "ok", "checks": checks}
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)
