# Loaded with Django so that @shared_task and .delay() use this app and its broker settings.
from .celery_app import app as celery_app

__all__ = ("celery_app",)
