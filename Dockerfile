# One image for every service; the command picks the service (see docker-compose.yml).
FROM python:3.11-slim AS build
WORKDIR /src
# The services' packages from the lock, each file's hash checked, before the code: a code
# change keeps this layer.
COPY requirements.lock ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY sandbox ./sandbox
COPY ordersctl ./ordersctl
COPY devstack ./devstack
# The project itself, resolving nothing more (its build backend came from the lock).
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 app
COPY --from=build /opt/venv /opt/venv
USER app
WORKDIR /home/app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json \
    OPS_HOST=0.0.0.0
CMD ["python", "-m", "services.processor"]
