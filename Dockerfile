# PicFilter: one image for the API and every Celery worker (docker-compose.yml picks the command).
#
#   docker build -t picfilter .
#   docker run --rm -p 8000:8000 -e JWT_SECRET_KEY=... picfilter   # the API alone (no worker);
#   (ENVIRONMENT=production: JWT_SECRET_KEY is required, 32+ random bytes, e.g. the output of
#   python -c "import secrets; print(secrets.token_urlsafe(48))"; it is refused when missing)
#   the whole stack (PostgreSQL, Redis, MinIO, workers, nginx) is docker-compose.yml.
#
# PyTorch comes from the CPU wheel index, so a CUDA build (several GB) is never pulled. For a
# GPU ml-worker build the same image with a CUDA index instead:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t picfilter:gpu .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# openssl: the compose `certs` one-shot uses this image to make a self-signed TLS certificate.
# liblcms2-2: LittleCMS, which writes the ICC profile exports (app/ml/icc_export.py, ctypes).
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssl liblcms2-2 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 picfilter \
    && useradd --system --uid 10001 --gid picfilter --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin picfilter

WORKDIR /app

# 1. Dependencies (the slow layer, torch included): installed from pyproject.toml with a stub
#    package, so that it stays cached while only the code changes.
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py \
    && pip install --extra-index-url "${TORCH_INDEX_URL}" . \
    && pip uninstall -y picfilter \
    && rm -rf app build ./*.egg-info

# 2. The package itself, plus the migrations that `picfilter migrate` / `serve` apply.
COPY app ./app
COPY alembic ./alembic
COPY alembic.ini ./
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && case "${TORCH_INDEX_URL}" in \
         */cpu) python -c "import sys, torch; sys.exit(f'CUDA torch {torch.__version__} was installed' if torch.version.cuda else 0)" ;; \
       esac

# app/cli.py finds alembic.ini and alembic/ beside the `app` package: import `app` from /app
# (where they are) rather than from site-packages.
# ENVIRONMENT=production: the image listens on every interface, and its containers do not share
# DATA_DIR, so no key is made there: each process needs the same JWT_SECRET_KEY from outside.
ENV PYTHONPATH=/app \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/var/lib/picfilter

# DATA_DIR holds the Celery beat schedule (and, without S3, local objects): writable by the app.
RUN mkdir -p /var/lib/picfilter && chown picfilter:picfilter /var/lib/picfilter

USER 10001:10001

EXPOSE 8000

# Liveness of the API process (workers override this in docker-compose.yml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)" || exit 1

CMD ["picfilter", "serve", "--no-worker"]
