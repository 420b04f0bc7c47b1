"""Grafana dashboards as code: typed builders, InfluxQL queries, the generated JSON, provisioning
files and a push over Grafana's HTTP API. See dashboards/README.md."""
