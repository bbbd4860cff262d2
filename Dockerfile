# syntax=docker/dockerfile:1
# One image for the five Shelfwise services (and the model export Job): the Deployments pick
# the service with `python -m services.<name>`. Model weights are NOT in the image; they come
# from the model repository volume mounted at /models (see deploy/README.md).
#
#   docker build -t ghcr.io/shelfwise/shelfwise:0.1.0 .
#
# torch is pinned (torch==2.13.0, as in pyproject.toml) and installed first from PyTorch's CPU
# wheel index: from PyPI, the default torch wheel pulls several GB of CUDA libraries the
# services never use (GPU inference is Triton's job). Where the wheels are on disk instead
# (as on the project's development machines, pip's find-links /opt/wheels), serve that folder
# (`python -m http.server 8000` in it) and pass --build-arg WHEELS_URL=http://<host>:8000/
#
# Kubernetes runs the probes (grpc.health.v1); a Docker HEALTHCHECK would need one port per
# service and is ignored by Kubernetes.
# checkov:skip=CKV_DOCKER_2:health is checked by Kubernetes gRPC probes, which ignore HEALTHCHECK

FROM python:3.11-slim AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG WHEELS_URL=
# An empty PIP_FIND_LINKS is an empty list for pip.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=${WHEELS_URL}
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch first, from the CPU index, so that the CPU wheel is what satisfies torch==2.13.0 when
# `pip install .` (the README's install) resolves the rest from PyPI.
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY services ./services
COPY training ./training
RUN pip install .

FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 shelfwise \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin shelfwise
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# config.pbtxt only (.dockerignore leaves the weights out): the model export Job copies them
# into the model repository volume next to the exported versions.
COPY model_repository ./model_repository
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    SHELFWISE_HOST=0.0.0.0 \
    SHELFWISE_MODEL_REPOSITORY=/models
USER 10001:10001
EXPOSE 50051 50052 50053 50054 50055
ENTRYPOINT ["python", "-m"]
CMD ["services.gateway"]
