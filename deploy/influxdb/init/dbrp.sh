#!/bin/bash
# Run once by the influxdb:2.7 image after its first-start setup (it sets
# DOCKER_INFLUXDB_INIT_BUCKET_ID and configures the `influx` CLI with the admin token).
# Grafana's boards speak InfluxQL, which addresses a database and retention policy: map the
# database name the boards use onto the bucket the collector writes.
set -euo pipefail
influx v1 dbrp create \
  --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --db "${INFLUXQL_DB:-${DOCKER_INFLUXDB_INIT_BUCKET}}" \
  --rp autogen \
  --default
