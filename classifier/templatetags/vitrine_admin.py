"""The admin index's dashboard panel: {% load vitrine_admin %}{% vitrine_dashboard %}."""

from django import template

from classifier.selectors import dashboard_figures

register = template.Library()


@register.inclusion_tag("vitrine/dashboard.html", takes_context=True)
def vitrine_dashboard(context: template.Context) -> dict:
    return {**dashboard_figures(), "perms": context.get("perms"), "request": context.get("request")}
