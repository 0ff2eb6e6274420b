# One image for both sides of taskgate (see docker-compose.yml):
#   the gateway, by default:  python -m server
#   a worker:                 celery -A worker worker --loglevel=INFO
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the installed package needs: no tests, scripts or virtualenv.
COPY pyproject.toml README.md /tmp/taskgate/
COPY server /tmp/taskgate/server
COPY worker /tmp/taskgate/worker
COPY taskgate /tmp/taskgate/taskgate
RUN pip install /tmp/taskgate && rm -rf /tmp/taskgate

# Celery warns against running as root, and neither side needs it.
RUN useradd --create-home --uid 10001 taskgate
USER taskgate
WORKDIR /home/taskgate

EXPOSE 50051
CMD ["python", "-m", "server"]
