# Product image: runtime only (numpy + OpenVINO + OpenCV), exported models baked in, non-root.
# Build after `make export` (models/ must hold the IR files). Run as the challenge does:
#   docker run -m 8G --rm -v $PWD/inputs/:/workspace/inputs/ -v $PWD/outputs/:/workspace/outputs/ \
#     IMAGE /bin/bash -c "sh predict.sh"
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SEG_CACHE_DIR=/opt/appliance/ov_cache

COPY requirements/runtime.txt /tmp/runtime.txt
# OpenVINO ships GPU/NPU plugins and ONNX/TF/PyTorch/Paddle/GGUF frontends; the appliance reads
# IR on the CPU only, so those libraries are dropped (about 80 MB). openvino-telemetry serves
# model conversion only and writes to $HOME at `import openvino`; without it OpenVINO uses its
# built-in stub, and the container writes nothing outside /workspace/outputs. The model
# converter (openvino/tools/ovc) is imported by `import openvino` only if present (it catches the
# ImportError) and is never used at run time: dropping it saves ~0.1 s per case. Bytecode is
# compiled once here (PYTHONDONTWRITEBYTECODE stops only the writing, not the reading), because
# every container run otherwise compiles numpy, OpenVINO and OpenCV's Python from source.
RUN pip install --no-compile -r /tmp/runtime.txt && rm /tmp/runtime.txt \
    && pip uninstall -y openvino-telemetry \
    && find /usr/local/lib/python3.11/site-packages/openvino/libs \( -name 'libopenvino_intel_[gn]pu_plugin.so' \
        -o \( -name 'libopenvino_*_frontend.so*' ! -name 'libopenvino_ir_frontend.so*' \) \) -delete \
    && rm -rf /usr/local/lib/python3.11/site-packages/openvino/tools/ovc \
    && { python -m compileall -q -j 0 /usr/local/lib/python3.11 \
        || echo "compileall: some files did not compile; they run from source" >&2; } \
    && useradd --create-home --uid 1000 appliance

WORKDIR /workspace
COPY app/ ./app/
COPY models/ ./models/
COPY predict.sh ./
RUN python -m compileall -q app

# Compile every model once into the cache, so the first case loads blobs instead of compiling.
RUN mkdir -p "$SEG_CACHE_DIR" && python -m app --warmup && chown -R appliance "$SEG_CACHE_DIR"

USER 1000
CMD ["sh", "predict.sh"]
