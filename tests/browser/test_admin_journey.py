"""A shop keeper's day in the admin, in a real browser: every assertion is about what the page shows."""

import io
import re
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect

from catalog.models import Category
from catalog.services.products import product_create
from classifier.models import ModelVersion
from tests.browser.conftest import STAFF_PASSWORD, STAFF_USERNAME, Screenshot
from tests.e2e.support import CeleryWorker, photo_bytes

# The journey takes about 30 s; the hard stop only keeps a hung browser or worker from stalling CI.
pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

# A warm worker classifies within a second and trains the test recipe (config.settings.test: one epoch of
# seed_dense on 32 px photos) in a few; these only bound a slow shared machine.
CLASSIFIED_WITHIN_MS = 30_000
TRAINED_WITHIN_MS = 60_000
PRODUCT_NAME = "Linen shirt"
# Wider than the admin preview (240 px): the browser decoded the stored file itself, not a placeholder.
PHOTO_WIDTH = 320


# Filed by a person before the test: two trousers, and one photo in each category the shirt may be corrected
# to. Training needs two photos in each of two categories, so the correction is what makes a run possible.
FILED_BEFORE = [("Trouser", 2), ("Shirt", 1), ("T-shirt/top", 1)]


def shirt_photo_jpeg() -> bytes:
    """A product photo as a phone would send it: a JPEG of a dark shirt on a white background."""
    photo = Image.new("RGB", (PHOTO_WIDTH, PHOTO_WIDTH), (250, 250, 250))
    outline = [(80, 50), (240, 50), (300, 120), (260, 150), (235, 125), (235, 280), (85, 280), (85, 125)]
    ImageDraw.Draw(photo).polygon([*outline, (60, 150), (20, 120)], fill=(40, 52, 70))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def log_in(page: Page) -> None:
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.fill("#id_username", STAFF_USERNAME)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    expect(page.locator("#user-tools")).to_contain_text(f"Welcome, {STAFF_USERNAME}")


def add_product_with_photo(page: Page) -> str:
    """Fills the add form like a person and saves; returns the URL of the product's change page."""
    page.goto("/admin/catalog/product/add/")
    page.fill("#id_name", PRODUCT_NAME)
    page.fill("#id_description", "Loose fit, washed linen")
    page.fill("#id_price", "39.90")
    page.fill("#id_sku", "LS-001")
    page.set_input_files(
        "#id_image",
        files=[{"name": "linen-shirt.jpg", "mimeType": "image/jpeg", "buffer": shirt_photo_jpeg()}],
    )
    page.click("input[name=_continue]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")
    expect(page).to_have_url(re.compile(r"/admin/catalog/product/\d+/change/"))
    return page.url


def correction_for(suggestion: str) -> str:
    """The category the shop keeper knows is right: any other than the model's guess."""
    return "Shirt" if suggestion != "Shirt" else "T-shirt/top"


def readonly_field(page: Page, field: str):
    return page.locator(f".field-{field} .readonly")


def wait_until_classified(page: Page, *, change_url: str) -> None:
    """Reloads the product page, as a person would, until the worker's verdict shows (bounded)."""
    status = readonly_field(page, "status")
    deadline_polls = CLASSIFIED_WITHIN_MS // 500
    for _ in range(deadline_polls):
        if status.inner_text() in ("Needs review", "Classified"):
            return
        page.wait_for_timeout(500)
        page.goto(change_url)
    raise AssertionError(
        f"the product page still says {status.inner_text()!r} after {CLASSIFIED_WITHIN_MS} ms"
    )


@pytest.fixture
def products_filed_by_a_person(active_model_version: ModelVersion, staff_user) -> None:
    """Earlier work of the shop: products saved with the category a person chose (their categories exist
    since the active version was activated)."""
    filed = [(category_name, number) for category_name, count in FILED_BEFORE for number in range(count)]
    # Seeds 0, 1, 2... draw different photos: training skips a photo it has already seen.
    for seed, (category_name, number) in enumerate(filed):
        product_create(
            name=f"{category_name} {number}",
            sku=f"FILED-{seed}",
            price=Decimal("25.00"),
            image=SimpleUploadedFile(f"{seed}.png", photo_bytes(seed=seed), content_type="image/png"),
            category=Category.objects.get(name=category_name),
            created_by=staff_user,
        )


