"""The core every layer may import: the event and output model, durations and time units,
bad-input counting, the backoff, the exception tree, the line protocol schema and the figures.
It imports nothing of the application (config loading, engine, CLI), adapters or dashboards:
`lint-imports` (import-linter, contracts in pyproject.toml) fails CI otherwise."""
