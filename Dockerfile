# One image for the web server and the workers (the command differs per service in docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    DELTAVAULT_HOME=/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ redis-tools curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch is pinned (the PyPI wheel for Linux carries CUDA, so the same image serves the GPU worker).
RUN pip install "torch==2.13.0"

COPY pyproject.toml setup.py ./
COPY codecs ./codecs
COPY native ./native
COPY webapp ./webapp
COPY workers ./workers
COPY templates ./templates
COPY static ./static
COPY manage.py README.md ./
# Static files are collected when the web container starts (STATIC_ROOT lives under DELTAVAULT_HOME, the volume).
RUN pip install -e ".[web,models]"

RUN useradd --create-home --uid 1000 deltavault && mkdir -p /data && chown deltavault /data
USER deltavault
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "webapp.asgi:application"]
