"""The roles a shop hands out, as groups, with their catalog permissions (README "Security").

classifier/migrations/0005_roles.py adds the classifier's permissions to the same groups, so the catalog
names none of them. Running it again changes nothing.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLE_PERMISSIONS = {
    "Catalog editor": [
        *("add_product", "change_product", "view_product"),
        *("add_productimage", "change_productimage", "view_productimage"),
        *("add_category", "change_category", "view_category"),
        "view_reviewqueueitem",
    ],
    "ML operator": ["view_product", "view_productimage", "view_category"],
    "Viewer": ["view_product", "view_productimage", "view_category", "view_reviewqueueitem"],
}


def roles_grant(apps, *, app_label: str, role_permissions: dict[str, list[str]]) -> None:
    """Creates the groups if missing and adds the app's permissions to them (both steps idempotent)."""
    # Django makes permissions after the last migration (post_migrate); the groups need this app's now.
    app_config = apps.get_app_config(app_label)
    app_config.models_module = True  # create_permissions() skips an app config without a models module
    create_permissions(app_config, apps=apps, verbosity=0)
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for role, codenames in role_permissions.items():
        group, _ = group_model.objects.get_or_create(name=role)
        permissions = permission_model.objects.filter(
            content_type__app_label=app_label, codename__in=codenames
        )
        missing = set(codenames) - set(permissions.values_list("codename", flat=True))
        if missing:
            raise LookupError(f"{app_label} has no permission {', '.join(sorted(missing))}")
        group.permissions.add(*permissions)


def catalog_roles_grant(apps, schema_editor) -> None:
    roles_grant(apps, app_label="catalog", role_permissions=ROLE_PERMISSIONS)


def catalog_roles_remove(apps, schema_editor) -> None:
    apps.get_model("auth", "Group").objects.filter(name__in=ROLE_PERMISSIONS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("catalog", "0003_review_reason_and_unfamiliarity"),
    ]

    operations = [migrations.RunPython(catalog_roles_grant, catalog_roles_remove)]
