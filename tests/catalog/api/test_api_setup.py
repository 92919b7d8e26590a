"""The API's surroundings: CORS for the storefront, the anonymous throttle, the schema and its docs page."""

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.urls import reverse

pytestmark = pytest.mark.django_db

PRODUCTS_URL = reverse("catalog-api:product-list")
STOREFRONT = "https://shop.example.com"


def test_the_storefronts_origin_may_read_the_api_from_a_browser(anonymous_client, settings):
    settings.CORS_ALLOWED_ORIGINS = [STOREFRONT]

    allowed = anonymous_client.get(PRODUCTS_URL, HTTP_ORIGIN=STOREFRONT)
    preflight = anonymous_client.options(
        PRODUCTS_URL, HTTP_ORIGIN=STOREFRONT, HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET"
    )
    stranger = anonymous_client.get(PRODUCTS_URL, HTTP_ORIGIN="https://evil.example.net")

    assert allowed["Access-Control-Allow-Origin"] == STOREFRONT
    assert preflight.status_code == 200 and preflight["Access-Control-Allow-Origin"] == STOREFRONT
    assert "Access-Control-Allow-Origin" not in stranger


def test_no_origin_is_allowed_unless_configured(anonymous_client):
    response = anonymous_client.get(PRODUCTS_URL, HTTP_ORIGIN=STOREFRONT)

    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response


def test_anonymous_clients_are_throttled_at_the_configured_rate_and_staff_are_not(
    anonymous_client, staff_client, settings
):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": "3/min"}}

    anonymous = [anonymous_client.get(PRODUCTS_URL).status_code for _ in range(4)]
    staff = [staff_client.get(PRODUCTS_URL).status_code for _ in range(4)]
    refused = anonymous_client.get(reverse("catalog-api:category-list"))

    assert anonymous == [200, 200, 200, 429]
    assert staff == [200, 200, 200, 200]
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0


def test_the_schema_generates_without_warnings(tmp_path):
    schema_file = tmp_path / "schema.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(schema_file))

    schema = yaml.safe_load(schema_file.read_text())
    assert sorted(schema["paths"]) == [
        "/api/v1/categories/",
        "/api/v1/model-versions/",
        "/api/v1/products/",
        "/api/v1/products/{id_or_slug}/",
        "/api/v1/products/{id_or_slug}/classification/",
        "/api/v1/products/{id_or_slug}/reclassify/",
        "/api/v1/products/{id_or_slug}/similar/",
    ]
    create = schema["paths"]["/api/v1/products/"]["post"]
    assert list(create["requestBody"]["content"]) == ["multipart/form-data"]
    assert {"tokenAuth": []} in create["security"] and {} not in create["security"]
    assert {} in schema["paths"]["/api/v1/products/"]["get"]["security"]


def test_schema_and_docs_are_served_to_anyone_and_the_docs_need_no_cdn(anonymous_client):
    schema = anonymous_client.get("/api/schema/")
    docs = anonymous_client.get("/api/docs/")

    assert schema.status_code == 200 and schema.content.startswith(b"openapi: 3")
    assert docs.status_code == 200
    page = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js") is not None
