"""A laptop: debug on; embedded SQLite and filesystem broker unless the environment names others."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
