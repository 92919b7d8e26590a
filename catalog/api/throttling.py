from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle


class AnonymousClientThrottle(AnonRateThrottle):
    """AnonRateThrottle that reads its rate when a request arrives, not when DRF was imported,
    so a rate set in the environment or changed by a test is the one enforced."""

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
