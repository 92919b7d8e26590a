"""Model versions in the admin: figures and pictures, activation, roll back, comparison; the dashboard."""

import json
import pathlib
import shutil

import pytest
from django.urls import reverse

from catalog.models import Category, Product
from classifier.models import ModelActivation, ModelVersion
from classifier.selectors import model_version_active, model_version_artifact_file
from classifier.services.model_versions import model_version_activate, model_version_register

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(tiny_model: pathlib.Path) -> ModelVersion:
    return model_version_register(artifact_dir=tiny_model, name="fmnist-v1")


def change_url(model_version: ModelVersion) -> str:
    return reverse("admin:classifier_modelversion_change", args=[model_version.pk])


def artifact_url(model_version: ModelVersion, name: str) -> str:
    return reverse("admin:classifier_modelversion_artifact", args=[model_version.pk, name])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_a_version_page_shows_accuracy_per_category_scores_confusion_matrix_and_pictures(
    admin_client, version: ModelVersion, tiny_model: pathlib.Path
):
    report = json.loads((tiny_model / "classification_report.json").read_text())

    page = admin_client.get(change_url(version)).content.decode()

    assert f"{version.metrics['test_accuracy']:.1%}" in page
    assert 'id="per-class-report"' in page
    for name, scores in report["per_class"].items():
        assert f"<td>{name}</td>" in page
        assert f"{scores['f1']:.3f}" in page
    assert 'id="confusion-matrix"' in page and 'class="number diagonal"' in page
    for image_id, name in (
        ("training-curves", "curves.png"),
        ("confusion-matrix-image", "confusion_matrix.png"),
        ("misclassified", "misclassified.png"),
    ):
        assert f'id="{image_id}"' in page and artifact_url(version, name) in page


def test_the_suggested_threshold_is_shown_with_its_precision_and_coverage(
    admin_client, version: ModelVersion
):
    version.metrics |= {
        "suggested_threshold": 0.8125,
        "threshold_precision": 0.97,
        "threshold_coverage": 0.734,
    }
    version.save(update_fields=["metrics"])

    page = admin_client.get(change_url(version)).content.decode()

    assert '<strong id="suggested-threshold-value">81.2%</strong>' in page
    assert '<strong id="threshold-precision">97.0%</strong>' in page
    assert '<strong id="threshold-coverage">73.4%</strong>' in page


def test_the_page_says_what_each_unfamiliar_photo_check_keeps(
    admin_client, tiny_model: pathlib.Path, tmp_path: pathlib.Path
):
    artifact = shutil.copytree(tiny_model, tmp_path / "with-checks")
    metadata = json.loads((artifact / "metadata.json").read_text())
    metadata["ood"] = {"threshold": 3200.0, "keep_rate": 0.98, "kind_threshold": 6.4, "kind_keep_rate": 0.93}
    (artifact / "metadata.json").write_text(json.dumps(metadata))
    version = model_version_register(artifact_dir=artifact)

    page = admin_client.get(change_url(version)).content.decode()

    assert 'id="ood-limit"' in page and "98.0%" in page
    assert 'id="kind-limit"' in page and "93.0%" in page


def test_a_version_without_the_kind_check_does_not_claim_one(admin_client, version: ModelVersion):
    version.metrics["ood"] = {"threshold": 3200.0, "keep_rate": 0.98}
    version.save(update_fields=["metrics"])

    page = admin_client.get(change_url(version)).content.decode()

    assert 'id="ood-limit"' in page and 'id="kind-limit"' not in page


def test_without_a_suggested_threshold_the_page_says_so(admin_client, version: ModelVersion):
    # Versions trained before thresholds were suggested have none in their metrics.
    for key in ("suggested_threshold", "threshold_precision", "threshold_coverage"):
        version.metrics.pop(key, None)
    version.save(update_fields=["metrics"])

    page = admin_client.get(change_url(version)).content.decode()

    assert '<span id="suggested-threshold-value">—</span>' in page


def test_the_evaluation_pictures_are_served_to_staff(
    admin_client, version: ModelVersion, tiny_model: pathlib.Path
):
    response = admin_client.get(artifact_url(version, "curves.png"))

    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == (tiny_model / "curves.png").read_bytes()


@pytest.mark.parametrize("name", ["model.keras", "missing.png", ".."])
def test_the_artifact_view_serves_nothing_but_evaluation_files_of_the_version(
    admin_client, version: ModelVersion, name: str
):
    assert admin_client.get(f"/admin/classifier/modelversion/{version.pk}/artifact/{name}").status_code == 404


