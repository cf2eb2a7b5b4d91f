# wxtoken image. Default command: `wxtoken-producer`; the gateway (`wxtoken-gateway`) and the
# ops CLI (`wxtoken ...`, including `wxtoken sandbox`) run from the same image with a command
# override (see compose.yaml).
#
# Nothing about a deployment is baked in: settings come from WXTOKEN_* variables, the apps
# file is bind-mounted at run time and app secrets arrive as mounted secret files
# (compose/swarm/Kubernetes secrets). Build context filtering: .dockerignore.
#
#   docker build -t wxtoken .        (BuildKit, the default builder: RUN --mount below)
#
# No `# syntax=` line on purpose: it would pull an unpinned frontend image at build time.

# Exact tag, so a rebuild does not silently move to another Python or Debian point release,
# and its digest, so a re-pushed tag cannot change what is built either; `make pin-images`
# (deploy/pin_images.py) resolves the tag again.
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm@sha256:2333bd330d12de02514770b3585cad313644316047cdee24a7acfdece6de6efb

# ---- build: the project's wheel plus wheels of exactly the locked dependencies ----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    UV_PYTHON_DOWNLOADS=never
WORKDIR /src
# uv reads the lock; the same version as the Makefile's UV_VERSION.
ARG UV_VERSION=0.13.10
RUN python -m pip install "uv==${UV_VERSION}"
# Only what the wheel is built from: the metadata, the lock, the readme and license it
# declares, the three packages.
COPY pyproject.toml uv.lock README.md LICENSE ./
COPY consumer_lib/ consumer_lib/
COPY producer/ producer/
COPY ops/ ops/
# The image runs the producer, the ops CLI, the gateway and the platform receiver, so it
# carries their extras (the gateway's brings Starlette, uvicorn and prometheus-client, which
# the producer's metrics port uses too; platform: the third-party platforms' database):
# exactly the locked versions, each wheel checked against the lock's hash.
# tests/integration/test_packaging.py installs the same export and runs compose's commands.
RUN mkdir -p /wheels \
 && uv export --frozen --no-dev --no-emit-project \
        --extra producer --extra ops --extra gateway --extra platform \
        -o /wheels/requirements.txt \
 && python -m pip download --require-hashes --only-binary=:all: --no-deps \
        --dest /wheels -r /wheels/requirements.txt \
 && uv build --wheel --out-dir /wheels/project

# ---- runtime: a venv with the wheels installed offline, run as an unprivileged user ---------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="wxtoken" \
      org.opencontainers.image.description="WeChat access-token producer (wxtoken-producer), HTTP gateway (wxtoken-gateway), platform receiver (wxtoken-platform-receiver) and ops CLI (wxtoken)" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 wxtoken \
 && useradd --system --uid 10001 --gid wxtoken --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin wxtoken
# The wheels are bind-mounted from the build stage, so they never land in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /wheels --require-hashes \
        -r /wheels/requirements.txt \
 && /opt/venv/bin/pip install --no-index --no-deps /wheels/project/wxtoken-*.whl \
 && mkdir -p /srv/wxtoken
# An empty working directory: the settings also read `.env` from the working directory, and
# in a container the environment alone must decide.
WORKDIR /srv/wxtoken
USER 10001:10001
CMD ["wxtoken-producer"]
