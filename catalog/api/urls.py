from django.urls import path

from catalog.api import views

app_name = "catalog-api"

urlpatterns = [
    path("products/", views.ProductListCreateView.as_view(), name="product-list"),
    path("products/<str:id_or_slug>/", views.ProductDetailView.as_view(), name="product-detail"),
    path(
        "products/<str:id_or_slug>/classification/",
        views.ProductClassificationView.as_view(),
        name="product-classification",
    ),
    path(
        "products/<str:id_or_slug>/reclassify/",
        views.ProductReclassifyView.as_view(),
        name="product-reclassify",
    ),
    path("categories/", views.CategoryListView.as_view(), name="category-list"),
]
