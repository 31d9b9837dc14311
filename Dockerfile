# syntax=docker/dockerfile:1
# milvus-probe image: a venv in /opt/milvus-probe on a slim Python base, run as uid 10001.
# Build:  make image          (podman build -t milvus-probe:0.1.0 .; docker build works too)
# Run:    podman run --rm -p 9091:9091 milvus-probe:0.1.0 serve --uri http://milvus:19530

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/milvus-probe
# Dependencies first, so a source change does not reinstall them. Then what is installed but
# never imported goes (README, "Container image"): kubernetes' asyncio client (kubernetes/aio)
# with the packages only it imports, the API classes the probe never calls (kubernetes.client
# loads each lazily; tests/test_image.py keeps this list equal to what probe/ uses), and tests.
COPY requirements/runtime.txt /tmp/runtime.txt
RUN /opt/milvus-probe/bin/pip install --no-cache-dir --no-compile -r /tmp/runtime.txt \
    && /opt/milvus-probe/bin/pip uninstall --yes --quiet \
       aiohttp aiohttp-retry aiohappyeyeballs aiosignal attrs frozenlist multidict propcache yarl \
    && cd /opt/milvus-probe/lib/python*/site-packages \
    && rm -rf kubernetes/aio \
    && find kubernetes/client/api -name '*_api.py' ! -name core_v1_api.py \
       ! -name discovery_v1_api.py ! -name events_v1_api.py -delete \
    && find kubernetes -name '*_test.py' -o -name 'test_*.py' | xargs rm -f
COPY pyproject.toml README.md /src/
COPY probe /src/probe
# pip and setuptools only install: the final stage carries neither. Bytecode is compiled here,
# once, because the root filesystem is read-only at run time.
RUN /opt/milvus-probe/bin/pip install --no-cache-dir --no-compile --no-deps /src \
    && /opt/milvus-probe/bin/python -m pip uninstall --yes --quiet pip setuptools \
    && /opt/milvus-probe/bin/python -m compileall -q -j 0 /opt/milvus-probe/lib

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
