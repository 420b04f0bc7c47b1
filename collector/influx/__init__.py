"""Writing to InfluxDB: the durable outbox and the v1/v2 writers behind it."""
