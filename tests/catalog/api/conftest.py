"""Clients for the kinds of caller: anonymous, signed-in customer, staff (a catalog editor), and every role of
tests/roles.py (token auth)."""

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.roles import CALLERS, caller_user


@pytest.fixture(autouse=True)
def forget_throttle_history():
    """The anonymous throttle counts requests in the cache; each test starts with a clean count."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()


def _token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def customer(db):
    return get_user_model().objects.create_user(username="customer", password="not-staff-9")


@pytest.fixture
def staff_user(db):
    """A member of the shop's staff who edits the catalog: the "Catalog editor" role."""
    return caller_user("catalog editor", username="editor")


@pytest.fixture
def customer_client(customer) -> APIClient:
    return _token_client(customer)


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    return _token_client(staff_user)


@pytest.fixture
def client_for(anonymous_client, customer_client, staff_client):
    """client_for("anonymous" | "customer" | "staff") -> the API client of that caller."""
    clients = {"anonymous": anonymous_client, "customer": customer_client, "staff": staff_client}
    return clients.__getitem__


@pytest.fixture
def caller_client(db):
    """caller_client(one of tests.roles.CALLERS) -> an API client signed in with that caller's token."""

    def make(caller: str) -> APIClient:
        assert caller in CALLERS, caller
        user = caller_user(caller)
        return APIClient() if user is None else _token_client(user)

    return make
