# The bot's image: `docker compose up -d --build` (README, "Docker").
#
# Stage 1 builds a virtualenv from requirements.txt (every dependency ships a wheel for
# CPython 3.11, so no compiler and no apt); stage 2 is the slim runtime: the venv, the app,
# a non-root user, /data and /outputs as volumes, and the web app (gallery, /metrics,
# /healthz, /readyz) on port 8080. Nothing in the running image can install packages: pip,
# setuptools and wheel are removed from the venv and from the base image's interpreter.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

# Only the requirements first: this layer is rebuilt when they change, not when the code does.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt \
    && python -m pip uninstall --yes --quiet pip setuptools wheel


FROM python:3.11-slim-bookworm AS runtime

# The bot's version (version.py; tests/test_version.py keeps the two equal): the release workflow
# passes the tag's. `docker inspect` shows it; `python bot.py --version` and /metrics say the same.
ARG VERSION=1.0.0
LABEL org.opencontainers.image.title="ComfyUI Discord bot" \
      org.opencontainers.image.version="${VERSION}"

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/data \
    OUTPUTS_DIR=/outputs \
    WEB_HOST=0.0.0.0 \
    WEB_PORT=8080 \
    LOG_JSON=true

RUN /usr/local/bin/python -m pip uninstall --yes --quiet pip setuptools wheel \
    && rm -rf /usr/local/lib/python3.11/ensurepip \
    && groupadd --system --gid 10001 bot \
    && useradd --system --uid 10001 --gid bot --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin bot \
    && mkdir -p /data /outputs \
    && chown bot:bot /data /outputs

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# The app: the top-level modules, every area's package (the web app with its templates and CSS),
# the workflow sets and the built-in styles. Owned by root and read-only to the bot; it writes only
# to /data and /outputs.
COPY *.py styles.toml ./
COPY backends/ ./backends/
COPY cluster/ ./cluster/
COPY cogs/ ./cogs/
COPY comfy/ ./comfy/
COPY jobs/ ./jobs/
COPY results/ ./results/
COPY store/ ./store/
COPY ui/ ./ui/
COPY web/ ./web/
COPY workflows/ ./workflows/
RUN python -m compileall -q /app

USER 10001:10001

VOLUME ["/data", "/outputs"]
EXPOSE 8080

# No curl in slim: Python asks the bot's own /healthz (200 while its event loop runs).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('WEB_PORT', '8080') + '/healthz', timeout=4)"]

CMD ["python", "bot.py"]
