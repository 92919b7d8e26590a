"""The admin index's dashboard panel: {% load vitrine_admin %}{% vitrine_dashboard %}."""

from django import template

from classifier.admin.display import report_headline
from classifier.selectors import dashboard_figures

register = template.Library()


@register.inclusion_tag("vitrine/dashboard.html", takes_context=True)
def vitrine_dashboard(context: template.Context) -> dict:
    figures = dashboard_figures()
    report = figures["active_report"]
    return {
        **figures,
        "active_headline": report_headline(report) if report is not None else [],
        "perms": context.get("perms"),
        "request": context.get("request"),
    }
