# syntax=docker/dockerfile:1
# The NPS feedback loop: one image for every service. The service is the argument:
#   docker run IMAGE ingest | scoring | followup | alerts | delivery | themes
#   docker run IMAGE migrate      (and `topics`: the one-shot set-up jobs)
# Configuration is environment only (docs/configuration.md): DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS,
# NPS_PSEUDONYM_SECRET, ... The embedded PostgreSQL and broker (`nps up` on a laptop) are not in it.
# Checked statically by tests/unit/test_deploy_images.py; not built on the development machine.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/nps
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clients ./clients
COPY shared ./shared
COPY ingest_service ./ingest_service
COPY scoring_service ./scoring_service
COPY themes_service ./themes_service
COPY followup_service ./followup_service
COPY alerts_service ./alerts_service
COPY delivery_service ./delivery_service
COPY services ./services
# Every dependency ships manylinux wheels: no compiler in either stage.
RUN /opt/nps/bin/pip install --only-binary=:all: --no-compile . \
    && /opt/nps/bin/python -m compileall -q /opt/nps/lib

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/nps/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NPS_INGEST_HOST=0.0.0.0 \
    NPS_SCORING_HOST=0.0.0.0 \
    NPS_FOLLOWUP_HOST=0.0.0.0 \
    NPS_ALERTS_HOST=0.0.0.0 \
    NPS_DELIVERY_HOST=0.0.0.0 \
    NPS_THEMES_HOST=0.0.0.0
RUN groupadd --system --gid 10001 nps \
    && useradd --system --uid 10001 --gid nps --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nps
COPY --from=build /opt/nps /opt/nps
USER 10001:10001
# ingest, scoring, followup, alerts, delivery, themes
EXPOSE 8000 8001 8002 8003 8004 8005
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["nps", "probe"]
ENTRYPOINT ["nps"]
CMD ["--help"]
