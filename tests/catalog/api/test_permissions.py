"""Who may call what: every endpoint x every method x anonymous / signed-in customer / staff."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from catalog.api.urls import urlpatterns
from catalog.models import Product
from classifier.api import urlpatterns as classifier_urls

pytestmark = pytest.mark.django_db

METHODS = ("get", "post", "put", "patch", "delete")
CALLERS = ("anonymous", "customer", "staff")
# Expected status for (anonymous, customer, staff). 401: no credentials; 403: not staff; 405: nobody may.
ACCESS = {
    "catalog-api:product-list": {
        "get": (200, 200, 200),
        "post": (401, 403, 201),
        "put": (401, 403, 405),
        "patch": (401, 403, 405),
        "delete": (401, 403, 405),
    },
    "catalog-api:product-detail": {
        "get": (200, 200, 200),
        "post": (401, 403, 405),
        "put": (401, 403, 405),
        "patch": (401, 403, 405),
        "delete": (401, 403, 405),
    },
    "catalog-api:product-classification": {
        "get": (401, 403, 200),
        "post": (401, 403, 405),
        "put": (401, 403, 405),
        "patch": (401, 403, 200),
        "delete": (401, 403, 405),
    },
    "catalog-api:product-reclassify": {
        "get": (401, 403, 405),
        "post": (401, 403, 202),
        "put": (401, 403, 405),
        "patch": (401, 403, 405),
        "delete": (401, 403, 405),
    },
    "catalog-api:category-list": {
        "get": (200, 200, 200),
        "post": (401, 403, 405),
        "put": (401, 403, 405),
        "patch": (401, 403, 405),
        "delete": (401, 403, 405),
    },
    "classifier-api:model-version-list": {
        "get": (401, 403, 200),
        "post": (401, 403, 405),
        "put": (401, 403, 405),
        "patch": (401, 403, 405),
        "delete": (401, 403, 405),
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


def test_the_table_covers_every_endpoint_and_method():
    names = [f"catalog-api:{p.name}" for p in urlpatterns] + [
        f"classifier-api:{p.name}" for p in classifier_urls
    ]
    assert sorted(ACCESS) == sorted(names)
    assert all(sorted(methods) == sorted(METHODS) for methods in ACCESS.values())


@pytest.mark.parametrize(("endpoint", "method", "caller", "expected_status"), CASES)
def test_access(endpoint, method, caller, expected_status, client_for, make_product, make_upload, category):
    product = make_product(name="Linen shirt")
    needs_product = endpoint.startswith("catalog-api:product-") and endpoint != "catalog-api:product-list"
    url = reverse(endpoint, kwargs={"id_or_slug": product.pk} if needs_product else None)
    if endpoint == "catalog-api:product-list" and method == "post":
        body = {"name": "Wool coat", "sku": "COAT-1", "price": "120.00", "image": make_upload("coat.jpg")}
        response = client_for(caller).post(url, body, format="multipart")
    else:
        body = {"category": category.slug} if method in ("post", "put", "patch") else None
        response = getattr(client_for(caller), method)(url, body, format="json")

    assert response.status_code == expected_status, response.content
    if expected_status == 401:
        assert response["WWW-Authenticate"] == "Token"
    if expected_status in (401, 403, 405):
        # A refused write changed nothing.
        assert Product.objects.count() == 1
        product.refresh_from_db()
        assert product.category is None and product.status == Product.Status.PENDING


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
