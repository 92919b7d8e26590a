"""The classifier's permissions for the roles catalog/migrations/0004_roles.py creates (README "Security")."""

from importlib import import_module

from django.db import migrations

# The catalog's migration owns the groups and how they are made; a module name with a digit needs this import.
roles_grant = import_module("catalog.migrations.0004_roles").roles_grant

ROLE_PERMISSIONS = {
    "Catalog editor": ["view_modelversion", "view_prediction"],
    "ML operator": [
        *("add_trainingrun", "change_trainingrun", "view_trainingrun"),
        *("change_modelversion", "view_modelversion", "view_modelactivation"),
        *("add_bulkjob", "view_bulkjob"),
        "view_prediction",
    ],
    "Viewer": [
        *("view_modelversion", "view_modelactivation", "view_prediction"),
        *("view_trainingrun", "view_bulkjob"),
    ],
}


def classifier_roles_grant(apps, schema_editor) -> None:
    roles_grant(apps, app_label="classifier", role_permissions=ROLE_PERMISSIONS)


def classifier_roles_remove(apps, schema_editor) -> None:
    for group in apps.get_model("auth", "Group").objects.filter(name__in=ROLE_PERMISSIONS):
        group.permissions.remove(*group.permissions.filter(content_type__app_label="classifier"))


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0004_roles"),
        ("classifier", "0004_unfamiliar_photos_and_unvalidated_models"),
    ]

    operations = [migrations.RunPython(classifier_roles_grant, classifier_roles_remove)]
