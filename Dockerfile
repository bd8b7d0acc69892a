# syntax=docker/dockerfile:1
# One image for every service: `python -m services.<api|scheduler|sender|provider_stub|reporter>`
# (the default command runs the API) and `alembic upgrade head` for migrations.
ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the locked dependencies (uv.lock, hashes checked) installed into a virtualenv --
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
# Only the dependency list and its lock first, so code changes do not rebuild these layers.
# The uv that installs is the one uv.lock pins; `--locked` fails the build when pyproject.toml
# and uv.lock disagree, so the image never resolves versions of its own.
COPY pyproject.toml uv.lock ./
RUN pip install "uv==$(python -c "import tomllib; print(next(p['version'] for p in tomllib.load(open('uv.lock', 'rb'))['package'] if p['name'] == 'uv'))")" \
 && uv export --locked --no-emit-project --format requirements-txt --output-file requirements.txt \
 && pip wheel --wheel-dir /wheels --require-hashes -r requirements.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels --require-hashes -r requirements.txt \
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
