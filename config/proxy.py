"""What the proxy in front of gunicorn says about a request (production: Caddy, docker/Caddyfile)."""

from django.http import HttpRequest


def client_ip_address(request: HttpRequest) -> str | None:
    """The visitor's address: the last X-Forwarded-For entry, the one the proxy added itself (Caddy replaces
    whatever a client sent), else the address of the connection."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    return forwarded.rsplit(",", 1)[-1].strip() or request.META.get("REMOTE_ADDR")