def test_a_shop_keeper_adds_a_product_corrects_its_category_and_retrains_the_classifier(
    page: Page,
    screenshot: Screenshot,
    celery_worker: CeleryWorker,
    active_model_version: ModelVersion,
    products_filed_by_a_person: None,
) -> None:
    log_in(page)
    screenshot(page, "logged-in")

    change_url = add_product_with_photo(page)
    product_id = int(re.search(r"/product/(\d+)/change/", change_url).group(1))
    expect(page.locator(".field-image_preview img")).to_be_visible()
    # The browser really loaded the stored photo from MEDIA_ROOT, not a broken image.
    assert page.locator(".field-image_preview img").evaluate("img => img.naturalWidth") == PHOTO_WIDTH
    screenshot(page, "product-added")

    wait_until_classified(page, change_url=change_url)
    expect(readonly_field(page, "status")).to_have_text("Needs review")
    suggestion = readonly_field(page, "suggested_category").inner_text()
    assert suggestion in active_model_version.class_names
    expect(readonly_field(page, "model_version")).to_have_text(active_model_version.name)
    expect(readonly_field(page, "confidence_percent")).to_have_text(re.compile(r"^\d+\.\d%$"))
    screenshot(page, "suggestion-shown")

    # The review queue: the shop keeper files the shirt under the right category.
    page.get_by_role("link", name="Review queue").first.click()
    expect(page.locator("#result_list")).to_contain_text(PRODUCT_NAME)
    expect(page.locator("#result_list")).to_contain_text(suggestion)
    screenshot(page, "review-queue")
    correct_category = correction_for(suggestion)
    page.select_option(f"#category-for-{product_id}", label=correct_category)
    page.click(f"#set-category-{product_id}")
    expect(page.locator("ul.messagelist")).to_contain_text(PRODUCT_NAME)
    expect(page.locator(f"#set-category-{product_id}")).to_have_count(0)
    screenshot(page, "label-corrected")
    page.goto(change_url)
    expect(page.locator("#id_category option:checked")).to_have_text(correct_category)
    expect(readonly_field(page, "category_source")).to_have_text("Set by a person")
    expect(readonly_field(page, "reviewed_by")).to_have_text(STAFF_USERNAME)

    # Retrain, and watch the run's page reach its end by itself.
    page.goto("/admin/classifier/trainingrun/")
    page.click("#retrain-now")
    expect(page).to_have_url(re.compile(r"/admin/classifier/trainingrun/\d+/change/"))
    expect(page.locator("#training-progress")).to_have_text(re.compile(r"^epoch \d+/1$"))
    # The page opened on a run still in progress, so reaching "succeeded" below is the page updating itself.
    assert page.locator("#training-panel").get_attribute("data-status") in ("queued", "running")
    screenshot(page, "retrain-started")
    # A mark on this very document: it is still there at the end only if the page never reloaded.
    page.evaluate("window.stillTheSamePage = true")
    expect(page.locator("#training-panel")).to_have_attribute(
        "data-status", "succeeded", timeout=TRAINED_WITHIN_MS
    )
    expect(page.locator("#training-progress")).to_have_text("epoch 1/1")
    expect(page.locator("#training-status")).to_have_text("Succeeded")
    # The corrected shirt is the second photo of its category: training used it.
    expect(page.locator("#training-message")).to_contain_text(f"{correct_category} (2)")
    expect(page.locator("#cancel-run")).to_be_hidden()
    assert page.evaluate("window.stillTheSamePage === true"), "the progress page reloaded itself"
    new_version_name = page.locator("#model-version-link").inner_text()
    assert new_version_name and new_version_name != active_model_version.name
    screenshot(page, "retrain-done")

    # The new version is inactive until the shop keeper activates it.
    page.click("#model-version-link")
    expect(page.locator("#version-state")).to_have_text("Inactive")
    expect(page.locator("#per-class-report")).to_contain_text(correct_category)
    page.click("#activate-version")
    # Django's admin shows every message with its first letter capitalised.
    expect(page.locator("ul.messagelist")).to_contain_text(
        f"{new_version_name} is now the active model version", ignore_case=True
    )
    expect(page.locator("#version-state")).to_have_text("Active")
    expect(page.locator("#activate-version")).to_have_count(0)
    screenshot(page, "version-activated")
    page.goto("/admin/")
    expect(page.locator("#active-version")).to_contain_text(new_version_name)
    screenshot(page, "dashboard")
