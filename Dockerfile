# syntax=docker/dockerfile:1
# vitrine's images, one Dockerfile, three targets (docker-compose.yml builds each):
#   cpu     web, beat and the CPU worker: requirements.txt as pinned (tensorflow-cpu).
#   gpu     the GPU inference worker: requirements.txt with TensorFlow's CUDA build of the very same version
#           (tensorflow[and-cuda]: CUDA and cuDNN come as NVIDIA's pip wheels), so the host needs only the
#           NVIDIA driver and nvidia-container-toolkit, no CUDA install.
#   flower  the queue monitor: the cpu image plus requirements-flower.txt.
# Build one by hand: docker build --target gpu -t vitrine:gpu .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    DJANGO_SETTINGS_MODULE=config.settings.production
# The code belongs to root and is only read; the processes run as "vitrine" and write only under /data.
RUN groupadd --system vitrine \
    && useradd --system --gid vitrine --create-home --home-dir /home/vitrine vitrine \
    && mkdir -p /data/media /data/models /data/beat \
    && chown -R vitrine:vitrine /data
WORKDIR /app

FROM base AS cpu
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY . .
# Static files are part of the image (hashed names, served by WhiteNoise); the values only let settings load.
RUN DJANGO_SECRET_KEY=collectstatic-only-not-a-secret DJANGO_ALLOWED_HOSTS=localhost \
    DATABASE_URL=sqlite:////tmp/collectstatic.sqlite3 CELERY_BROKER_URL=redis://collectstatic:6379/0 \
    python manage.py collectstatic --noinput --verbosity 0
USER vitrine
EXPOSE 8000
CMD ["gunicorn", "--config", "docker/gunicorn.conf.py", "config.wsgi"]

FROM base AS gpu
COPY requirements.txt ./
# requirements.txt less tensorflow-cpu, plus tensorflow[and-cuda] at the version tensorflow-cpu is pinned to.
RUN grep -v '^tensorflow-cpu==' requirements.txt > /tmp/requirements-gpu.txt \
    && tensorflow_version="$(sed -n 's/^tensorflow-cpu==//p' requirements.txt)" \
    && test -n "$tensorflow_version" \
    && pip install "tensorflow[and-cuda]==${tensorflow_version}" -r /tmp/requirements-gpu.txt
COPY . .
USER vitrine
CMD ["celery", "-A", "config.celery_app", "worker", "--pool", "solo", "-Q", "inference", "--loglevel", "INFO"]

FROM cpu AS flower
USER root
COPY requirements-flower.txt ./
RUN pip install -r requirements-flower.txt
USER vitrine
EXPOSE 5555
CMD ["celery", "-A", "config.celery_app", "flower", "--port=5555"]
