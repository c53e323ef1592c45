# Sluice: slim image, non-root, runs migrations then uvicorn.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY app ./app
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TZ=UTC \
    VAR_DIR=/var/lib/sluice PORT=8000
RUN useradd --system --create-home --uid 10001 sluice && mkdir -p /var/lib/sluice && chown sluice /var/lib/sluice
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/sluice
COPY alembic.ini ./
COPY alembic ./alembic
COPY app ./app
USER sluice
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health/live', timeout=2)"
CMD ["sh", "-c", "python -m app migrate && exec uvicorn app.main:create_app --factory --host 0.0.0.0 --port ${PORT} --no-access-log --proxy-headers"]
