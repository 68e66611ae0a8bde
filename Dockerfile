# mig with its shim, for the docker-compose demo. Kafka runs in its own container.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc make libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir /src
WORKDIR /app
COPY examples/counter /app
ENTRYPOINT ["mig"]
