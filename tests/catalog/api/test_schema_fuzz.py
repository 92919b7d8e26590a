"""schemathesis against the live schema, through the WSGI app: no 5xx, and every answer matches the schema.

Each operation gets up to 20 generated requests per phase, sent with a staff token so the writes run too.
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from schemathesis.config import SchemathesisConfig

from catalog.models import Category

# Half the generated ids and category slugs name rows that catalog_to_fuzz creates, so requests reach
# real products and categories, not only 404s and "unknown category".
KNOWN_VALUES = SchemathesisConfig.from_dict(
    {
        "dictionaries": {"catalog": {"values": ["linen-shirt", "draft-coat", "shirt"]}},
        "parameters": {
            "path.id_or_slug": {"dictionary": "catalog", "probability": 0.5},
            "body.category": {"dictionary": "catalog", "probability": 0.5},
        },
    }
)
# Loaded once at collection: serving the schema reads no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application(), config=KNOWN_VALUES)
# Checks that cannot hold for two operations, and why:
# - a well-formed upload or correction may rightly get a 400: the schema gives shapes, not server state
#   (which categories exist, which SKUs are taken, whether the bytes are a real photo);
# - form fields are text, so "0" or "on" is a valid boolean (HTML checkboxes send "on").
CHECKS_LEFT_OUT = {
    "POST /api/v1/products/": [positive_data_acceptance, negative_data_rejection],
    "PATCH /api/v1/products/{id_or_slug}/classification/": [positive_data_acceptance],
}


@pytest.fixture
def catalog_to_fuzz(db, make_product):
    """A published and an unpublished product, seen by the requests: they share the test's transaction."""
    category = Category.objects.create(name="Shirt", slug="shirt")
    make_product(name="Linen shirt", category=category)
    make_product(name="Draft coat", is_published=False)
    # The WSGI handler would close the connection after each request and with it the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_every_operation_answers_as_documented(case, catalog_to_fuzz, staff_client):
    staff_token = staff_client._credentials["HTTP_AUTHORIZATION"]
    case.call_and_validate(
        headers={"Authorization": staff_token}, excluded_checks=CHECKS_LEFT_OUT.get(case.operation.label, [])
    )
