"""The language of the pages: a person's choice on the Language page, else the browser's, else English."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from catalog.models import LanguagePreference
from catalog.selectors import user_language_get
from catalog.services.languages import LanguageChoiceError, user_language_set
from tests.roles import caller_user

pytestmark = pytest.mark.django_db

QUEUE_URL = "/admin/catalog/reviewqueueitem/"
LANGUAGE_URL = "/admin/language/"
PT_BR_BROWSER = "pt-BR,pt;q=0.9,en;q=0.5"


def test_an_english_or_silent_browser_sees_english(admin_client):
    for headers in ({}, {"HTTP_ACCEPT_LANGUAGE": "en-GB,en;q=0.8"}, {"HTTP_ACCEPT_LANGUAGE": "de-DE"}):
        page = admin_client.get(QUEUE_URL, **headers)
        assert page["Content-Language"] == "en"
        assert 'id="review-queue-help"' in page.content.decode()
        assert "Products the model was not sure about" in page.content.decode()


def test_a_brazilian_browser_sees_the_review_queue_in_portuguese(admin_client):
    page = admin_client.get(QUEUE_URL, HTTP_ACCEPT_LANGUAGE=PT_BR_BROWSER)
    html = page.content.decode()

    assert page["Content-Language"] == "pt-br"
    assert "Accept-Language" in page["Vary"]
    assert "<title>Fila de revisão" in html
    assert "Produtos sobre os quais o modelo não teve certeza" in html
    # Django's own admin strings come from its pt_BR catalog.
    assert "Encerrar sessão" in html


def test_the_profile_choice_wins_over_the_browser(admin_client, admin_user):
    user_language_set(user=admin_user, language="pt-br")
    assert "Fila de revisão" in admin_client.get(QUEUE_URL, HTTP_ACCEPT_LANGUAGE="en-US").content.decode()

    user_language_set(user=admin_user, language="en")
    html = admin_client.get(QUEUE_URL, HTTP_ACCEPT_LANGUAGE=PT_BR_BROWSER).content.decode()
    assert "<title>Review queue" in html and "Fila de revisão" not in html


def test_following_the_browser_again_after_a_choice(admin_client, admin_user):
    user_language_set(user=admin_user, language="en")
    user_language_set(user=admin_user, language="")
    assert user_language_get(user=admin_user) == ""
    page = admin_client.get(QUEUE_URL, HTTP_ACCEPT_LANGUAGE=PT_BR_BROWSER)
    assert "Fila de revisão" in page.content.decode()


def test_the_language_page_stores_the_choice_and_answers_in_it(admin_client, admin_user):
    page = admin_client.get(LANGUAGE_URL)
    assert 'id="language-link"' in page.content.decode()
    assert '<option value="pt-br">Português (Brasil)</option>' in page.content.decode()

    saved = admin_client.post(LANGUAGE_URL, {"language": "pt-br"}, follow=True)

    assert LanguagePreference.objects.get(user=admin_user).language == "pt-br"
    assert "Sua preferência de idioma foi salva." in saved.content.decode()
    assert saved["Content-Language"] == "pt-br"


def test_the_language_page_refuses_an_unknown_language(admin_client, admin_user):
    page = admin_client.post(LANGUAGE_URL, {"language": "xx"})

    assert page.status_code == 200
    assert "Select a valid choice" in page.content.decode()
    assert not LanguagePreference.objects.filter(user=admin_user).exists()
    with pytest.raises(LanguageChoiceError, match="unknown language 'xx'"):
        user_language_set(user=admin_user, language="xx")


def test_the_language_page_needs_a_staff_sign_in(client):
    client.force_login(get_user_model().objects.create_user(username="customer", password="not-staff-9"))
    assert client.get(LANGUAGE_URL)["Location"].startswith("/admin/login/")


def test_an_api_error_is_in_portuguese_for_a_brazilian_caller():
    api = APIClient()
    english = api.get("/api/v1/products/no-such-product/")
    portuguese = api.get("/api/v1/products/no-such-product/", HTTP_ACCEPT_LANGUAGE=PT_BR_BROWSER)

    assert english.status_code == portuguese.status_code == 404
    assert english.json() == {"detail": "No product with this id or slug."}
    assert portuguese.json() == {"detail": "Nenhum produto com este id ou slug."}
    assert portuguese["Content-Language"] == "pt-br"


def test_refused_product_fields_are_explained_in_portuguese(make_upload):
    editor = APIClient(HTTP_ACCEPT_LANGUAGE=PT_BR_BROWSER)
    token = Token.objects.create(user=caller_user("catalog editor"))
    editor.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    body = {"name": "Casaco", "sku": "C-1", "price": "120.00"}

    unknown_category = editor.post(
        "/api/v1/products/",
        body | {"image": make_upload("casaco.jpg"), "category": "chapeus"},
        format="multipart",
    )
    misnamed_photo = editor.post(
        "/api/v1/products/", body | {"image": make_upload("casaco.png")}, format="multipart"
    )

    assert unknown_category.status_code == misnamed_photo.status_code == 400
    assert unknown_category.json() == {"category": ["Nenhuma categoria ativa tem o slug chapeus."]}
    assert misnamed_photo.json() == {
        "image": ["casaco.png: o conteúdo é uma imagem JPEG, mas o nome termina em .png; renomeie para .jpg."]
    }
