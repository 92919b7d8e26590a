import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
# Set before numpy loads: a request is one thread; a BLAS pool per search fights the other web workers for the
# cores (a 10,000 x 1280 search, p95: 20 ms with 2 BLAS threads, 7 ms with 1, on 2 busy cores).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
application = get_wsgi_application()
