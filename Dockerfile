# The collector for an edge gateway: slim base, non-root user, config mounted at
# /etc/collector/config.yaml, state (outbox, certificates) in the /var/lib/collector volume.
#   docker build -t machine-collector .
#   docker run -v $PWD/config.yaml:/etc/collector/config.yaml -v collector-data:/var/lib/collector \
#              -e INFLUX_TOKEN=... machine-collector
#   docker run -p 1883:1883 ... machine-collector simulate --mqtt broker:1883   (the demo plant)
# deploy/compose.yaml runs the whole stack with it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --uid 10001 --home-dir /var/lib/collector --create-home collector

WORKDIR /opt/collector
COPY pyproject.toml README.md ./
COPY collector ./collector
COPY adapters ./adapters
COPY dashboards ./dashboards
COPY config ./config
RUN pip install . && mkdir -p /etc/collector && cp config/example.yaml /etc/collector/config.yaml

USER collector
WORKDIR /var/lib/collector
VOLUME ["/var/lib/collector"]
# Everything the collector keeps (outbox, tracker state, certificates) lives under data_dir: the volume.
ENV COLLECTOR_DATA_DIR=/var/lib/collector \
    COLLECTOR_HTTP__HOST=0.0.0.0
# 9180: the status HTTP server; 4840: OPC UA, when the image runs `collector simulate --opcua`.
EXPOSE 9180 4840
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9180/healthz', timeout=2)"
ENTRYPOINT ["collector"]
CMD ["run", "-c", "/etc/collector/config.yaml"]
