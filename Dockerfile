# syntax=docker/dockerfile:1
# edgead runtime image: the runtime extras only (no PyTorch), TensorRT from the base image.
#
# x86-64 + NVIDIA GPU (TensorRT 10.3, CUDA 12.6):
#   docker build -t edgead .
# Jetson Orin, JetPack 6 (L4T r36; TensorRT and GStreamer-enabled OpenCV come from JetPack):
#   docker build -t edgead:jetson --build-arg BASE=nvcr.io/nvidia/l4t-jetpack:r36.4.0 --build-arg TARGET=jetson .
# Desktop GeForce/RTX with TensorRT for RTX (engines may also be built ahead of time without a GPU):
#   docker build -t edgead:rtx --build-arg TARGET=rtx .
#
# Run on a camera (engines are built once, on the device, into the mounted bundle):
#   docker run --rm --gpus all -v $PWD/tire.edgead:/bundle edgead edgead export /bundle --engine fp16
#   docker run --rm --gpus all --device /dev/video0 -v $PWD/tire.edgead:/bundle -v $PWD/out:/out \
#       edgead edgead run /bundle --camera 0 --jsonl /out/events.jsonl --save-anomalies /out/anomalies
# (on Jetson use --runtime nvidia instead of --gpus all)

ARG BASE=nvcr.io/nvidia/tensorrt:24.08-py3

FROM python:3.10-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgead ./edgead
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${BASE} AS runtime
ARG TARGET=x86
COPY --from=wheel /wheels /wheels
# x86: onnxruntime-gpu + polygraphy from PyPI; TensorRT's Python package is already in the base.
# Jetson: keep JetPack's OpenCV (GStreamer for CSI cameras) and TensorRT; no onnxruntime-gpu on PyPI
# for aarch64, so ONNX Runtime CPU serves as the validation reference and native TensorRT runs.
RUN set -eux; whl=$(ls /wheels/edgead-*.whl); \
    if [ "$TARGET" = "jetson" ]; then \
      pip install --no-cache-dir --no-deps "$whl" && \
      pip install --no-cache-dir "numpy<2" pyyaml click tqdm onnxruntime polygraphy onnx; \
    elif [ "$TARGET" = "rtx" ]; then \
      pip install --no-cache-dir "${whl}[gpu,rtx]" onnx; \
    else \
      pip install --no-cache-dir "${whl}[gpu]" onnx; \
    fi; \
    rm -rf /wheels; edgead --version
ENV OPENCV_LOG_LEVEL=ERROR
WORKDIR /work
CMD ["edgead", "--help"]
