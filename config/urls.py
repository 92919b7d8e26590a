from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from catalog.admin.language import language_view
from config.health import healthz
from config.media import media_file

urlpatterns = [
    # Probes (docker compose, a load balancer): database, broker and the active model file.
    path("healthz", healthz, name="healthz"),
    # Before the admin's own URLs, behind its sign-in: each person's language (catalog.admin.language).
    path("admin/language/", admin.site.admin_view(language_view), name="admin-language"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("catalog.api.urls")),
    path("api/v1/", include("classifier.api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, view=media_file, document_root=settings.MEDIA_ROOT)
