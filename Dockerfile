# The Meridian control plane image: `make image` builds it (README: "Container image").
#
# Two stages: the builder makes a virtualenv and installs Meridian into it; the final stage is the
# same base image plus that venv, so the venv's python symlink points at the same interpreter path
# (/usr/local/bin/python3 in the official python images, /usr/bin/python3 in Debian's own).
# BASE_IMAGE must provide python3 with the venv module.
#
# Offline: put wheels in wheelhouse/ (`make wheelhouse`, i.e. `pip wheel . setuptools -w wheelhouse`)
# and build with --build-arg PIP_NO_INDEX=1 (and --network none): pip then installs only from there.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim

FROM ${BASE_IMAGE} AS builder
# 0: PyPI plus wheelhouse/ when present; 1: wheelhouse/ only. Build args are environment in RUN.
ARG PIP_NO_INDEX=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_FIND_LINKS=/src/wheelhouse
RUN python3 -m venv /opt/meridian
# .dockerignore lets in only pyproject.toml, README.md, controlplane/ and wheelhouse/.
COPY . /src
RUN /opt/meridian/bin/pip install /src \
    && /opt/meridian/bin/meridian --help > /dev/null

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="meridian" \
      org.opencontainers.image.description="Multi-cluster Ingress control plane for Envoy gateways (xDS)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/meridian /opt/meridian
# The root filesystem may be read-only: nothing writes .pyc files (pip compiled them at install),
# and HOME and the caches live under /tmp, which the chart mounts as an emptyDir (a tmpfs with
# `podman run --read-only`).
ENV PATH=/opt/meridian/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache
# xDS (gRPC) and admin (/healthz, /readyz, /metrics): the chart's defaults.
EXPOSE 18000 19000
WORKDIR /tmp
# A fixed non-root uid/gid (the "nonroot" of distroless images): needs no passwd entry, and the
# chart's runAsUser matches it.
USER 65532:65532
ENTRYPOINT ["meridian"]
CMD ["--help"]
