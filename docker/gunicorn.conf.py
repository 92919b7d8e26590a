"""gunicorn of the web container (docker-compose.yml); the numbers come from the environment."""

import os

bind = f"0.0.0.0:{os.environ.get('WEB_PORT', '8000')}"
# Requests are short (uploads are validated, classification happens in the workers): a few processes suffice.
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
timeout = int(os.environ.get("WEB_TIMEOUT_S", "60"))
graceful_timeout = 30
# Access lines on stdout beside Django's JSON log lines; the proxy in front logs them too.
accesslog = "-"
errorlog = "-"
