import re

from django.utils.translation import gettext
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.views import APIView

CATALOG_PAGE_DEFAULT = 20
CATALOG_PAGE_MAX = 100
WHOLE_NUMBER = re.compile(r"[0-9]+")
# Longer numbers are past the end of any catalog; reading them as this keeps int() off huge strings.
LONGEST_NUMBER_DIGITS = 18


def _query_whole_number(request: Request, name: str, *, default: int, smallest: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    refusal = ValidationError(
        {name: [gettext("Must be a whole number of at least %(smallest)d.") % {"smallest": smallest}]}
    )
    if not WHOLE_NUMBER.fullmatch(text):
        raise refusal
    digits = text.lstrip("0") or "0"
    if len(digits) > LONGEST_NUMBER_DIGITS:
        return 10**LONGEST_NUMBER_DIGITS
    if int(digits) < smallest:
        raise refusal
    return int(digits)


class CatalogPagination(LimitOffsetPagination):
    """?limit=&offset= pages. A limit above 100 is served as 100; a limit or offset that is not a whole
    number (or a limit below 1) is a 400 naming the parameter."""

    default_limit = CATALOG_PAGE_DEFAULT
    max_limit = CATALOG_PAGE_MAX

    def get_limit(self, request: Request) -> int:
        limit = _query_whole_number(request, self.limit_query_param, default=self.default_limit, smallest=1)
        return min(limit, self.max_limit)

    def get_offset(self, request: Request) -> int:
        return _query_whole_number(request, self.offset_query_param, default=0, smallest=0)

    def get_schema_operation_parameters(self, view: APIView) -> list[dict]:
        return [
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "description": (
                    f"Results per page: {CATALOG_PAGE_DEFAULT} if not given, at most {CATALOG_PAGE_MAX} "
                    f"(a larger value returns {CATALOG_PAGE_MAX})."
                ),
                "schema": {"type": "integer", "minimum": 1},
            },
            {
                "name": self.offset_query_param,
                "required": False,
                "in": "query",
                "description": "How many results to skip (0 if not given).",
                "schema": {"type": "integer", "minimum": 0},
            },
        ]
