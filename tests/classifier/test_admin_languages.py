"""The classifier's admin pages in Brazilian Portuguese, for a browser that asks for it: their own words,
and the figures and names they show unchanged."""

from decimal import Decimal

import pytest
from django.utils import timezone

from catalog.models import Category
from catalog.services.products import product_create
from classifier.models import BulkJob, ModelVersion, Prediction, TrainingRun

pytestmark = pytest.mark.django_db

PT_BR = {"HTTP_ACCEPT_LANGUAGE": "pt-BR,pt;q=0.9"}


@pytest.fixture
def version() -> ModelVersion:
    return ModelVersion.objects.create(
        name="shop-v3",
        artifact_path="shop-v3",
        model_sha256="0" * 64,
        architecture="effnet_lite2",
        class_names=["Dress", "Shirt"],
        threshold=0.8,
        metrics={"threshold_coverage": 0.76},
        is_active=True,
        activated_at=timezone.now(),
    )


def words(html: str) -> str:
    return " ".join(html.split())


def test_the_dashboard_and_its_drift_banner_in_portuguese(admin_client, version, make_upload):
    product = product_create(name="Vestido", sku="V-1", price=Decimal("10"), image=make_upload())
    # Today 12 of 40 photos filed automatically against 76 % at validation: a drift the banner shows.
    Prediction.objects.bulk_create(
        Prediction(
            product=product,
            model_version=version,
            image_sha256=f"photo-{index}",
            label="Dress",
            confidence=0.9 if index < 12 else 0.5,
        )
        for index in range(40)
    )

    page = words(admin_client.get("/admin/", **PT_BR).content.decode())

    assert "A loja num relance" in page
    assert "classificou automaticamente 30% de 40 fotos, 46 pontos abaixo do valor na validação (76%)" in page
    assert "Quem classificou os produtos" in page and "<th>Ainda não classificados</th>" in page
    assert "Desvio: os últimos 14 dias" in page
    assert "effnet_lite2, 2 categorias, ativa desde" in page
    assert "Administração do Django" in page


def test_a_model_version_page_in_portuguese(admin_client, version):
    page = words(admin_client.get(f"/admin/classifier/modelversion/{version.pk}/change/", **PT_BR).text)

    assert '<span id="version-state" class="vitrine-state-active">Ativa</span>' in page
    assert "Limiar de confiança" in page
    assert 'com confiança de <strong id="threshold-in-use">80.0%</strong> ou mais' in page
    assert "Nenhum relatório de classificação foi encontrado junto a este modelo." in page
    assert "Acurácia no teste" in page


def test_a_training_run_and_the_bulk_jobs_in_portuguese(admin_client, version):
    run = TrainingRun.objects.create(
        status=TrainingRun.Status.RUNNING, params={"epochs": 4}, progress={"epoch": 2, "epochs": 4}
    )
    BulkJob.objects.create(total=10, done=3, last_product_id=10)

    run_page = words(admin_client.get(f"/admin/classifier/trainingrun/{run.pk}/change/", **PT_BR).text)
    runs = words(admin_client.get("/admin/classifier/trainingrun/", **PT_BR).text)
    jobs = words(admin_client.get("/admin/classifier/bulkjob/", **PT_BR).text)
    progress = admin_client.get(f"/admin/classifier/trainingrun/{run.pk}/progress.json", **PT_BR).json()

    assert f'Treinamento {run.pk}: <span id="training-status">Em andamento</span>' in run_page
    assert '<span class="value" id="training-progress">época 2/4</span>' in run_page
    assert 'id="cancel-run">Cancelar treinamento</button>' in run_page
    assert (
        "época 2/4" in runs
        and 'id="retrain-now"' in runs
        and "Retreino completo" in runs
        and "Retreino rápido" in runs
    )
    assert f"Treinamento {run.pk} (em andamento)" in runs
    assert "Reclassificar todos os produtos" in jobs and "3/10" in jobs
    assert (progress["status_display"], progress["progress_text"]) == ("Em andamento", "época 2/4")


def test_merging_categories_in_portuguese(admin_client):
    shirt = Category.objects.create(name="Shirt", slug="shirt")
    blouse = Category.objects.create(name="Blouse", slug="blouse", is_active=False)

    page = words(
        admin_client.post(
            "/admin/catalog/category/",
            {"action": "merge_categories", "_selected_action": [shirt.pk, blouse.pk]},
            **PT_BR,
        ).text
    )

    assert "Escolha a categoria que vai ficar." in page
    assert "Blouse — 0 produto (desativada)" in page and "Shirt — 0 produto" in page
    assert 'id="confirm-merge" class="button default">Unir</button>' in page


def test_a_refused_activation_is_explained_in_portuguese(admin_client, version):
    response = admin_client.post("/admin/classifier/modelversion/roll-back/", follow=True, **PT_BR)

    assert [str(message) for message in response.context["messages"]] == [
        "não há para onde reverter: nenhuma outra versão estava ativa antes da atual"
    ]
    version.refresh_from_db()
    assert version.is_active