def test_no_artifact_file_outside_the_versions_folder_is_served(admin_client, tmp_path: pathlib.Path):
    artifact_dir = tmp_path / "artifact"
    artifact_dir.mkdir()
    (tmp_path / "secret.png").write_bytes(b"not for the admin")
    (artifact_dir / "curves.png").symlink_to(tmp_path / "secret.png")
    version = ModelVersion.objects.create(
        name="odd", artifact_path=str(artifact_dir), model_sha256="0" * 64, architecture="seed_dense"
    )

    assert model_version_artifact_file(model_version=version, name="../secret.png") is None
    assert model_version_artifact_file(model_version=version, name="curves.png") is None
    assert admin_client.get(artifact_url(version, "curves.png")).status_code == 404


def test_the_artifact_view_is_for_staff_only(client, version: ModelVersion):
    response = client.get(artifact_url(version, "curves.png"))

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_activate_and_roll_back_switch_versions_and_keep_a_history(
    admin_client, admin_user, tiny_model: pathlib.Path
):
    first = model_version_register(artifact_dir=tiny_model, name="first", activate=True)
    second = model_version_register(artifact_dir=tiny_model, name="second")
    inactive_page = admin_client.get(change_url(second)).content.decode()

    activated = admin_client.post(
        reverse("admin:classifier_modelversion_activate", args=[second.pk]), follow=True
    )
    active_page = activated.content.decode()
    rolled_back = admin_client.post(reverse("admin:classifier_modelversion_roll_back"), follow=True)

    assert 'id="version-state" class="">Inactive' in inactive_page and ">Activate</button>" in inactive_page
    assert messages_of(activated) == ["second is now the active model version."]
    assert (
        ">Roll back</button>" in active_page and '<strong id="roll-back-target">first</strong>' in active_page
    )
    assert messages_of(rolled_back) == ["Rolled back: first is the active model version again."]
    assert model_version_active() == first
    history = list(
        ModelActivation.objects.order_by("pk").values_list("model_version__name", "previous__name")
    )
    assert history == [("first", None), ("second", "first"), ("first", "second")]
    roll_back = ModelActivation.objects.order_by("pk").last()
    assert roll_back.is_roll_back and roll_back.activated_by == admin_user


def test_roll_back_with_no_earlier_version_changes_nothing(admin_client, version: ModelVersion):
    model_version_activate(model_version=version)

    response = admin_client.post(reverse("admin:classifier_modelversion_roll_back"), follow=True)

    assert messages_of(response) == [
        "nothing to roll back to: no other version was active before the current one"
    ]
    assert model_version_active() == version


def test_the_version_list_offers_a_roll_back_once_there_is_something_to_go_back_to(
    admin_client, tiny_model: pathlib.Path
):
    first = model_version_register(artifact_dir=tiny_model, name="first", activate=True)
    list_url = reverse("admin:classifier_modelversion_changelist")
    before = admin_client.get(list_url).content.decode()

    model_version_activate(model_version=model_version_register(artifact_dir=tiny_model, name="second"))
    after = admin_client.get(list_url).content.decode()

    assert 'id="roll-back"' not in before
    assert 'id="roll-back"' in after and f'<strong id="roll-back-target">{first.name}</strong>' in after


def test_switching_versions_needs_a_post(admin_client, version: ModelVersion):
    response = admin_client.get(reverse("admin:classifier_modelversion_activate", args=[version.pk]))

    assert response.status_code == 405
    assert model_version_active() is None


def test_two_selected_versions_are_compared_side_by_side(admin_client, tiny_model: pathlib.Path):
    older = model_version_register(artifact_dir=tiny_model, name="older")
    newer = model_version_register(artifact_dir=tiny_model, name="newer")
    ModelVersion.objects.filter(pk=newer.pk).update(
        metrics={**newer.metrics, "test_accuracy": 0.91, "suggested_threshold": 0.7}
    )

    response = admin_client.post(
        reverse("admin:classifier_modelversion_changelist"),
        {"action": "compare_versions", "_selected_action": [str(older.pk), str(newer.pk)]},
    )
    page = admin_client.get(response["Location"]).content.decode()

    assert response["Location"].endswith(f"/compare/?versions={older.pk},{newer.pk}")
    assert 'id="version-compare"' in page and ">older</a>" in page and ">newer</a>" in page
    assert '<td class="number best">91.0%</td>' in page
    assert "<th>F1 Sneaker</th>" in page


def test_comparing_needs_exactly_two_versions(admin_client, version: ModelVersion):
    response = admin_client.post(
        reverse("admin:classifier_modelversion_changelist"),
        {"action": "compare_versions", "_selected_action": [str(version.pk)]},
        follow=True,
    )

    assert messages_of(response) == ["Select exactly two model versions to compare."]


