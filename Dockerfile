# syntax=docker/dockerfile:1
# milvus-probe image: a venv in /opt/milvus-probe on a slim Python base, run as uid 10001.
# Build:  docker build -t milvus-probe:0.1.0 .
# Run:    docker run --rm -p 9091:9091 milvus-probe:0.1.0 serve --uri http://milvus:19530

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/milvus-probe
# Dependencies first, so a source change does not reinstall them.
COPY requirements/runtime.txt /tmp/runtime.txt
RUN /opt/milvus-probe/bin/pip install --no-cache-dir -r /tmp/runtime.txt
COPY pyproject.toml README.md /src/
COPY probe /src/probe
RUN /opt/milvus-probe/bin/pip install --no-cache-dir --no-deps /src \
    && /opt/milvus-probe/bin/python -m compileall -q /opt/milvus-probe/lib

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="milvus-probe" \
      org.opencontainers.image.description="Fresh-connection probing of Milvus for Kubernetes and Prometheus" \
      org.opencontainers.image.source="https://github.com/milvus-probe/milvus-probe" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/milvus-probe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/milvus-probe /opt/milvus-probe
# Writes nothing but /tmp: runs with a read-only root filesystem.
USER 10001:10001
EXPOSE 9091
ENTRYPOINT ["milvus-probe"]
CMD ["serve"]
