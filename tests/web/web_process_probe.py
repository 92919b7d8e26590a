"""Run as a script in a fresh interpreter: loads the WSGI app, renders the admin, calls the API, then prints
JSON saying which heavy modules got imported and the process's peak resident memory.

    DJANGO_SETTINGS_MODULE=config.settings.local DATABASE_URL=sqlite:///db.sqlite3 python THIS_FILE
"""

import io
import json
import pathlib
import resource
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

from django.contrib.auth import get_user_model  # noqa: E402
from django.test import Client  # noqa: E402
from PIL import Image  # noqa: E402

ADMIN_PAGES = [
    "/admin/",
    "/admin/catalog/product/",
    "/admin/catalog/product/add/",
    "/admin/catalog/category/",
    "/admin/catalog/reviewqueueitem/",
    "/admin/classifier/modelversion/",
    "/admin/classifier/trainingrun/",
    "/admin/classifier/trainingrun/retrain/",
    "/admin/classifier/bulkjob/",
    "/admin/classifier/prediction/",
]
API_PAGES = [
    "/api/v1/products/",
    "/api/v1/categories/",
    "/api/v1/model-versions/",
    "/api/schema/",
    "/healthz",
]


def photo() -> io.BytesIO:
    data = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(data, format="PNG")
    data.seek(0)
    data.name = "red.png"
    return data


def main() -> None:
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_superuser("probe", "probe@example.com", "probe-password")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    statuses = {page: client.get(page).status_code for page in ADMIN_PAGES}
    created = client.post(
        "/api/v1/products/", {"name": "Red shirt", "sku": "RED-1", "price": "10.00", "image": photo()}
    )
    statuses["POST /api/v1/products/"] = created.status_code
    product_id = created.json()["id"]
    statuses[f"/admin/catalog/product/{product_id}/change/"] = client.get(
        f"/admin/catalog/product/{product_id}/change/"
    ).status_code
    statuses.update({page: client.get(page).status_code for page in API_PAGES})
    heavy = sorted(name for name in ("tensorflow", "keras", "classifier.workers") if name in sys.modules)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"statuses": statuses, "heavy_modules": heavy, "peak_rss_mb": round(peak_rss_mb, 1)}))


main()