def test_the_dashboard_shows_statuses_who_filed_categories_and_the_active_version(
    admin_client, version: ModelVersion, make_upload
):
    from catalog.services.products import product_create

    model_version_activate(model_version=version)
    shirt, trouser = Category.objects.get(name="Shirt"), Category.objects.get(name="Trouser")
    for number, (category, source, status) in enumerate(
        [
            (shirt, Product.CategorySource.PREDICTED, Product.Status.CLASSIFIED),
            (shirt, Product.CategorySource.PREDICTED, Product.Status.CLASSIFIED),
            (trouser, Product.CategorySource.PERSON, Product.Status.CLASSIFIED),
            (None, Product.CategorySource.NONE, Product.Status.NEEDS_REVIEW),
            # A person decided it belongs to no category: neither filed nor waiting.
            (None, Product.CategorySource.PERSON, Product.Status.CLASSIFIED),
        ]
    ):
        product = product_create(name=f"Item {number}", sku=f"I-{number}", price=1, image=make_upload())
        Product.objects.filter(pk=product.pk).update(
            category=category, category_source=source, status=status, suggested_category=shirt
        )

    page = admin_client.get("/admin/").content.decode()

    assert 'id="vitrine-dashboard"' in page
    assert 'data-status="classified">4</a>' in page and 'data-status="needs_review">1</a>' in page
    assert '<tr><th>Filed automatically</th><td class="number">2</td><td class="number">40%</td></tr>' in page
    assert '<tr><th>Filed or corrected by a person</th><td class="number">1</td>' in page
    assert '<tr><th>Left without a category by a person</th><td class="number">1</td>' in page
    assert '<tr><th>Not filed yet</th><td class="number">1</td>' in page
    assert "67% of the filed products were filed automatically." in page
    assert "Review queue: 1 product waiting" in page
    assert 'id="active-version">' in page and f">{version.name}</a>" in page
    assert f"{version.metrics['test_accuracy']:.1%}" in page


def delete_url(model_version: ModelVersion) -> str:
    return reverse("admin:classifier_modelversion_delete", args=[model_version.pk])


ACTIVE_NOT_DELETED = (
    "{} is the active model version and cannot be deleted: its activation history would go with it and "
    "classification would stop. Activate another version first."
)


def test_the_active_version_cannot_be_deleted_from_its_delete_page(admin_client, version: ModelVersion):
    model_version_activate(model_version=version)

    shown = admin_client.get(delete_url(version), follow=True)
    posted = admin_client.post(delete_url(version), {"post": "yes"}, follow=True)

    assert shown.redirect_chain == [(change_url(version), 302)]
    assert messages_of(shown) == [ACTIVE_NOT_DELETED.format(version.name)]
    assert messages_of(posted) == [ACTIVE_NOT_DELETED.format(version.name)]
    assert ModelActivation.objects.filter(model_version=version).exists()
    assert model_version_active() == version


def test_delete_selected_refuses_a_selection_holding_the_active_version(
    admin_client, version: ModelVersion, tiny_model: pathlib.Path
):
    model_version_activate(model_version=version)
    unused = model_version_register(artifact_dir=tiny_model, name="unused")

    response = admin_client.post(
        reverse("admin:classifier_modelversion_changelist"),
        {"action": "delete_selected", "_selected_action": [version.pk, unused.pk], "post": "yes"},
        follow=True,
    )

    assert messages_of(response) == [ACTIVE_NOT_DELETED.format(version.name)]
    assert set(ModelVersion.objects.values_list("name", flat=True)) == {version.name, "unused"}


def test_an_inactive_version_is_deleted_as_before(admin_client, version: ModelVersion, tiny_model):
    model_version_activate(model_version=version)
    unused = model_version_register(artifact_dir=tiny_model, name="unused")

    response = admin_client.post(delete_url(unused), {"post": "yes"})

    assert response.status_code == 302
    assert list(ModelVersion.objects.values_list("name", flat=True)) == [version.name]


@pytest.mark.parametrize(
    ("threshold", "error"),
    [
        ("0", "The threshold must be above 0 and at most 1 (a confidence), not 0.0."),
        ("1.5", "The threshold must be above 0 and at most 1 (a confidence), not 1.5."),
        ("-0.2", "The threshold must be above 0 and at most 1 (a confidence), not -0.2."),
    ],
)
def test_the_threshold_field_refuses_values_outside_0_to_1(
    admin_client, version: ModelVersion, threshold: str, error: str
):
    before = version.threshold

    response = admin_client.post(change_url(version), {"name": version.name, "threshold": threshold})

    assert response.status_code == 200
    assert error in response.content.decode()
    version.refresh_from_db()
    assert version.threshold == before


def test_the_threshold_field_takes_a_confidence_up_to_1(admin_client, version: ModelVersion):
    response = admin_client.post(change_url(version), {"name": version.name, "threshold": "1"})

    assert response.status_code == 302
    version.refresh_from_db()
    assert version.threshold == 1.0
