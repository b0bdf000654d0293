# whatsapp-operator container image.
#
#   docker build -t whatsapp-operator:0.1.0 .
#
# Two stages on the same pinned base: "build" makes a wheel of the project and installs it plus
# the pinned runtime dependencies (requirements.lock) into /opt/venv; the final stage copies only
# /opt/venv and crds/ and runs as an unprivileged numeric user. Both stages must use the same base
# image: /opt/venv/bin/python is a symlink to the base image's /usr/local/bin/python3.11.
# For fully reproducible builds, pin the base by digest as well: python:3.11.14-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# No pip/setuptools inside the runtime venv: the base image's pip installs into it (--python).
RUN python -m venv --without-pip /opt/venv
WORKDIR /src
# Dependencies first, so this layer is cached until requirements.lock changes. --no-deps: exactly
# the locked set is installed; `pip check` below fails the build if the lock is incomplete.
# --only-binary: every locked package has wheels for amd64 and arm64; slim has no compiler.
COPY requirements.lock ./
RUN python -m pip --python /opt/venv/bin/python install --no-deps --only-binary=:all: \
        -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
# The package carries the CRDs (package data, for --install-crds); in the source tree
# operator/whatsapp_operator/crds is a link to crds/, so the wheel is built with both present.
COPY crds/ ./crds/
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m pip --python /opt/venv/bin/python install --no-deps /wheels/*.whl \
 && python -m pip --python /opt/venv/bin/python check \
 && /opt/venv/bin/whatsapp-operator --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="whatsapp-operator" \
      org.opencontainers.image.description="Kubernetes operator that manages WhatsApp instances in Evolution API" \
      org.opencontainers.image.licenses="Apache-2.0"
# A passwd entry for the numeric user: kopf names its peering identity after getpass.getuser(),
# which fails for a uid without one (the Deployment also sets POD_ID, which kopf prefers).
RUN groupadd --system --gid 65532 whatsapp \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin whatsapp
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /tmp
# 8080: kopf's liveness endpoint (--liveness); 9090: Prometheus metrics (/metrics).
EXPOSE 8080 9090
ENTRYPOINT ["/opt/venv/bin/whatsapp-operator"]
CMD ["run", "--all-namespaces", "--liveness", "http://0.0.0.0:8080/healthz"]
