# One image for both sides of taskgate (see docker-compose.yml):
#   the gateway, by default:  python -m taskgate.server
#   a worker:                 celery -A taskgate.worker worker --loglevel=INFO
# tests/test_image.py runs this file's RUN commands and ENV into a fresh virtualenv and
# starts a gateway and a worker from it, so keep them runnable as they are written.
# RUN --mount needs BuildKit: the default builder since Docker Engine 23.
#
# The base is a full version tag, not a digest: a digest pins one build forever, security
# fixes to Debian's packages included, while the tag moves only with those rebuilds.
# Pin the digest (python:3.11.14-slim-bookworm@sha256:...) where builds must be bit-for-bit.

# Build: wheels of the locked dependencies (hash-checked) and of taskgate itself.
# The full image has the compiler a dependency without a wheel for this platform needs.
FROM python:3.11.14-bookworm AS build
WORKDIR /build
COPY requirements/runtime.lock requirements/runtime.lock
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --disable-pip-version-check --require-hashes --no-deps \
      --wheel-dir wheels -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY server server
COPY worker worker
COPY taskgate taskgate
RUN pip wheel --disable-pip-version-check --no-cache-dir --no-deps --wheel-dir wheels .

# Run: the same Python, no compiler, only those wheels (nothing from an index).
FROM python:3.11.14-slim-bookworm
# MALLOC_ARENA_MAX: glibc gives every thread that allocates an arena of its own (up to
# eight per core) and seldom returns their memory, so a server that runs for weeks with
# gRPC's and the publish threads, or Celery's pool, grows its resident size for nothing;
# two arenas bound that. PYTHONUNBUFFERED: each log line reaches `docker logs` at once.
# PYTHONFAULTHANDLER: a crash in C code (grpcio, uvloop) leaves the Python tracebacks.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    MALLOC_ARENA_MAX=2 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/build/wheels,target=/wheels \
    --mount=type=bind,source=requirements/runtime.lock,target=/runtime.lock \
    pip install --no-index --find-links /wheels --require-hashes -r /runtime.lock \
    && pip install --no-index --no-deps /wheels/taskgate-*.whl

# Celery warns against running as root, and neither side needs it.
RUN useradd --create-home --uid 10001 taskgate
USER taskgate
WORKDIR /home/taskgate

# gRPC, and the Prometheus metrics (TASKGATE_METRICS_LISTEN).
EXPOSE 50051 9464
CMD ["python", "-m", "taskgate.server"]
