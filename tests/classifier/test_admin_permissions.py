"""Who may do what in the admin: every action and every custom view that changes data x every caller.

The roles are the groups of catalog/migrations/0004_roles.py and classifier/migrations/0005_roles.py
(README "Security"). An allowed cell checks the effect; a refused one checks the answer (redirect to the
login page, 403, or back to the list without the action) and that nothing in the shop changed.
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from importlib import import_module

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from catalog.models import Category, Product, ProductImport, WebhookDelivery, WebhookEndpoint
from catalog.services.products import product_create
from classifier.models import BulkJob, ModelVersion, Prediction, TrainingRun
from classifier.services.model_versions import model_version_activate
from tests.catalog.imports import catalog_files, csv_upload, zip_upload
from tests.predictions import prediction_apply
from tests.roles import CALLERS, caller_user

pytestmark = pytest.mark.django_db

SHOP_APPS = ("catalog", "classifier")
LOGIN_URL = "/admin/login/"
EVERY_ROLE = frozenset({"viewer", "catalog editor", "ML operator", "superuser"})
EDITOR = frozenset({"catalog editor", "superuser"})
OPERATOR = frozenset({"ML operator", "superuser"})
SUPERUSER = frozenset({"superuser"})

# What each role may do, permission by permission (README "Security" says the same in words).
ROLE_PERMISSIONS = {
    "Catalog editor": {
        *(
            f"catalog.{verb}_{model}"
            for verb in ("add", "change", "view")
            for model in ("product", "category")
        ),
        *("catalog.add_productimage", "catalog.change_productimage", "catalog.view_productimage"),
        "catalog.view_reviewqueueitem",
        *("classifier.view_modelversion", "classifier.view_prediction"),
    },
    "ML operator": {
        *("catalog.view_product", "catalog.view_productimage", "catalog.view_category"),
        *("classifier.add_trainingrun", "classifier.change_trainingrun", "classifier.view_trainingrun"),
        *(
            "classifier.change_modelversion",
            "classifier.view_modelversion",
            "classifier.view_modelactivation",
        ),
        *("classifier.add_bulkjob", "classifier.change_bulkjob", "classifier.view_bulkjob"),
        "classifier.view_prediction",
    },
    "Viewer": {
        *("catalog.view_product", "catalog.view_productimage", "catalog.view_category"),
        "catalog.view_reviewqueueitem",
        *("classifier.view_modelversion", "classifier.view_modelactivation", "classifier.view_prediction"),
        *("classifier.view_trainingrun", "classifier.view_bulkjob"),
    },
}


@dataclass(frozen=True)
class Row:
    permission: str
    allowed: frozenset[str]
    scenario: str


# Admin actions, by "app.model" of their admin and action name.
ACTIONS = {
    ("catalog.product", "classify_again"): Row("catalog.change_product", EDITOR, "classify_again"),
    ("catalog.product", "reclassify_in_background"): Row("classifier.add_bulkjob", OPERATOR, "bulk_selected"),
    ("catalog.product", "delete_selected"): Row("catalog.delete_product", SUPERUSER, "delete_product"),
    ("catalog.reviewqueueitem", "accept_suggestions"): Row(
        "catalog.change_product", EDITOR, "accept_selected"
    ),
    ("catalog.category", "merge_categories"): Row("catalog.change_category", EDITOR, "merge"),
    ("catalog.category", "retire_categories"): Row("catalog.change_category", EDITOR, "retire"),
    ("catalog.category", "reactivate_categories"): Row("catalog.change_category", EDITOR, "reactivate"),
    ("catalog.category", "delete_selected"): Row("catalog.delete_category", SUPERUSER, "delete_category"),
    # Webhooks hand shop events to another system: no role manages them, only a superuser.
    ("catalog.webhookdelivery", "send_again"): Row(
        "catalog.change_webhookdelivery", SUPERUSER, "send_webhook_again"
    ),
    ("catalog.webhookdelivery", "delete_selected"): Row(
        "catalog.delete_webhookdelivery", SUPERUSER, "delete_webhook_delivery"
    ),
    ("catalog.webhookendpoint", "delete_selected"): Row(
        "catalog.delete_webhookendpoint", SUPERUSER, "delete_webhook_endpoint"
    ),
    # Importing (and so deleting an import) takes catalog.add_product and catalog.change_product together.
    ("catalog.productimport", "delete_selected"): Row("catalog.add_product", EDITOR, "delete_import"),
    ("classifier.modelversion", "activate"): Row(
        "classifier.change_modelversion", OPERATOR, "activate_selected"
    ),
    ("classifier.modelversion", "compare_versions"): Row(
        "classifier.view_modelversion", EVERY_ROLE, "compare"
    ),
    ("classifier.modelversion", "delete_selected"): Row(
        "classifier.delete_modelversion", SUPERUSER, "delete_version"
    ),
    ("classifier.prediction", "delete_selected"): Row(
        "classifier.delete_prediction", SUPERUSER, "delete_prediction"
    ),
    ("classifier.trainingrun", "delete_selected"): Row(
        "classifier.delete_trainingrun", SUPERUSER, "delete_run"
    ),
    ("classifier.bulkjob", "delete_selected"): Row("classifier.delete_bulkjob", SUPERUSER, "delete_job"),
}
# The admin's own views that change data, by URL name.
VIEWS = {
    "catalog_product_classify_again": Row("catalog.change_product", EDITOR, "classify_again_one"),
    "catalog_reviewqueueitem_accept": Row("catalog.change_product", EDITOR, "accept_one"),
    "catalog_reviewqueueitem_set_category": Row("catalog.change_product", EDITOR, "set_category"),
    # Creating a category and filing the photos under it: catalog.add_category with catalog.change_product.
    "catalog_reviewqueueitem_new_category": Row("catalog.add_category", EDITOR, "new_category"),
    "catalog_productimport_upload": Row("catalog.add_product", EDITOR, "import_upload"),
    "catalog_productimport_start": Row("catalog.add_product", EDITOR, "import_start"),
    "catalog_productimport_cancel": Row("catalog.add_product", EDITOR, "import_cancel"),
    "classifier_modelversion_activate": Row("classifier.change_modelversion", OPERATOR, "activate_one"),
    "classifier_modelversion_roll_back": Row("classifier.change_modelversion", OPERATOR, "roll_back"),
    "classifier_trainingrun_retrain": Row("classifier.add_trainingrun", OPERATOR, "retrain"),
    "classifier_trainingrun_cancel": Row("classifier.change_trainingrun", OPERATOR, "cancel_run"),
    "classifier_bulkjob_start_all": Row("classifier.add_bulkjob", OPERATOR, "start_all"),
    "classifier_bulkjob_cancel": Row("classifier.change_bulkjob", OPERATOR, "cancel_job"),
    "classifier_bulkjob_resume": Row("classifier.change_bulkjob", OPERATOR, "resume_job"),
}
# The admin's own views that only read, with the view permission each checks.
READ_ONLY_VIEWS = {
    "catalog_productimport_progress": "catalog.add_product",
    "classifier_modelversion_compare": "classifier.view_modelversion",
    "classifier_modelversion_artifact": "classifier.view_modelversion",
    "classifier_trainingrun_progress": "classifier.view_trainingrun",
    "classifier_bulkjob_progress": "classifier.view_bulkjob",
}


def shop_admins() -> dict[str, admin.ModelAdmin]:
    return {
        model._meta.label_lower: model_admin
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in SHOP_APPS
    }


def test_the_tables_cover_every_admin_action_and_every_custom_admin_view(admin_user):
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    # A superuser is offered every action a caller can be offered (delete only where deleting is possible).
    actions = {
        (label, name)
        for label, model_admin in shop_admins().items()
        for name in model_admin.get_actions(request)
    }
    custom_views = {
        pattern.name
        for model_admin in shop_admins().values()
        for pattern in model_admin.get_urls()
        if pattern.name not in {p.name for p in admin.ModelAdmin.get_urls(model_admin)}
    }

    assert sorted(ACTIONS) == sorted(actions)
    assert sorted(VIEWS) == sorted(custom_views - set(READ_ONLY_VIEWS))
    assert set(READ_ONLY_VIEWS) <= custom_views


def test_each_role_holds_exactly_the_documented_permissions():
    held = {
        group.name: {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
        for group in Group.objects.prefetch_related("permissions__content_type").filter(
            name__in=ROLE_PERMISSIONS
        )
    }

    assert held == ROLE_PERMISSIONS


def test_the_role_migrations_can_run_again_and_change_nothing():
    state_apps = MigrationExecutor(connection).loader.project_state(("classifier", "0005_roles")).apps
    before = {group.pk: set(group.permissions.values_list("pk", flat=True)) for group in Group.objects.all()}

    import_module("catalog.migrations.0004_roles").catalog_roles_grant(state_apps, None)
    import_module("classifier.migrations.0005_roles").classifier_roles_grant(state_apps, None)

    after = {group.pk: set(group.permissions.values_list("pk", flat=True)) for group in Group.objects.all()}
    assert after == before


@pytest.mark.parametrize(
    ("permission", "allowed"), [(row.permission, row.allowed) for row in (*ACTIONS.values(), *VIEWS.values())]
)
def test_the_callers_allowed_are_those_holding_the_permission(permission, allowed):
    holders = {
        caller
        for caller in CALLERS
        if caller not in ("anonymous", "non-staff") and caller_user(caller).has_perm(permission)
    }

    assert holders == allowed


# Scenarios: each sets up the shop, and returns how to send the request and how to tell it took effect.
Send = Callable[[Client], HttpResponse]
Effect = Callable[[HttpResponse], bool]

skus = itertools.count(1)


def product(make_upload, name: str = "Blue shirt", **fields) -> Product:
    return product_create(
        name=name, sku=f"P-{next(skus)}", price=Decimal("19.90"), image=make_upload("shirt.jpg"), **fields
    )


def unsure_product(make_upload, suggested: Category) -> Product:
    item = product(make_upload, "Denim shirt")
    Product.objects.filter(pk=item.pk).update(
        status=Product.Status.NEEDS_REVIEW,
        suggested_category=suggested,
        confidence=0.41,
        review_reason=Product.ReviewReason.LOW_CONFIDENCE,
    )
    return item


def version(name: str, *, active: bool = False) -> ModelVersion:
    created = ModelVersion.objects.create(
        name=name,
        artifact_path=name,
        model_sha256="0" * 64,
        architecture="seed_dense",
        class_names=["Shirt", "Trouser"],
    )
    return model_version_activate(model_version=created) if active else created


def action(label: str, name: str, ids: list[int], **data) -> Send:
    url = reverse(f"admin:{label.replace('.', '_')}_changelist")
    return lambda client: client.post(url, {"action": name, "_selected_action": ids, **data})


def post(url_name: str, *args, **data) -> Send:
    return lambda client: client.post(reverse(f"admin:{url_name}", args=args), data)


def scenario(name: str, make_upload) -> tuple[Send, Effect]:
    shirt = Category.objects.create(name="Shirt", slug="shirt")
    trouser = Category.objects.create(name="Trouser", slug="trouser")
    if name in ("classify_again", "classify_again_one"):
        item = product(make_upload)
        Product.objects.filter(pk=item.pk).update(status=Product.Status.FAILED, classification_error="boom")
        send = (
            action("catalog.product", "classify_again", [item.pk])
            if name == "classify_again"
            else post("catalog_product_classify_again", item.pk)
        )
        return send, lambda _: Product.objects.get(pk=item.pk).status == Product.Status.PENDING
    if name == "bulk_selected":
        version("v1", active=True)
        item = product(make_upload)
        send = action("catalog.product", "reclassify_in_background", [item.pk])
        return send, lambda _: BulkJob.objects.filter(total=1).exists()
    if name == "delete_product":
        item = product(make_upload)
        send = action("catalog.product", "delete_selected", [item.pk], post="yes")
        return send, lambda _: not Product.objects.filter(pk=item.pk).exists()
    if name in ("accept_selected", "accept_one", "set_category"):
        item = unsure_product(make_upload, suggested=shirt)
        filed_under = trouser if name == "set_category" else shirt
        send = {
            "accept_selected": action("catalog.reviewqueueitem", "accept_suggestions", [item.pk]),
            "accept_one": post("catalog_reviewqueueitem_accept", item.pk),
            "set_category": post(
                "catalog_reviewqueueitem_set_category", item.pk, **{f"category-for-{item.pk}": trouser.pk}
            ),
        }[name]
        return send, lambda _: Product.objects.get(pk=item.pk).category == filed_under
    if name == "new_category":
        items = [unsure_product(make_upload, suggested=shirt) for _ in range(3)]
        photos = ",".join(str(item.pk) for item in items)
        send = post("catalog_reviewqueueitem_new_category", photos=photos, name="Scarves")
        filed = Product.objects.filter(pk__in=[item.pk for item in items], category__name="Scarves")
        return send, lambda _: filed.count() == len(items)
    if name == "merge":
        send = action(
            "catalog.category", "merge_categories", [shirt.pk, trouser.pk], confirm_merge="1", into=shirt.pk
        )
        return send, lambda _: Category.objects.get(pk=trouser.pk).merged_into == shirt
    if name == "retire":
        send = action("catalog.category", "retire_categories", [trouser.pk])
        return send, lambda _: not Category.objects.get(pk=trouser.pk).is_active
    if name == "reactivate":
        Category.objects.filter(pk=trouser.pk).update(is_active=False)
        send = action("catalog.category", "reactivate_categories", [trouser.pk])
        return send, lambda _: Category.objects.get(pk=trouser.pk).is_active
    if name == "delete_category":
        send = action("catalog.category", "delete_selected", [trouser.pk], post="yes")
        return send, lambda _: not Category.objects.filter(pk=trouser.pk).exists()
    if name in ("activate_selected", "activate_one"):
        version("v1", active=True)
        second = version("v2")
        send = (
            action("classifier.modelversion", "activate", [second.pk])
            if name == "activate_selected"
            else post("classifier_modelversion_activate", second.pk)
        )
        return send, lambda _: ModelVersion.objects.get(pk=second.pk).is_active
    if name == "roll_back":
        first = version("v1", active=True)
        version("v2", active=True)
        send = post("classifier_modelversion_roll_back")
        return send, lambda _: ModelVersion.objects.get(pk=first.pk).is_active
    if name == "compare":
        ids = [version("v1").pk, version("v2").pk]
        compare_url = f"{reverse('admin:classifier_modelversion_compare')}?versions={ids[0]},{ids[1]}"
        send = action("classifier.modelversion", "compare_versions", ids)
        return send, lambda response: response.get("Location") == compare_url
    if name == "delete_version":
        unused = version("v1")
        send = action("classifier.modelversion", "delete_selected", [unused.pk], post="yes")
        return send, lambda _: not ModelVersion.objects.filter(pk=unused.pk).exists()
    if name == "delete_prediction":
        item = product(make_upload)
        prediction_apply(
            product_id=item.pk,
            image_sha256=item.image_sha256,
            label="Shirt",
            confidence=0.95,
            model_version=version("v1", active=True),
        )
        prediction = Prediction.objects.get()
        send = action("classifier.prediction", "delete_selected", [prediction.pk], post="yes")
        return send, lambda _: not Prediction.objects.exists()
    if name in ("delete_run", "cancel_run"):
        status = TrainingRun.Status.FAILED if name == "delete_run" else TrainingRun.Status.QUEUED
        run = TrainingRun.objects.create(status=status)
        if name == "delete_run":
            send = action("classifier.trainingrun", "delete_selected", [run.pk], post="yes")
            return send, lambda _: not TrainingRun.objects.exists()
        send = post("classifier_trainingrun_cancel", run.pk)
        return send, lambda _: TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.CANCELLED
    if name == "delete_job":
        job = BulkJob.objects.create(status=BulkJob.Status.SUCCEEDED, total=1, done=1)
        send = action("classifier.bulkjob", "delete_selected", [job.pk], post="yes")
        return send, lambda _: not BulkJob.objects.exists()
    if name in ("cancel_job", "resume_job"):
        version("v1", active=True)
        status = BulkJob.Status.RUNNING if name == "cancel_job" else BulkJob.Status.FAILED
        job = BulkJob.objects.create(status=status, total=4, done=2, cursor=20, error="boom")
        send = post(f"classifier_bulkjob_{name.removesuffix('_job')}", job.pk)
        after = BulkJob.Status.CANCELLED if name == "cancel_job" else BulkJob.Status.QUEUED
        return send, lambda _: BulkJob.objects.get(pk=job.pk).status == after
    if name.endswith("_import") or name.startswith("import_"):
        return import_scenario(name)
    if name == "retrain":
        send = post("classifier_trainingrun_retrain", use_defaults="1")
        return send, lambda _: TrainingRun.objects.exists()
    if name == "start_all":
        version("v1", active=True)
        product(make_upload)
        return post("classifier_bulkjob_start_all"), lambda _: BulkJob.objects.exists()
    if name.endswith(("webhook_again", "webhook_delivery", "webhook_endpoint")):
        return webhook_scenario(name)
    raise LookupError(name)


def webhook_scenario(name: str) -> tuple[Send, Effect]:
    endpoint = WebhookEndpoint.objects.create(name="Shop", url="https://shop.example/h", events=["x"])
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event="product.classified",
        payload={},
        status="failed",
        next_attempt_at=timezone.now(),
    )
    if name == "send_webhook_again":
        send = action("catalog.webhookdelivery", "send_again", [delivery.pk])
        return send, lambda _: WebhookDelivery.objects.get(pk=delivery.pk).status == "pending"
    if name == "delete_webhook_delivery":
        send = action("catalog.webhookdelivery", "delete_selected", [delivery.pk], post="yes")
        return send, lambda _: not WebhookDelivery.objects.exists()
    send = action("catalog.webhookendpoint", "delete_selected", [endpoint.pk], post="yes")
    return send, lambda _: not WebhookEndpoint.objects.exists()


def import_scenario(name: str) -> tuple[Send, Effect]:
    rows, photos = catalog_files(1)
    if name == "import_upload":
        send = post("catalog_productimport_upload", csv_file=csv_upload(rows), zip_file=zip_upload(photos))
        return send, lambda _: ProductImport.objects.exists()
    status = {"delete_import": "succeeded", "import_start": "preview", "import_cancel": "running"}[name]
    job = ProductImport.objects.create(status=status, csv_name="p.csv", zip_name="p.zip", rows=[{"row": 2}])
    if name == "delete_import":
        send = action("catalog.productimport", "delete_selected", [job.pk], post="yes")
        return send, lambda _: not ProductImport.objects.exists()
    send = post(f"catalog_productimport_{name.removeprefix('import_')}", job.pk)
    after = "queued" if name == "import_start" else "cancelled"
    return send, lambda _: ProductImport.objects.get(pk=job.pk).status == after


def shop_state() -> dict:
    """Everything an action or view here may change, to compare before and after a refused request."""
    return {
        "products": list(
            Product.objects.order_by("pk").values_list("pk", "status", "category", "suggested_category")
        ),
        "categories": list(Category.objects.order_by("pk").values_list("pk", "is_active", "merged_into")),
        "versions": list(ModelVersion.objects.order_by("pk").values_list("pk", "is_active")),
        "predictions": list(Prediction.objects.values_list("pk", flat=True)),
        "runs": list(TrainingRun.objects.order_by("pk").values_list("pk", "status", "cancel_requested")),
        "jobs": list(BulkJob.objects.order_by("pk").values_list("pk", "status")),
        "webhooks": list(WebhookEndpoint.objects.values_list("pk", flat=True)),
        "deliveries": list(WebhookDelivery.objects.order_by("pk").values_list("pk", "status")),
        "imports": list(ProductImport.objects.order_by("pk").values_list("pk", "status")),
    }


CASES = [
    *(
        pytest.param(row, caller, id=f"action {label}.{name} {caller}")
        for (label, name), row in ACTIONS.items()
        for caller in CALLERS
    ),
    *(
        pytest.param(row, caller, id=f"view {name} {caller}")
        for name, row in VIEWS.items()
        for caller in CALLERS
    ),
]


@pytest.mark.parametrize(("row", "caller"), CASES)
def test_access(row: Row, caller: str, make_upload):
    send, took_effect = scenario(row.scenario, make_upload)
    client = Client()
    user = caller_user(caller)
    if user is not None:
        client.force_login(user)
    before = shop_state()

    response = send(client)

    location = response.get("Location", "")
    assert not location.startswith(LOGIN_URL) or caller in ("anonymous", "non-staff")
    if caller in row.allowed:
        assert response.status_code == 302, response.content[:500]
        assert took_effect(response)
    else:
        # An action a caller may not run is not offered: the list shows again (after "No action selected."
        # where it offers other actions), and runs nothing.
        list_again = location == response.wsgi_request.get_full_path() or (
            response.status_code == 200 and "cl" in response.context
        )
        refused = response.status_code == 403 or location.startswith(LOGIN_URL) or list_again
        assert refused, (response.status_code, location)
        assert not took_effect(response)
        assert shop_state() == before
