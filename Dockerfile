# tier-router container image.
#   docker build -t tier-router .
#   docker run --rm -p 127.0.0.1:8000:8000 -e OPENAI_API_KEY tier-router
# Both stages use the same base image, so the venv's interpreter symlink
# (/opt/venv/bin/python -> /usr/local/bin/python3.11) is valid in the final stage.

# ---- builder: the locked dependencies and the package, into /opt/venv ---------------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never

# Same uv as the Makefile (UV_VERSION).
RUN pip install --no-cache-dir uv==0.13.9 \
    && uv venv --python /usr/local/bin/python3.11 /opt/venv

WORKDIR /src

# Dependencies first, from the lock only: this layer is reused until requirements.lock changes.
COPY requirements.lock ./
RUN uv pip install --python /opt/venv/bin/python -r requirements.lock

COPY pyproject.toml README.md ./
COPY router ./router
RUN uv pip install --python /opt/venv/bin/python --no-deps . \
    && /opt/venv/bin/router --help > /dev/null

# ---- runtime -------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="tier-router" \
      org.opencontainers.image.description="OpenAI-compatible proxy that routes each request to the cheapest model meeting its quality tier"

# ROUTER_HOST: listen on every interface inside the container (the CLI's default is loopback).
# LITELLM_LOCAL_MODEL_COST_MAP: read litellm's bundled price map, never fetch it.
# TIKTOKEN_CACHE_DIR: the o200k/cl100k files that ship inside litellm's wheel, so token
#   counting works without network access (and without writing to a read-only root).
# DL3064 is a false positive: it flags the name TIKTOKEN_CACHE_DIR, which holds no secret.
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ROUTER_HOST=0.0.0.0 \
    ROUTER_PORT=8000 \
    ROUTER_POLICY=/app/policies/default.yaml \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    LITELLM_TELEMETRY=False \
    TIKTOKEN_CACHE_DIR=/opt/venv/lib/python3.11/site-packages/litellm/litellm_core_utils/tokenizers

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 router \
    && useradd --system --uid 10001 --gid router --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin router

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY policies/ /app/policies/

USER 10001:10001
EXPOSE 8000

# No curl in the slim image: the venv's Python asks /livez (exit 1 on any error or non-2xx).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('ROUTER_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["router"]
CMD ["serve"]
