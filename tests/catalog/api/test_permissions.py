"""Who may call what: every endpoint x every method x every caller (the roles of README "Security").

Each cell is a status; an allowed write is checked for its effect, a refused one for having changed nothing.
"""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from catalog.api.urls import urlpatterns
from catalog.models import Product
from classifier.api import urlpatterns as classifier_urls
from tests.roles import CALLERS

pytestmark = pytest.mark.django_db

METHODS = ("get", "post", "put", "patch", "delete")
# Expected status for each caller, in the order of CALLERS:
#   anonymous, non-staff, staff without groups, viewer, catalog editor, ML operator, superuser.
# 401: no credentials; 403: signed in without the model permission the method needs (GET/HEAD/OPTIONS
# view, POST add, PUT/PATCH change, DELETE delete; classifying again is a change); 405: allowed, but no such
# operation.
OPEN_READ = (200, 200, 200, 200, 200, 200, 200)
EVERY_ROLE_READS = (401, 403, 403, 200, 200, 200, 200)
EDITOR_ONLY_405 = (401, 403, 403, 403, 405, 403, 405)
SUPERUSER_ONLY_405 = (401, 403, 403, 403, 403, 403, 405)
ACCESS = {
    "catalog-api:product-list": {
        "get": OPEN_READ,
        "post": (401, 403, 403, 403, 201, 403, 201),
        "put": EDITOR_ONLY_405,
        "patch": EDITOR_ONLY_405,
        "delete": SUPERUSER_ONLY_405,
    },
    "catalog-api:product-detail": {
        "get": OPEN_READ,
        "post": EDITOR_ONLY_405,
        "put": EDITOR_ONLY_405,
        "patch": EDITOR_ONLY_405,
        "delete": SUPERUSER_ONLY_405,
    },
    "catalog-api:product-classification": {
        "get": EVERY_ROLE_READS,
        "post": EDITOR_ONLY_405,
        "put": EDITOR_ONLY_405,
        "patch": (401, 403, 403, 403, 200, 403, 200),
        "delete": SUPERUSER_ONLY_405,
    },
    "catalog-api:product-reclassify": {
        "get": (401, 403, 403, 405, 405, 405, 405),
        "post": (401, 403, 403, 403, 202, 403, 202),
        "put": EDITOR_ONLY_405,
        "patch": EDITOR_ONLY_405,
        "delete": SUPERUSER_ONLY_405,
    },
    "catalog-api:category-list": {
        "get": OPEN_READ,
        "post": EDITOR_ONLY_405,
        "put": EDITOR_ONLY_405,
        "patch": EDITOR_ONLY_405,
        "delete": SUPERUSER_ONLY_405,
    },
    "classifier-api:product-similar": {
        "get": OPEN_READ,
        "post": EDITOR_ONLY_405,
        "put": EDITOR_ONLY_405,
        "patch": EDITOR_ONLY_405,
        "delete": SUPERUSER_ONLY_405,
    },
    "classifier-api:model-version-list": {
        "get": EVERY_ROLE_READS,
        "post": SUPERUSER_ONLY_405,
        "put": (401, 403, 403, 403, 403, 405, 405),
        "patch": (401, 403, 403, 403, 403, 405, 405),
        "delete": SUPERUSER_ONLY_405,
    },
}
CASES = [
    pytest.param(
        endpoint, method, caller, ACCESS[endpoint][method][index], id=f"{method} {endpoint} {caller}"
    )
    for endpoint in ACCESS
    for method in METHODS
    for index, caller in enumerate(CALLERS)
]


def test_the_table_covers_every_endpoint_method_and_caller():
    names = [f"catalog-api:{p.name}" for p in urlpatterns] + [
        f"classifier-api:{p.name}" for p in classifier_urls
    ]
    assert sorted(ACCESS) == sorted(names)
    assert all(sorted(methods) == sorted(METHODS) for methods in ACCESS.values())
    assert all(len(row) == len(CALLERS) for methods in ACCESS.values() for row in methods.values())


@pytest.mark.parametrize(("endpoint", "method", "caller", "expected_status"), CASES)
def test_access(
    endpoint, method, caller, expected_status, caller_client, make_product, make_upload, category
):
    product = make_product(name="Linen shirt")
    Product.objects.filter(pk=product.pk).update(status=Product.Status.FAILED, classification_error="boom")
    client = caller_client(caller)
    needs_product = endpoint.endswith("-similar") or (
        endpoint.startswith("catalog-api:product-") and endpoint != "catalog-api:product-list"
    )
    url = reverse(endpoint, kwargs={"id_or_slug": product.pk} if needs_product else None)
    if endpoint == "catalog-api:product-list" and method == "post":
        body = {"name": "Wool coat", "sku": "COAT-1", "price": "120.00", "image": make_upload("coat.jpg")}
        response = client.post(url, body, format="multipart")
    else:
        body = {"category": category.slug} if method in ("post", "put", "patch") else None
        response = getattr(client, method)(url, body, format="json")

    assert response.status_code == expected_status, response.content
    if expected_status == 401:
        assert response["WWW-Authenticate"] == "Token"
    product.refresh_from_db()
    effects = {
        "created": Product.objects.count() == 2,
        "filed": product.category == category,
        "queued": product.status == Product.Status.PENDING,
    }
    expected_effect = {201: "created", 202: "queued"}.get(expected_status)
    if expected_status == 200 and method == "patch":
        expected_effect = "filed"
    # An allowed write did what it says and nothing else; a read or a refused write changed nothing.
    assert [name for name, happened in effects.items() if happened] == (
        [expected_effect] if expected_effect else []
    )


def test_staff_signed_in_with_a_session_can_use_the_browsable_api_and_writes_need_the_csrf_token(
    staff_user, make_product, category
):
    product = make_product()
    url = reverse("catalog-api:product-classification", kwargs={"id_or_slug": product.pk})
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(staff_user)

    page = browser.get(url, HTTP_ACCEPT="text/html")
    without_token = browser.patch(url, {"category": category.slug}, format="json")
    product.refresh_from_db()
    category_after_refused_write = product.category
    with_token = browser.patch(
        url, {"category": category.slug}, format="json", HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value
    )

    assert page.status_code == 200 and b"Product Classification" in page.content
    assert without_token.status_code == 403 and "CSRF" in without_token.json()["detail"]
    assert category_after_refused_write is None
    assert with_token.status_code == 200 and with_token.json()["category"]["slug"] == category.slug
