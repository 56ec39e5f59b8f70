# syntax=docker/dockerfile:1
# edgead runtime image: the runtime extras only (no PyTorch), TensorRT from the base image.
#
# x86-64 + NVIDIA GPU (TensorRT 10.3, CUDA 12.6):
#   docker build -t edgead .
# Jetson Orin, JetPack 6 (L4T r36; TensorRT and GStreamer-enabled OpenCV come from JetPack):
#   docker build -t edgead:jetson --build-arg BASE=nvcr.io/nvidia/l4t-jetpack:r36.4.0 --build-arg TARGET=jetson .
# Desktop GeForce/RTX with TensorRT for RTX (engines may also be built ahead of time without a GPU):
#   docker build -t edgead:rtx --build-arg TARGET=rtx .
# A CPU factory PC (ONNX Runtime CPU; any Debian or Ubuntu base, Python installed if it has none):
#   docker build -t edgead:cpu --build-arg BASE=debian:bookworm-slim --build-arg TARGET=cpu .
# Without a registry, from a base made locally (this is what CI builds: tests/test_container.py):
#   debootstrap --variant=minbase bookworm ROOTFS; c=$(buildah from scratch); buildah copy $c ROOTFS /
#   buildah commit $c localhost/debian-base:bookworm
#   buildah bud --isolation chroot --build-arg BASE=localhost/debian-base:bookworm \
#       --build-arg WHEEL_BASE=localhost/debian-base:bookworm --build-arg TARGET=cpu -t edgead:cpu .
#
# Run on a camera (engines are built once, on the device, into the mounted bundle):
#   docker run --rm --gpus all -v $PWD/tire.edgead:/bundle edgead edgead export /bundle --engine fp16
#   docker run --rm --gpus all --device /dev/video0 -v $PWD/tire.edgead:/bundle -v $PWD/out:/out \
#       edgead edgead run /bundle --camera 0 --jsonl /out/events.jsonl --save-anomalies /out/anomalies
# (on Jetson use --runtime nvidia instead of --gpus all)

ARG BASE=nvcr.io/nvidia/tensorrt:24.08-py3
ARG WHEEL_BASE=python:3.10-slim

FROM ${WHEEL_BASE} AS wheel
WORKDIR /src
RUN command -v python3 >/dev/null && python3 -m venv /tmp/probe 2>/dev/null || { \
      apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates; }; \
    python3 -m venv /opt/build
COPY pyproject.toml README.md LICENSE ./
COPY edgead ./edgead
# A site whose TLS is inspected by its own CA passes it as a build secret (never stored in the image):
#   --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt
RUN --mount=type=secret,id=pip_cert,required=false \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${BASE} AS runtime
ARG TARGET=x86
COPY --from=wheel /wheels /wheels
# x86: onnxruntime-gpu + polygraphy from PyPI; TensorRT's Python package is already in the base.
# Jetson: keep JetPack's OpenCV (GStreamer for CSI cameras) and TensorRT; no onnxruntime-gpu on PyPI
# for aarch64, so ONNX Runtime CPU serves as the validation reference and native TensorRT runs.
RUN --mount=type=secret,id=pip_cert,required=false \
    set -eux; whl=$(ls /wheels/edgead-*.whl); \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    if [ "$TARGET" = "jetson" ]; then \
      pip install --no-cache-dir --no-deps "$whl" && \
      pip install --no-cache-dir "numpy<2" pyyaml click tqdm onnxruntime polygraphy onnx; \
    elif [ "$TARGET" = "rtx" ]; then \
      pip install --no-cache-dir "${whl}[gpu,rtx]" onnx; \
    elif [ "$TARGET" = "cpu" ]; then \
      { command -v python3 >/dev/null && python3 -m venv /tmp/probe 2>/dev/null; } || { \
        apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; }; \
      rm -rf /tmp/probe; python3 -m venv /opt/edgead && /opt/edgead/bin/pip install --no-cache-dir "${whl}[cpu]" \
      && ln -s /opt/edgead/bin/edgead /usr/local/bin/edgead; \
    else \
      pip install --no-cache-dir "${whl}[gpu]" onnx; \
    fi; \
    rm -rf /wheels; edgead --version
ENV OPENCV_LOG_LEVEL=ERROR
WORKDIR /work
CMD ["edgead", "--help"]
