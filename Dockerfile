# agent-tail-sampler: a slim image running `agent-sampler run` on the embedded default config.
# tests/e2e/test_dockerfile_command.py runs this file's ENTRYPOINT + CMD outside a container.

# Build stage: the wheel, with the native core (native/, Rust) compiled by maturin.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 CARGO_HOME=/opt/cargo RUSTUP_HOME=/opt/rustup PATH=/opt/cargo/bin:$PATH
RUN apt-get update \
 && apt-get install --no-install-recommends -y build-essential ca-certificates curl \
 && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY native ./native
COPY sampler ./sampler
COPY config ./config
RUN pip wheel --disable-pip-version-check --wheel-dir /wheels .

# Runtime stage: Python and the wheels, no compiler.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY --from=build /wheels /wheels
RUN pip install --disable-pip-version-check /wheels/*.whl && rm -rf /wheels

RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/agent-sampler sampler
USER sampler
# The default exporter writes file://agent-sampler-kept.jsonl here; mount a volume or point
# --downstream at your backend.
WORKDIR /var/lib/agent-sampler

# 4317 OTLP/gRPC, 4318 OTLP/HTTP, 9464 /metrics /healthz /readyz
EXPOSE 4317 4318 9464

# Each connection takes a file descriptor: run with a limit of at least 2,144 open files
# (docs/operations.md, "File descriptors and connections"). An image cannot set it:
#   docker run --ulimit nofile=65536:65536 ...      (Compose: ulimits: {nofile: 65536})
# The sampler raises its soft limit to the hard one at start, and fits its connection caps
# to what it gets (a warning says so).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]

# SIGTERM stops intake, decides everything buffered and flushes: give it ~30 s to stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["agent-sampler"]
CMD ["run", "--metrics-listen", "0.0.0.0:9464"]
