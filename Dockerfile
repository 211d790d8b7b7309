# syntax=docker/dockerfile:1
# Multi-stage: locked dependencies in a cached layer of their own, the code as the last layer, a slim non-root runtime.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM python:3.11-slim AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=uv /uv /uvx /usr/local/bin/
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=/app/uv.lock \
    --mount=type=bind,source=pyproject.toml,target=/app/pyproject.toml \
    uv sync --locked --no-dev --no-install-project
COPY *.py interviewer_prompt.md interviewer_session.json interviewer_wrap_up.json /code/
RUN python -m compileall -q -d /app /code

FROM python:3.11-slim
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --home-dir /app app \
 && mkdir -p /data/transcripts && chown app:app /data/transcripts
# NO_COLOR: Vision-Agents colours its log lines even when they go to a file or a log collector.
# ORT_DISABLE_TELEMETRY: onnxruntime (a Vision-Agents dependency) would send a telemetry DNS lookup per session.
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 NO_COLOR=1 ORT_DISABLE_TELEMETRY=1 TRANSCRIPT_DIR=/data/transcripts PORT=8000
WORKDIR /app
VOLUME ["/data/transcripts"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/health\", timeout=2)"]
STOPSIGNAL SIGTERM
USER 10001:10001
CMD ["python", "main.py"]
# Root-owned, so the service cannot modify itself; the environment's layer stays cached when only the code changes.
COPY --from=build /app/.venv /app/.venv
COPY --from=build /code/ /app/
