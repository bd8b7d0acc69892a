# syntax=docker/dockerfile:1
# One image for every service: `python -m services.<api|scheduler|sender|provider_stub|reporter>`
# (the default command runs the API) and `alembic upgrade head` for migrations.
ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: wheels for the dependencies, installed into a virtualenv ------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
# Only the dependency list first, so code changes do not rebuild the dependency layers.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip wheel --wheel-dir /wheels -r requirements.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -r requirements.txt \
 && /opt/venv/bin/pip uninstall -y pip setuptools wheel

# --- runtime: the virtualenv and the source, no compilers, no pip, a non-root user -----------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    LOG_FORMAT=json
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Root-owned and read-only for the app user; nothing is written at run time
# (the containers run with a read-only root filesystem in Kubernetes).
COPY alembic.ini ./
COPY shared ./shared
COPY services ./services
USER 10001:10001
# api, scheduler metrics, sender metrics, reporter metrics, provider stub
EXPOSE 8000 9101 9102 9103 8090
CMD ["python", "-m", "services.api"]
