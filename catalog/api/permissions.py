"""Who may call what: the storefront reads are open; everything else needs the model permission it uses.

The permission of a request is that of its view's model and its method (README "Security"): GET, HEAD and
OPTIONS `view_<model>`, POST `add_<model>`, PUT and PATCH `change_<model>`, DELETE `delete_<model>`.
Without credentials the answer is 401 (with `WWW-Authenticate: Token`); signed in without it, 403.
"""

from rest_framework.permissions import DjangoModelPermissions, DjangoModelPermissionsOrAnonReadOnly

VIEW = ["%(app_label)s.view_%(model_name)s"]
CHANGE = ["%(app_label)s.change_%(model_name)s"]


class StorefrontReadsOpen(DjangoModelPermissionsOrAnonReadOnly):
    """Anyone may read, signed in or not; a write needs the model's add / change / delete permission."""


class ModelPermissionsForReads(DjangoModelPermissions):
    """Reads need the model's view permission, writes its add / change / delete permission."""

    perms_map = {**DjangoModelPermissions.perms_map, "GET": VIEW, "HEAD": VIEW, "OPTIONS": VIEW}


class ClassifyAgainPermission(ModelPermissionsForReads):
    """Classifying again is a POST that changes an existing product: it needs the change permission."""

    perms_map = {**ModelPermissionsForReads.perms_map, "POST": CHANGE}
