"""A Brazilian shop keeper switches the admin to Portuguese and works in it: every assertion is what the page
shows."""

import re
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import Page, expect

from catalog.models import Product
from catalog.services.products import product_create
from classifier.models import ModelVersion
from tests.browser.conftest import STAFF_PASSWORD, STAFF_USERNAME, Screenshot
from tests.e2e.support import photo_bytes
from tests.predictions import prediction_apply

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

QUEUE_URL = "/admin/catalog/reviewqueueitem/"
RUNS_URL = "/admin/classifier/trainingrun/"


@pytest.fixture
def unsure_product(staff_user) -> Product:
    """A product the model was not sure about: it waits in the review queue with "Shirt" suggested."""
    model_version = ModelVersion.objects.create(
        name="vitrine_cnn-i18n",
        artifact_path="vitrine_cnn-i18n",
        model_sha256="0" * 64,
        architecture="vitrine_cnn",
        class_names=["Shirt", "Trouser"],
        threshold=0.9,
        is_active=True,
    )
    product = product_create(
        name="Camisa de linho",
        sku="CL-001",
        price=Decimal("89.90"),
        image=SimpleUploadedFile("camisa.png", photo_bytes(seed=7), content_type="image/png"),
        created_by=staff_user,
    )
    return prediction_apply(
        product_id=product.pk,
        image_sha256=product.image_sha256,
        label="Shirt",
        confidence=0.41,
        model_version=model_version,
    )


def sign_in(page: Page) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", STAFF_USERNAME)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(f"Welcome, {STAFF_USERNAME}")


def test_a_shop_keeper_switches_to_portuguese_and_sees_the_review_queue_and_retrain_page_in_it(
    page: Page, screenshot: Screenshot, unsure_product: Product
) -> None:
    sign_in(page)

    page.click("#language-link")
    expect(page.locator("h1")).to_have_text("Language")
    screenshot(page, "language-page-in-english")
    page.select_option("#id_language", label="Português (Brasil)")
    page.click("#save-language")
    expect(page.locator("ul.messagelist")).to_have_text("Sua preferência de idioma foi salva.")
    expect(page.locator("h1")).to_have_text("Idioma")
    expect(page.locator("#id_language option:checked")).to_have_text("Português (Brasil)")
    # Django's own admin strings switch too, from its pt_BR catalog.
    expect(page.locator("#user-tools")).to_contain_text(f"Bem-vindo(a), {STAFF_USERNAME}")
    screenshot(page, "language-saved")

    page.goto(QUEUE_URL)
    expect(page).to_have_title(re.compile(r"^Fila de revisão"))
    expect(page.locator("h1")).to_have_text("Fila de revisão")
    help_text = page.locator("#review-queue-help")
    expect(help_text).to_contain_text("Produtos sobre os quais o modelo não teve certeza")
    expect(page.locator("#result_list thead")).to_contain_text("Sugestão")
    expect(page.locator("#result_list thead")).to_contain_text("Por que aguarda")
    expect(page.locator("#result_list")).to_contain_text("O modelo não tem confiança suficiente")
    expect(page.locator(f"#accept-{unsure_product.pk}")).to_have_text("Aceitar sugestão")
    expect(page.locator(f"#set-category-{unsure_product.pk}")).to_have_text("Definir categoria")
    screenshot(page, "review-queue-in-portuguese")

    page.click(f"#accept-{unsure_product.pk}")
    expect(page.locator("ul.messagelist")).to_have_text("Camisa de linho foi classificado em Shirt.")
    expect(page.locator(f"#accept-{unsure_product.pk}")).to_have_count(0)

    page.goto(RUNS_URL)
    expect(page.locator("#retrain-now")).to_contain_text("Retreino completo")
    page.click("#retrain-settings")
    expect(page.locator("h1")).to_have_text("Retreinar com os produtos revisados")
    expect(page.locator("#retrain-help")).to_contain_text("Treina uma nova versão do modelo")
    expect(page.locator("label[for=id_architecture]")).to_have_text("Arquitetura:")
    expect(page.locator("label[for=id_epochs]")).to_have_text("Épocas:")
    expect(page.locator("#start-training")).to_have_text("Retreinar agora")
    screenshot(page, "retrain-page-in-portuguese")
