# syntax=docker/dockerfile:1
# The localmodel image (operator, daemon, CLI and emulator): docker build -t localmodel:0.1.0 .
#
# Base images are pinned by tag. When publishing, pin the digest as well:
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
# then write FROM python:3.11-slim-bookworm@sha256:<digest> in all three stages.

# 1. Build the localmodel wheel (no dependencies: those come as published wheels in stage 2).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# 2. Install it with its dependencies into a self-contained virtualenv, then drop the installers.
FROM python:3.11-slim-bookworm AS venv
COPY --from=build /wheels /wheels
RUN python -m venv /opt/localmodel \
    && /opt/localmodel/bin/pip install --no-cache-dir /wheels/*.whl \
    && /opt/localmodel/bin/pip uninstall --yes pip setuptools

# 3. Runtime: the virtualenv only, as an unprivileged numeric user (Kubernetes' runAsNonRoot can
#    verify a numeric UID). No compiler, no pip in the venv, nothing written at run time but /tmp.
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="localmodel" \
      org.opencontainers.image.description="Declarative engine settings for Docker Model Runner" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=venv /opt/localmodel /opt/localmodel
ENV PATH=/opt/localmodel/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["localmodel"]
CMD ["operator"]
