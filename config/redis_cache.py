"""Django's RedisCache, with one redis client per connection pool instead of a new one for every call.

redis-py 8 fills a table of some 170 response callbacks in each client it builds, and Django builds one for
every get and set: four per cached API page (throttle, generation, page), about a third of serving it
(bench/api_load.py). A client only wraps its pool, which is thread-safe, so one per pool serves every call.
"""

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class PooledRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class PooledRedisCache(RedisCache):
    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._class = PooledRedisCacheClient
