# One image for every service; the command picks the service (see docker-compose.yml).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY sandbox ./sandbox
COPY ordersctl ./ordersctl
COPY devstack ./devstack
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 app
COPY --from=build /install /usr/local
USER app
WORKDIR /home/app
ENV PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json \
    OPS_HOST=0.0.0.0
CMD ["python", "-m", "services.processor"]
