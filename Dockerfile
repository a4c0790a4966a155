# syntax=docker/dockerfile:1.7
#
# engagement-consumer image: build the wheels in one stage, install them into a clean slim runtime.
#
#   docker build -t engagement-consumer:0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#
# The runtime image has no compiler, no pip cache, no sources: only Python, the installed wheels and
# an unprivileged user (uid/gid 10001). It writes nothing to disk, so it runs with a read-only root
# filesystem (deploy/ mounts an emptyDir at /tmp all the same). tests/deploy checks this file against
# the package: ENTRYPOINT = the console script in pyproject.toml, EXPOSE = the default HTTP_PORT.

# Shared base of both stages. It carries the static OCI labels (so hadolint's label-schema, see
# .hadolint.yaml, holds for every stage) and nothing that changes per build: the per-build labels
# (version, revision, created) are set in the runtime stage only, so the wheel build stays cached.
FROM python:3.11-slim-bookworm AS base

LABEL org.opencontainers.image.title="engagement-consumer" \
      org.opencontainers.image.description="Kafka lead/service events to LivePerson Engagement Attributes, at least once." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1


FROM base AS build

WORKDIR /src
# Only what the wheel is built from (see .dockerignore): metadata first, then the package.
COPY pyproject.toml README.md ./
COPY consumer ./consumer
# The project's wheel plus a wheel of every pinned dependency, so the runtime stage installs
# offline from /wheels and needs no build tools.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .


FROM base AS runtime

# Numeric uid/gid so Kubernetes can verify runAsNonRoot; no home directory, no login shell.
RUN groupadd --system --gid 10001 engagement \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin engagement

# Install from the build stage's wheels through a bind mount: the wheels never become a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl

USER 10001:10001
WORKDIR /tmp

# /metrics, /healthz, /readyz (HTTP_PORT, default 9102).
EXPOSE 9102

# Kubernetes uses its own probes (deploy/base/deployment.yaml); this one serves `docker run`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '9102'), timeout=3)"]

# Per-build labels last: a new REVISION/CREATED must not invalidate the cached layers above.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

# SIGTERM (the default stop signal) drains in-flight work within SHUTDOWN_DRAIN_S, commits, exits 0.
ENTRYPOINT ["engagement-consumer"]
CMD ["run"]
