"""Sign-in to the admin is rate-limited per username and address (django-axes, config/settings/base.py)."""

import pytest
from django.conf import settings
from django.test import Client, RequestFactory

from config.proxy import client_ip_address

PASSWORD = "a-long-right-password"
LOGIN_URL = "/admin/login/?next=/admin/"


@pytest.fixture
def shop_admin(django_user_model):
    return django_user_model.objects.create_user(username="ana", password=PASSWORD, is_staff=True)


def sign_in(*, password: str, address: str = "203.0.113.5", username: str = "ana", language: str = "en"):
    client = Client(REMOTE_ADDR=address, HTTP_ACCEPT_LANGUAGE=language)
    return client.post(LOGIN_URL, {"username": username, "password": password})


@pytest.mark.django_db
def test_wrong_passwords_lock_the_username_from_that_address_with_a_clear_message(shop_admin) -> None:
    limit = settings.AXES_FAILURE_LIMIT
    assert limit == 5

    before_the_limit = [sign_in(password="wrong").status_code for _ in range(limit - 1)]
    at_the_limit = sign_in(password="wrong")
    right_password_while_locked = sign_in(password=PASSWORD)

    assert before_the_limit == [200] * (limit - 1)  # the form again, with Django's error
    for locked in (at_the_limit, right_password_while_locked):
        assert locked.status_code == 429
        assert locked.content.decode() == (
            "Too many failed sign-ins for this username from your address. Try again in 15 minutes."
        )
    assert "_auth_user_id" not in right_password_while_locked.client.session
    # Another address, or another username from the same one, is not locked.
    assert sign_in(password=PASSWORD, address="198.51.100.7").status_code == 302
    assert sign_in(password="wrong", username="someone-else").status_code == 200


@pytest.mark.django_db
def test_the_lockout_message_is_in_the_language_of_the_browser(shop_admin) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT):
        locked = sign_in(password="wrong", language="pt-BR,pt;q=0.9")

    assert locked.status_code == 429
    assert locked.content.decode() == (
        "Muitas tentativas de entrada sem sucesso para este usuário a partir do seu endereço. "
        "Tente novamente em 15 minutos."
    )


@pytest.mark.django_db
def test_a_right_password_before_the_limit_signs_in_and_clears_the_count(shop_admin) -> None:
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        assert sign_in(password="wrong").status_code == 200

    signed_in = sign_in(password=PASSWORD)

    assert signed_in.status_code == 302 and signed_in["Location"] == "/admin/"
    assert signed_in.client.session["_auth_user_id"] == str(shop_admin.pk)
    # The count started again: as many wrong passwords as before still do not lock.
    assert [sign_in(password="wrong").status_code for _ in range(limit - 1)] == [200] * (limit - 1)
    assert sign_in(password=PASSWORD).status_code == 302


@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("10.9.9.9, 203.0.113.5", "203.0.113.5"),
        (None, "172.18.0.4"),
    ],
)
def test_behind_the_proxy_the_address_is_what_it_forwards(forwarded_for: str | None, expected: str) -> None:
    headers = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
    request = RequestFactory().post(LOGIN_URL, REMOTE_ADDR="172.18.0.4", **headers)

    assert client_ip_address(request) == expected
