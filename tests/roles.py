"""The callers of the permission tables: the three roles, a superuser, and the accounts with no role."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

CALLERS = (
    "anonymous",
    "non-staff",
    "staff without groups",
    "viewer",
    "catalog editor",
    "ML operator",
    "superuser",
)
# The groups data migrations create (catalog/migrations/0004_roles.py, classifier/migrations/0005_roles.py).
ROLE_GROUPS = {"viewer": "Viewer", "catalog editor": "Catalog editor", "ML operator": "ML operator"}


def caller_user(caller: str, *, username: str | None = None):
    """The user a caller signs in as; None for "anonymous"."""
    if caller == "anonymous":
        return None
    username = username or caller.replace(" ", "-").lower()
    users = get_user_model().objects
    if caller == "superuser":
        return users.create_superuser(username=username, password="super-pass-9")
    user = users.create_user(username=username, password="caller-pass-9", is_staff=caller != "non-staff")
    if caller in ROLE_GROUPS:
        user.groups.add(Group.objects.get(name=ROLE_GROUPS[caller]))
    return user
